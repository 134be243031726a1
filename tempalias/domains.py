"""The custom-domain use cases: register, verify, show, remove, and the checks on a schedule.

Anyone may register a domain (``register``): the answer is a domain token, shown once and stored
only as its hash, and the DNS records that prove the registrant controls the domain's zone
(``domaincheck.expected_records``: an MX at our mail host, and a TXT whose value is derived from
the domain, the registration's token hash and a secret of the service, so it is different for each
registration and reveals nothing of the token). ``verify`` looks the records up; the first
registration whose records are found makes the domain active, and every other registration of it
is erased (``DomainStore.activate``). An active domain is checked again on a schedule
(``recheck_due``, run by the janitor): records gone suspend it, records back restore it, and a
domain suspended for the whole grace period is erased with every alias it had.

Like ``aliases.py`` this knows nothing of HTTP or exit codes: the doors translate its results and
exceptions, ``InvalidOrder`` (the field "domain", and why), ``CreationRefused`` (the policy's
verdict), ``DomainNotFound`` (unknown domain, or the token is not the owner's: told apart by
nobody), ``DomainTaken`` (already active or suspended) and ``StoreUnavailable``. Domains are
stored and checked as A-labels and shown as U-labels.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from tempalias.abuse import DOMAIN_LIMITS, AbusePolicy, IPAddress
from tempalias.addresses import InvalidAddress, domain_to_unicode, parse_domain_name
from tempalias.aliases import CreationRefused, InvalidOrder, domain_field, iso_utc
from tempalias.config import DnsSettings, DomainsSettings
from tempalias.domaincheck import (MAX_DOMAIN_LENGTH, DomainChecker, Record,
                                   expected_records, verification_value)
from tempalias.resolver import make_resolver
from tempalias.store import (CheckOutcome, Domain, DomainNotFound, DomainStore, DomainTaken,
                             hash_token)
from tempalias.store.domains import ACTIVE, SUSPENDED

__all__ = ["DomainRules", "DomainService", "DomainView", "Registration", "Verification",
           "DomainNotFound", "DomainTaken", "PENDING", "ACTIVE", "SUSPENDED",
           "verification_secret"]

log = logging.getLogger(__name__)

PENDING = "pending"
SECRET_LABEL = b"tempalias custom-domain verification v1"
RECHECKS_PER_ROUND = 100  # domains one round of the janitor checks, at most
CHECKS_AT_ONCE = 8  # of those, how many at the same time (each waits on DNS)
TRANSIENT_RETRY_MS = 15 * 60 * 1000  # DNS did not answer a scheduled check: try again then
CLAIM_MS = 5 * 60 * 1000  # a janitor that died while it checked a domain: another tries then


def verification_secret(srs_secret: str) -> bytes:
    """The key of the TXT values, derived from the service's SRS secret under a label of its
    own (so neither use can stand in for the other): one secret to keep, and every process of
    one service, and its command line, derive the same values."""
    return hmac.new(srs_secret.encode("utf-8"), SECRET_LABEL, hashlib.sha256).digest()


def _record_json(record: Record) -> dict[str, str]:
    return {"type": record.type, "name": record.name, "value": record.value}


def _aliases(count: int) -> str:
    return f"{count} live alias{'' if count == 1 else 'es'}"


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_utc(ms)


@dataclass(frozen=True)
class Registration:
    """A new registration: the token (shown this once) and the records to publish."""

    domain: str  # the A-label
    token: str
    records: tuple[Record, ...]
    expires_ms: int  # erased then unless verified

    def summary(self) -> dict[str, Any]:
        return {"domain": domain_to_unicode(self.domain), "status": PENDING,
                "token": self.token, "records": [_record_json(r) for r in self.records],
                "expires_at": iso_utc(self.expires_ms)}


@dataclass(frozen=True)
class Verification:
    """What a look-up of a domain's records found: its status now, and each record that is
    missing or wrong in plain words; ``transient`` when DNS did not answer (try again later)."""

    domain: str
    status: str  # PENDING, ACTIVE or SUSPENDED
    problems: tuple[str, ...] = ()
    transient: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not self.transient


@dataclass(frozen=True)
class DomainView:
    """A domain as its owner or the operator sees it."""

    domain: str  # the A-label
    status: str  # PENDING, ACTIVE or SUSPENDED
    records: tuple[Record, ...]  # what it publishes (empty for the operator of a pending one)
    aliases: int = 0  # of its aliases, how many have not ended
    created_ms: int | None = None
    verified_ms: int | None = None
    checked_ms: int | None = None  # the last scheduled check
    suspended_ms: int | None = None
    erased_ms: int | None = None  # when a suspended domain is erased unless its records return
    expires_ms: int | None = None  # when a pending registration lapses
    registrations: int | None = None  # pending registrations (the operator's view)

    def summary(self) -> dict[str, Any]:
        body = {
            "domain": domain_to_unicode(self.domain),
            "status": self.status,
            "aliases": self.aliases,
            "created_at": _iso(self.created_ms),
            "verified_at": _iso(self.verified_ms),
            "last_check": _iso(self.checked_ms),
            "suspended_at": _iso(self.suspended_ms),
            "erased_at": _iso(self.erased_ms),
            "expires_at": _iso(self.expires_ms),
            "records": [_record_json(r) for r in self.records],
        }
        if self.registrations is not None:
            body["registrations"] = self.registrations
        return body


@dataclass(frozen=True)
class DomainRules:
    """Which domains may be registered, and what they must publish. ``own_domains``: the
    operator's (never registrable, nor any name under them); ``mx_host``: what the MX names."""

    own_domains: tuple[str, ...]
    mx_host: str
    grace_ms: int

    def registrable(self, value: Any) -> str:
        """The A-label of a domain someone may register; InvalidOrder on "domain" otherwise."""
        name = domain_field(value)
        if len(name) > MAX_DOMAIN_LENGTH:
            raise InvalidOrder("domain", f"is too long: at most {MAX_DOMAIN_LENGTH} characters "
                                         "(in its ASCII form), so that _tempalias.<domain> is "
                                         "still a DNS name")
        for own in self.own_domains:
            if name == own or name.endswith("." + own):
                raise InvalidOrder("domain", f"may not be {domain_to_unicode(name)}: it is, or "
                                             "is under, a domain of this service")
        return name

    @staticmethod
    def known(value: Any) -> str:
        """The A-label of a domain named in a request about it; DomainNotFound when it is no
        domain name at all (nothing by that name can be registered)."""
        try:
            return parse_domain_name(value.strip())
        except (InvalidAddress, AttributeError):
            raise DomainNotFound(value) from None


class DomainService:
    """The use cases over one domain store, one DNS checker and the abuse policy.

    ``policy`` None: no abuse checks (the operator's command line). ``secret``: the key of the
    TXT values (``verification_secret``). ``clock``: seconds, as ``time.time``."""

    def __init__(self, store: DomainStore, checker: DomainChecker, policy: AbusePolicy | None,
                 rules: DomainRules, secret: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.checker = checker
        self.policy = policy
        self.rules = rules
        self.secret = secret
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: DomainsSettings, dns: DnsSettings, store: DomainStore,
                      policy: AbusePolicy | None, own_domains: tuple[str, ...],
                      default_mx_host: str, secret: bytes) -> "DomainService":
        """``default_mx_host``: the MX's host when the domains section names none (the SMTP
        banner's host name); ``store``: made with ``settings.domain_recheck``."""
        checker = DomainChecker(make_resolver(dns.dns_servers, dns.dns_timeout), dns.dns_timeout)
        rules = DomainRules(own_domains, settings.mx_hostname or default_mx_host,
                            int(settings.domain_grace * 1000))
        return cls(store, checker, policy, rules, secret)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _records(self, domain: str, token_hash: str) -> tuple[Record, ...]:
        value = verification_value(self.secret, domain, token_hash)
        return tuple(expected_records(domain, self.rules.mx_host, value))

    @staticmethod
    def _token_hash(domain: str, token: Any) -> str:
        """A missing token finds nothing: it must never reach the store as the operator's None."""
        if not isinstance(token, str) or not token:
            raise DomainNotFound(domain)
        return hash_token(token)

    # --- for a domain's owner

    def register(self, domain: Any, client_ip: str | IPAddress | None = None) -> Registration:
        """A new registration of ``domain``; DomainTaken when it is already active or
        suspended. Registrations by others that wait for their records do not stand in its way."""
        name = self.rules.registrable(domain)
        if self.policy is not None:
            refusal = self.policy.on_domain_registration(client_ip)
            if refusal:
                raise CreationRefused(refusal)
        token = secrets.token_urlsafe(24)
        token_hash = hash_token(token)
        pending = self.store.register(name, token_hash, self._now_ms())
        log.info("domain %s registered, waiting for its DNS records", name)
        return Registration(name, token, self._records(name, token_hash), pending.expires_ms)

    def verify(self, domain: Any, token: Any,
               client_ip: str | IPAddress | None = None) -> Verification:
        """Look the records of the registration with ``token`` up: found, the domain is active
        (the other registrations of it are erased); else what is missing or wrong. For a domain
        already active or suspended with that token, its records are checked again, and found
        back, a suspended domain is active again. DomainNotFound, before any DNS look-up, when
        no registration or domain of that name has that token."""
        name = self.rules.known(domain)
        token_hash = self._token_hash(name, token)
        try:
            found = self.store.get(name, token_hash)
        except DomainNotFound:
            found = None
            self.store.pending(name, token_hash)
        if self.policy is not None:
            refusal = self.policy.on_domain_check(client_ip, token_hash)
            if refusal:
                raise CreationRefused(refusal)
        if found is not None:
            return self._check_again(found)
        value = verification_value(self.secret, name, token_hash)
        result = self.checker.check(name, self.rules.mx_host, value)
        if not result.ok:
            return Verification(name, PENDING, result.problems, result.transient)
        return self._activate(name, token_hash, value)

    def _activate(self, name: str, token_hash: str, value: str) -> Verification:
        try:
            if self.store.activate(name, token_hash, value, self._now_ms()):
                log.info("domain %s verified: active", name)
        except DomainTaken:
            raise DomainNotFound(name) from None  # another registration was verified first
        return Verification(name, ACTIVE)

    def _check_again(self, found: Domain) -> Verification:
        """The records of an active or suspended domain (as ``store.get`` gave it) again."""
        name = found.domain
        result = self.checker.check(name, self.rules.mx_host, found.value)
        if not result.ok:
            return Verification(name, found.status, result.problems, result.transient)
        if found.status == SUSPENDED:
            self.store.mark_checked(name, True, self._now_ms(), self.rules.grace_ms)
            log.info("domain %s: records back, active again", name)
        return Verification(name, ACTIVE)

    def show(self, domain: Any, token: Any) -> DomainView:
        """The domain, or the registration waiting, that ``token`` owns; DomainNotFound else."""
        name = self.rules.known(domain)
        token_hash = self._token_hash(name, token)
        try:
            return self._view(name, token_hash)
        except DomainNotFound:
            pending = self.store.pending(name, token_hash)
        return DomainView(name, PENDING, self._records(name, token_hash),
                          created_ms=pending.created_ms, expires_ms=pending.expires_ms)

    def _view(self, name: str, token_hash: str | None) -> DomainView:
        found = self.store.get(name, token_hash)
        erased = (None if found.suspended_ms is None
                  else found.suspended_ms + self.rules.grace_ms)
        records = tuple(expected_records(name, self.rules.mx_host, found.value))
        return DomainView(name, found.status, records, found.aliases, found.created_ms,
                          found.verified_ms, found.checked_ms, found.suspended_ms, erased)

    def remove(self, domain: Any, token: Any) -> int:
        """Erase the domain ``token`` owns with every alias in it (returns how many were live),
        or withdraw the registration with that token (0); DomainNotFound when there is none."""
        name = self.rules.known(domain)
        token_hash = self._token_hash(name, token)
        try:
            live = self.store.erase(name, token_hash, DOMAIN_LIMITS)
        except DomainNotFound:
            self.store.withdraw(name, token_hash)
            log.info("domain %s: a registration withdrawn by its owner", name)
            return 0
        log.info("domain %s erased by its owner with %s", name, _aliases(live))
        return live

    # --- for the operator, who needs no token

    def verify_as_operator(self, domain: Any) -> Verification:
        """Check an active or suspended domain again, or else every registration waiting, in
        turn, until one's records are found (it wins); DomainNotFound when neither exists."""
        name = self.rules.known(domain)
        try:
            return self._check_again(self.store.get(name, None))
        except DomainNotFound:
            pass
        waiting = self.store.registrations(name, self._now_ms())
        if not waiting:
            raise DomainNotFound(name)
        problems: list[str] = []
        transient = False
        for token_hash in waiting:
            value = verification_value(self.secret, name, token_hash)
            result = self.checker.check(name, self.rules.mx_host, value)
            if result.ok:
                return self._activate(name, token_hash, value)
            problems += [p for p in result.problems if p not in problems]
            transient = transient or result.transient
        return Verification(name, PENDING, tuple(problems), transient)

    def show_as_operator(self, domain: Any) -> DomainView:
        name = self.rules.known(domain)
        try:
            return self._view(name, None)
        except DomainNotFound:
            waiting = self.store.registrations(name, self._now_ms())
        if not waiting:
            raise DomainNotFound(name)
        return DomainView(name, PENDING, (), registrations=len(waiting))

    def remove_as_operator(self, domain: Any) -> int:
        """Erase the domain, its registrations and every alias it had; how many were live."""
        name = self.rules.known(domain)
        live = self.store.erase(name, None, DOMAIN_LIMITS)
        log.info("domain %s erased by the operator with %s", name, _aliases(live))
        return live

    # --- upkeep

    def recheck_due(self, now_ms: int | None = None,
                    limit: int = RECHECKS_PER_ROUND) -> dict[str, str]:
        """Check the records of every domain whose check is due (at most ``limit``, a few at
        once): found, it stays or becomes active again; gone, it is suspended; gone for the
        whole grace period, it is erased with its aliases; DNS that does not answer changes
        nothing and the check comes again soon. Returns domain -> what happened
        (``CheckOutcome`` values, "erased", "dns-unanswered", "gone"). A domain another process
        claimed first (``DomainStore.claim``: several workers each run a janitor) is theirs."""
        now = self._now_ms() if now_ms is None else now_ms
        due = self.store.due(now, limit)
        if not due:
            return {}
        with concurrent.futures.ThreadPoolExecutor(min(CHECKS_AT_ONCE, len(due))) as pool:
            outcomes = list(pool.map(lambda name: self._recheck(name, now), due))
        return {name: outcome for name, outcome in zip(due, outcomes) if outcome is not None}

    def _recheck(self, name: str, now: int) -> str | None:
        grace = self.rules.grace_ms
        if not self.store.claim(name, now, CLAIM_MS):
            return None
        try:
            found = self.store.get(name, None, now)
        except DomainNotFound:
            try:  # erased meanwhile: this takes it off the schedule too
                self.store.mark_checked(name, False, now, grace)
            except DomainNotFound:
                pass
            return "gone"
        result = self.checker.check(name, self.rules.mx_host, found.value)
        if result.transient:
            self.store.check_later(name, now + TRANSIENT_RETRY_MS)
            return "dns-unanswered"
        try:
            outcome = self.store.mark_checked(name, result.ok, now, grace)
        except DomainNotFound:
            return "gone"
        if outcome is CheckOutcome.SUSPENDED:
            log.info("domain %s suspended, its records are gone: %s", name,
                     "; ".join(result.problems))
        elif outcome is CheckOutcome.RESTORED:
            log.info("domain %s: records back, active again", name)
        elif outcome is CheckOutcome.GRACE_OVER:
            try:
                live = self.store.erase(name, None, DOMAIN_LIMITS)
            except DomainNotFound:
                return "gone"
            log.info("domain %s erased after its grace period with %s", name, _aliases(live))
            return "erased"
        return outcome.value
