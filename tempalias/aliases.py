"""The alias use cases: create, show, revoke and purge, with the abuse policy's verdict.

Every door (the REST API, the legacy API, the CLI) asks ``AliasService`` and only translates:
its wire format in, the results and exceptions below out, as its own answers. So the rules of an
alias (what a valid order is, what the limits are, that the policy is asked before anything is
stored, what address an alias has) are written once, here, and know nothing of HTTP or SMTP.

Exceptions: ``InvalidOrder`` (which field, and why), ``CreationRefused`` (the policy's verdict),
``AliasNotFound`` (unknown id, wrong token: the two are told apart by nobody), and
``StoreUnavailable`` (Redis cannot be reached now). At a custom domain also ``DomainNotFound``
(the domain token is not its owner's), ``AliasTaken`` (the chosen local part is, or was, an alias
there) and ``DomainSuspended`` (its DNS records are gone).

An alias has an address at one domain: one of the operator's (``TEMPALIAS_DOMAINS``, the first
by default) with a random id, or a custom domain its owner proved in DNS (``domains.py``), with a
random or chosen local part, in that domain's own namespace (its id is ``local@DOMAIN``).
An order may ask for ``replies``: its owner may then reply through the alias, from reverse
addresses (``tempalias/reverse.py``) whose local parts start with ``r=``, so no chosen local part
may.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


from tempalias.abuse import AbusePolicy, IPAddress, Refusal
from tempalias.addresses import (InvalidAddress, domain_to_ascii, domain_to_unicode,
                                 parse_address, parse_domain_name)
from tempalias.config import AliasesSettings
from tempalias.reverse import PREFIX as REVERSE_PREFIX, is_reverse
from tempalias.store import (MS_PER_DAY, RESERVED_IDS, Alias, AliasNotFound, AliasStore,
                             AliasTaken, DomainNotFound, DomainStore, DomainSuspended,
                             StoreUnavailable, hash_token, keys)

__all__ = ["AliasRules", "AliasService", "AliasView", "Created", "CreationRefused",
           "InvalidOrder", "Order", "AliasNotFound", "AliasTaken", "DomainNotFound",
           "DomainSuspended", "StoreUnavailable", "iso_utc"]

log = logging.getLogger(__name__)

MIN_DAYS = 1
MIN_USES = 1
MAX_LOCAL_PART = 64
# A chosen local part is a lower-case dot-atom (RFC 5321 4.1.2) in ASCII.
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
# Role mailboxes nobody may choose at a custom domain: those of RFC 2142 that reach the people
# who run a network or answer for its abuse, and those a certificate authority may mail to prove
# control of the domain (CA/Browser Forum Baseline Requirements 3.2.2.4.4). Business roles (info,
# sales, support) and service names (news, www) are the owner's to hand out.
ROLE_NAMES = RESERVED_IDS | frozenset({"admin", "administrator", "root", "noc", "security"})


class InvalidOrder(ValueError):
    """An order the service will not take: ``field`` ("target", "days", "uses", "replies",
    "domain" or "local_part") and ``reason``,
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
            "replies": alias.replies,
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


def domain_field(value: Any) -> str:
    """The A-label, lower case, of the domain a request names in its field "domain" (a U-label
    or an A-label, fully qualified); InvalidOrder on "domain" when it is no domain name."""
    if not isinstance(value, str):
        raise InvalidOrder("domain", "must be a domain name as a string")
    try:
        name = parse_domain_name(value.strip())
    except InvalidAddress as exc:
        raise InvalidOrder("domain", f"is not a domain name: {exc}") from None
    if "xn--" in name and domain_to_unicode(name) == name:  # an A-label that decodes to nothing
        raise InvalidOrder("domain", f"is not a domain name: {name!r} is not a valid "
                                     "internationalised domain name")
    return name


def _flag(field: str, value: Any) -> bool:
    """A yes or no: JSON's ``true`` or ``false`` only, never a number or a string."""
    if not isinstance(value, bool):
        raise InvalidOrder(field, "must be true or false")
    return value


@dataclass(frozen=True)
class Order:
    """A valid order: the target in its canonical spelling, the days, the uses (None: unlimited),
    and whether its owner may reply through it."""

    target: str
    days: int
    uses: int | None
    replies: bool = False


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

    def order(self, target: Any, days: int | None = None, uses: int | None = None,
              replies: Any = False) -> Order:
        """The order, or InvalidOrder. ``days`` None: the default; ``uses`` None: unlimited;
        ``replies``: True or False. Needs no store: the CLI checks its arguments before it
        starts one."""
        target = self._target(target)
        days = self.default_days if days is None else _whole_number(
            "days", days, MIN_DAYS, self.max_days)
        if uses is not None:
            uses = _whole_number("uses", uses, MIN_USES, self.max_uses)
        return Order(target, days, uses, _flag("replies", replies))

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

    def domain(self, value: Any) -> str:
        """The A-label of the domain an order names; None: the first of ours. Whether a domain
        that is not one of ours is offered (an active custom domain) is for the store to say."""
        return self.primary_domain if value is None else domain_field(value)

    def is_ours(self, domain: str) -> bool:
        return domain in self.domains

    @staticmethod
    def local_part(value: Any) -> str:
        """A chosen local part, lower-cased; InvalidOrder unless it is a dot-atom of at most 64
        characters, no role name, and not in the reply addresses' namespace (``r=...``)."""
        if not isinstance(value, str):
            raise InvalidOrder("local_part", "must be a string")
        local = value.lower()
        if not LOCAL_PART.fullmatch(local):
            raise InvalidOrder("local_part", "must be letters, digits and the characters "
                                             "!#$%&'*+-/=?^_`{|}~, with single dots between them")
        if len(local) > MAX_LOCAL_PART:
            raise InvalidOrder("local_part", f"may be at most {MAX_LOCAL_PART} characters")
        if local in ROLE_NAMES:
            raise InvalidOrder("local_part", f"may not be {local}: role mailboxes such as "
                                             "postmaster and abuse are not handed out")
        if is_reverse(local):
            raise InvalidOrder("local_part", f"may not start with {REVERSE_PREFIX}: such names "
                                             "are reserved for reply addresses")
        return local

    def address(self, alias: Alias) -> str:
        """The alias's address, its domain in U-label form: at its custom domain, at the domain
        it was made at, or (made before several domains) at the first of ours."""
        local, custom = keys.split_id(alias.id)
        return f"{local}@{domain_to_unicode(custom or alias.domain or self.primary_domain)}"


class AliasService:
    """The use cases over one store, one abuse policy and the rules of an order.

    ``policy`` None: no abuse checks, for the operator's command line, whose user already owns
    the store.
    """

    def __init__(self, store: AliasStore, policy: AbusePolicy | None, rules: AliasRules,
                 domains: DomainStore | None = None) -> None:
        """``domains``: where custom domains are read (default: on the alias store's Redis)."""
        self.store = store
        self.policy = policy
        self.rules = rules
        self.domains = domains or DomainStore(store.redis, runner=store.runner)

    @classmethod
    def from_settings(cls, settings: AliasesSettings, store: AliasStore,
                      policy: AbusePolicy | None,
                      domains: DomainStore | None = None) -> "AliasService":
        return cls(store, policy, AliasRules.from_settings(settings), domains)

    def _view(self, alias: Alias) -> AliasView:
        return AliasView(alias, self.rules.address(alias))

    # --- for a client of a door

    def create(self, target: Any, days: int | None = None, uses: int | None = None,
               client_ip: str | IPAddress | None = None, domain: Any = None,
               local_part: Any = None, domain_token: str | None = None,
               replies: Any = False) -> Created:
        """Validate (``AliasRules.order``), ask the policy on behalf of ``client_ip``, store.
        Nothing is stored, and no limit is spent, for an invalid order; nothing is stored when
        the policy refuses.

        ``domain``: one of ours (default the first), or a custom domain, which takes
        ``domain_token``, its owner's (DomainNotFound when it is missing or wrong), and its own
        daily cap, and where ``local_part`` may be chosen (AliasTaken when it is, or was, an
        alias there). A domain that is neither is InvalidOrder on "domain". ``replies``: its
        owner may reply through it (True or False, else InvalidOrder on "replies")."""
        order = self.rules.order(target, days, uses, replies)
        where = self.rules.domain(domain)
        custom = not self.rules.is_ours(where)
        if local_part is not None and not custom:
            raise InvalidOrder("local_part", "can be chosen only at your own custom domain")
        chosen = None if local_part is None else self.rules.local_part(local_part)
        if custom:
            self._check_owner(where, domain_token)
        if self.policy is not None:
            refusal = self.policy.on_alias_creation(client_ip, order.target)
            if refusal is None and custom:
                refusal = self.policy.on_custom_alias(client_ip, where)
            if refusal:
                raise CreationRefused(refusal)
        created = self.store.create(order.target, order.days * MS_PER_DAY, order.uses,
                                    domain=where, custom=custom, local_part=chosen,
                                    replies=order.replies)
        log.info("alias %s created (days=%d uses=%s replies=%s)", created.alias.id, order.days,
                 order.uses, "on" if order.replies else "off")
        return Created(self._view(created.alias), created.token, order.days)

    def _check_owner(self, domain: str, token: str | None) -> None:
        """The custom ``domain`` is active or suspended and ``token`` is its owner's:
        DomainNotFound when the token is missing or wrong, as for an unknown domain; a domain
        that is not registered at all is not offered (InvalidOrder)."""
        if isinstance(token, str) and token:
            try:
                self.domains.get(domain, hash_token(token))
                return
            except DomainNotFound:
                pass
        try:
            self.domains.get(domain, None)
        except DomainNotFound:
            raise InvalidOrder("domain", f"is not offered here: {domain_to_unicode(domain)} is "
                                         "neither a domain of this service nor a verified "
                                         "custom domain") from None
        raise DomainNotFound(domain)

    def show(self, alias_id: str, token: str) -> AliasView:
        """The alias if ``token`` is its management token; AliasNotFound otherwise."""
        return self._view(self.store.get(_stored_id(alias_id), self._required(alias_id, token)))

    def revoke(self, alias_id: str, token: str) -> None:
        """Erase the alias now, if ``token`` is its management token; AliasNotFound otherwise."""
        self.store.revoke(_stored_id(alias_id), self._required(alias_id, token))
        log.info("alias %s revoked by its owner", alias_id.lower())

    @staticmethod
    def _required(alias_id: str, token: str) -> str:
        """A missing token finds nothing: it must never reach the store as the operator's None."""
        if not isinstance(token, str) or not token:
            raise AliasNotFound(alias_id)
        return token

    # --- for the operator, who needs no token

    def show_as_operator(self, alias_id: str) -> AliasView:
        return self._view(self.store.lookup(_stored_id(alias_id)))

    def revoke_as_operator(self, alias_id: str) -> None:
        self.store.revoke(_stored_id(alias_id), token=None)
        log.info("alias %s revoked by the operator", alias_id.lower())

    # --- upkeep

    def purge(self) -> int:
        """Erase every alias whose time is up now; returns how many."""
        return self.store.purge()

    def ping(self) -> None:
        """StoreUnavailable when aliases cannot be served now (the health check)."""
        self.store.ping()


def _stored_id(alias_id: str) -> str:
    """An id as the store keeps it: ``local@DOMAIN`` with the domain's A-label, so the address
    as shown (``shop@bücher.example``) finds it too. Anything else passes on unchanged, for the
    store to find nothing."""
    local, at, domain = alias_id.rpartition("@") if isinstance(alias_id, str) else ("", "", "")
    if not at:
        return alias_id
    try:
        return f"{local}@{domain_to_ascii(domain)}"
    except InvalidAddress:
        return alias_id
