"""The alias use cases: create, show, revoke and purge, with the abuse policy's verdict.

Every door (the REST API, the legacy API, the CLI) asks ``AliasService`` and only translates:
its wire format in, the results and exceptions below out, as its own answers. So the rules of an
alias (what a valid order is, what the limits are, that the policy is asked before anything is
stored, what address an alias has) are written once, here, and know nothing of HTTP or SMTP.

Exceptions: ``InvalidOrder`` (which field, and why), ``CreationRefused`` (the policy's verdict),
``AliasNotFound`` (unknown id, wrong token: the two are told apart by nobody), and
``StoreUnavailable`` (Redis cannot be reached now).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tempalias.abuse import AbusePolicy, IPAddress, Refusal
from tempalias.addresses import InvalidAddress, parse_address
from tempalias.config import AliasesSettings
from tempalias.store import MS_PER_DAY, Alias, AliasNotFound, AliasStore, StoreUnavailable

__all__ = ["AliasRules", "AliasService", "AliasView", "Created", "CreationRefused",
           "InvalidOrder", "Order", "AliasNotFound", "StoreUnavailable", "iso_utc"]

log = logging.getLogger(__name__)

MIN_DAYS = 1
MIN_USES = 1


class InvalidOrder(ValueError):
    """An order the service will not take: ``field`` ("target", "days" or "uses") and ``reason``,
    a predicate after the field's name, so that a door can name the field as its clients do."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        self.description = f"{field} {reason}"
        super().__init__(self.description)


class CreationRefused(Exception):
    """The abuse policy said no; ``refusal`` is its verdict (kind, limit, client, retry_after)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.kind} ({refusal.limit})")
        self.refusal = refusal


def iso_utc(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AliasView:
    """An alias as its owner or the operator sees it: the stored record and its address."""

    alias: Alias
    address: str

    @property
    def active(self) -> bool:
        return self.alias.uses_left is None or self.alias.uses_left > 0

    def summary(self) -> dict[str, Any]:
        """The alias as JSON, the same in the REST API and the CLI's ``show``."""
        alias = self.alias
        return {
            "id": alias.id,
            "address": self.address,
            "target": alias.target,
            "created_at": iso_utc(alias.created_ms),
            "expires_at": iso_utc(alias.expires_ms),
            "uses_left": alias.uses_left,
        }


@dataclass(frozen=True)
class Created:
    """A new alias, its management token (shown once, stored only hashed) and its days."""

    view: AliasView
    token: str
    days: int


def _whole_number(field: str, value: Any, low: int, high: int) -> int:
    """An ``int`` from ``low`` to ``high``. Wire formats are the doors' business: a door turns
    JSON's ``3.0`` or a query string's ``"3"`` into 3 first; anything else is refused here."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidOrder(field, f"must be a whole number from {low} to {high}")
    return value


@dataclass(frozen=True)
class Order:
    """A valid order: the target in its canonical spelling, the days, the uses (None: unlimited)."""

    target: str
    days: int
    uses: int | None


@dataclass(frozen=True)
class AliasRules:
    """What an order may ask for, from the aliases settings. ``domains``: ours, in order; the
    first names every alias, and a target at any of them (or below one) would loop back here."""

    domains: tuple[str, ...]
    max_days: int
    max_uses: int
    default_days: int

    @classmethod
    def from_settings(cls, settings: AliasesSettings) -> "AliasRules":
        return cls(settings.domains, settings.max_days, settings.max_uses, settings.default_days)

    @property
    def primary_domain(self) -> str:
        return self.domains[0]

    def order(self, target: Any, days: int | None = None, uses: int | None = None) -> Order:
        """The order, or InvalidOrder. ``days`` None: the default; ``uses`` None: unlimited.
        Needs no store: the CLI checks its arguments before it starts one."""
        target = self._target(target)
        days = self.default_days if days is None else _whole_number(
            "days", days, MIN_DAYS, self.max_days)
        if uses is not None:
            uses = _whole_number("uses", uses, MIN_USES, self.max_uses)
        return Order(target, days, uses)

    def _target(self, value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidOrder("target", "must be an email address as a string")
        try:
            address = parse_address(value.strip())
        except InvalidAddress as exc:
            raise InvalidOrder("target", f"is not a valid email address: {exc}") from None
        if any(address.domain == d or address.domain.endswith("." + d) for d in self.domains):
            raise InvalidOrder("target", f"may not be an address at {address.domain}: "
                                         "mail to it would loop back here")
        return str(address)

    def address(self, alias_id: str) -> str:
        return f"{alias_id}@{self.primary_domain}"


class AliasService:
    """The use cases over one store, one abuse policy and the rules of an order.

    ``policy`` None: no abuse checks, for the operator's command line, whose user already owns
    the store.
    """

    def __init__(self, store: AliasStore, policy: AbusePolicy | None, rules: AliasRules) -> None:
        self.store = store
        self.policy = policy
        self.rules = rules

    @classmethod
    def from_settings(cls, settings: AliasesSettings, store: AliasStore,
                      policy: AbusePolicy | None) -> "AliasService":
        return cls(store, policy, AliasRules.from_settings(settings))

    def _view(self, alias: Alias) -> AliasView:
        return AliasView(alias, self.rules.address(alias.id))

    # --- for a client of a door

    def create(self, target: Any, days: int | None = None, uses: int | None = None,
               client_ip: str | IPAddress | None = None) -> Created:
        """Validate (``AliasRules.order``), ask the policy on behalf of ``client_ip``, store.
        Nothing is stored, and no limit is spent, for an invalid order; nothing is stored when
        the policy refuses."""
        order = self.rules.order(target, days, uses)
        if self.policy is not None:
            refusal = self.policy.on_alias_creation(client_ip, order.target)
            if refusal:
                raise CreationRefused(refusal)
        created = self.store.create(order.target, order.days * MS_PER_DAY, order.uses)
        log.info("alias %s created (days=%d uses=%s)", created.alias.id, order.days, order.uses)
        return Created(self._view(created.alias), created.token, order.days)

    def show(self, alias_id: str, token: str) -> AliasView:
        """The alias if ``token`` is its management token; AliasNotFound otherwise."""
        return self._view(self.store.get(alias_id, self._required(alias_id, token)))

    def revoke(self, alias_id: str, token: str) -> None:
        """Erase the alias now, if ``token`` is its management token; AliasNotFound otherwise."""
        self.store.revoke(alias_id, self._required(alias_id, token))
        log.info("alias %s revoked by its owner", alias_id.lower())

    @staticmethod
    def _required(alias_id: str, token: str) -> str:
        """A missing token finds nothing: it must never reach the store as the operator's None."""
        if not isinstance(token, str) or not token:
            raise AliasNotFound(alias_id)
        return token

    # --- for the operator, who needs no token

    def show_as_operator(self, alias_id: str) -> AliasView:
        return self._view(self.store.lookup(alias_id))

    def revoke_as_operator(self, alias_id: str) -> None:
        self.store.revoke(alias_id, token=None)
        log.info("alias %s revoked by the operator", alias_id.lower())

    # --- upkeep

    def purge(self) -> int:
        """Erase every alias whose time is up now; returns how many."""
        return self.store.purge()

    def ping(self) -> None:
        """StoreUnavailable when aliases cannot be served now (the health check)."""
        self.store.ping()
