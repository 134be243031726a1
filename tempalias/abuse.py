"""Abuse defences as one policy: who is trusted, who the client is, and whether to let it through.

Both front doors ask the same ``AbusePolicy``, built once per process from the abuse settings
(``AbuseSettings``, the ``abuse`` section of the config):

- HTTP: ``connection_subject(peer)`` when a connection is accepted (the server's per-client cap
  on open connections); ``on_alias_creation(ip, target)`` before an alias is created;
  ``client_ip(...)`` finds the client behind a trusted proxy.
- SMTP (the server and the forwarder call these; none of them talks SMTP itself):
  ``on_connect(ip)`` when a client connects (connection rate, RBL, open connections) returns the
  connection's ``SmtpClient``, a handle that holds what the connection took (its slot among the
  client's open connections, the token of its first message paid in advance), and a refusal or
  None; the server gives that handle back when *its* connection ended, with
  ``on_disconnect_later(client)``: what it held goes back to Redis with the next connection of
  the same client, or with the others that closed meanwhile (``give_back_pending``, which the
  server calls within ``LEAVING_BATCH_SECONDS``), so the release costs no round trip of its own
  under load. ``on_message(client)`` at each MAIL FROM (messages per client); ``alias_limits(client)``
  are the per-alias limits the store takes inside its RESERVE for each alias recipient, and
  ``on_alias_throttled`` turns their refusal into a verdict.
  ``on_connect`` may wait up to ``rbl_timeout`` for DNS.

Each check returns None (go on) or a ``Refusal``: what was decided (kind, which limit, retry
after), never how to say it; the doors put it in their own words (``tempalias/smtp/refusals.py``,
``tempalias/web/errors.py``). Every refusal is logged here, in one line, with the client IP and
never a target address. Trusted networks are never checked nor limited. The limits of each stage
are declared once, in ``STAGES``.

Limits live in Redis (``RateLimiter``), so every process and node shares them, and they ride on
the scripts the SMTP path runs anyway: one script at connect (connection rate, open connections,
and the first message's token), the per-alias limits inside the alias store's RESERVE. When Redis
cannot be reached the limits fail open (logged and counted): whatever the client wanted needs the
alias store on that same Redis, which then refuses it with a 503 or a 4xx anyway, so failing
closed would add nothing but a second error.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import ipaddress
import logging
from dataclasses import dataclass

from tempalias.addresses import InvalidAddress, parse_address
from tempalias.config import AbuseSettings, IPNetwork, Listen, Rate
from tempalias.rbl import RblChecker
from tempalias.store import REPLY_LIMIT, Lease, RateLimiter, StoreUnavailable, Throttled

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CONNECTION_LEASE_MS = 3_600_000  # a slot whose holder died without giving it back lapses then
OPEN_CONNECTIONS_RETRY_MS = 60_000  # what a client with too many open connections is told to wait
RBL_UNAVAILABLE_RETRY_SECONDS = 60
IPV6_LIMIT_PREFIX = 64  # one IPv6 client usually owns a whole /64: limit the network, not the address

# what a Refusal is
RATE_LIMITED = "rate-limited"
RBL_LISTED = "rbl-listed"
RBL_UNAVAILABLE = "rbl-unavailable"

# what a limit counts per
CLIENT = "client"  # the client's address (IPv6: its /64)
TARGET = "target"  # the target mailbox, however spelled (Address.canonical)
ALIAS = "alias"  # the alias id
DOMAIN = "domain"  # a custom domain (its A-label): the bucket shares the domain's Redis slot
REGISTRATION = "registration"  # one registration of a custom domain (its token's hash)
PER = (CLIENT, TARGET, ALIAS, DOMAIN, REGISTRATION)
DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class Limit:
    name: str  # the bucket's name in Redis, and a Refusal's ``limit``
    setting: str  # the abuse setting that holds it (None or 0 there: the limit is off)
    per: str  # CLIENT, TARGET, ALIAS or DOMAIN
    daily: bool = False  # the setting is a whole number per day, not a Rate


# The limits each stage takes, in the order they are checked. Those of one subject are taken all
# or none, in one script.
STAGES: dict[str, tuple[Limit, ...]] = {
    "alias-creation": (Limit("create", "create_rate_per_ip", CLIENT),
                       Limit("create-day", "create_daily_per_ip", CLIENT),
                       Limit("create-target", "create_daily_per_target", TARGET)),
    "smtp-connection": (Limit("smtp-connect", "smtp_connections_per_ip", CLIENT),),
    "smtp-message": (Limit("smtp-message", "smtp_messages_per_ip", CLIENT),),
    "alias-delivery": (Limit("alias-message", "alias_message_rate", ALIAS),),
    "alias-reply": (Limit(REPLY_LIMIT, "reply_rate", ALIAS),),  # the owner's replies through it
    "domain-registration": (Limit("domain-register", "domain_rate_per_ip", CLIENT),),
    "custom-alias": (Limit("domain-alias", "domain_daily_aliases", DOMAIN, daily=True),),
    "domain-check": (Limit("domain-verify", "domain_verify_rate", REGISTRATION),),
}
# not a bucket but a count of leases (``RateLimiter.admit``); its name is the lease set's
OPEN_CONNECTIONS = Limit("open", "smtp_concurrent_per_ip", CLIENT)
LIMITS = {limit.name: limit for stage in STAGES.values() for limit in stage} | {
    OPEN_CONNECTIONS.name: OPEN_CONNECTIONS}
# The buckets that belong to a custom domain (its own, and each of its aliases'): erased with it.
DOMAIN_LIMITS = tuple(limit.name for stage in STAGES.values() for limit in stage
                      if limit.per in (ALIAS, DOMAIN))


@dataclass(frozen=True)
class Refusal:
    """What the policy decided against a client; each door says it in its own words."""

    kind: str  # RATE_LIMITED, RBL_LISTED or RBL_UNAVAILABLE
    limit: str  # the Limit's name that said no, or the block list(s) that listed or failed
    client: str  # the client's address as the policy saw it, or "unknown"
    retry_after: int | None = None  # seconds, when waiting helps


@dataclass
class SmtpClient:
    """One SMTP connection as the policy sees it: who it is, and what it holds until the server
    gives it back (``on_disconnect``), for this connection and no other."""

    ip: IPAddress | None
    subject: str | None  # what its limits count against; None: a trusted client, never limited
    lease: Lease | None = None  # what ``RateLimiter.admit`` let it hold



def parse_ip(text: str | IPAddress | None) -> IPAddress | None:
    """An address from a socket peer or a header: IPv4-mapped IPv6 becomes IPv4; junk is None."""
    if text is None or isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        ip = text
    else:
        ip = _parse_ip_text(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=4096)
def _parse_ip_text(text: str) -> IPAddress | None:
    """Cached: the same few peers ask again and again (each SMTP connection asks four times),
    and ``ipaddress`` parses in Python."""
    candidate = text.strip()
    if candidate.startswith("[") and "]" in candidate:  # [v6]:port
        candidate = candidate[1:candidate.index("]")]
    elif candidate.count(":") == 1:  # v4:port
        candidate = candidate.partition(":")[0]
    try:
        return ipaddress.ip_address(candidate.split("%")[0])
    except ValueError:
        return None


def in_networks(ip: IPAddress | None, networks: tuple[IPNetwork, ...]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)


def client_ip(peer: str | None, forwarded_for: str | None,
              trusted_proxies: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The HTTP client's address: the peer, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For hop that is not one of our proxies (hops further left are the client's word).
    None when that hop is not an address: such a client is limited as "unknown", never trusted.
    """
    ip = parse_ip(peer)
    if not forwarded_for or not in_networks(ip, trusted_proxies):
        return ip
    for hop in reversed(forwarded_for.split(",")):
        hop_ip = parse_ip(hop)
        if hop_ip is None:
            return None
        ip = hop_ip
        if not in_networks(hop_ip, trusted_proxies):
            break
    return ip


def _ip_subject(ip: IPAddress | None) -> str:
    if ip is None:
        return "ip:unknown"
    if ip.version == 6:
        return "net:" + str(ipaddress.ip_network(f"{ip}/{IPV6_LIMIT_PREFIX}", strict=False))
    return f"ip:{ip}"


def connection_subject(peer: str | None, settings: AbuseSettings) -> str | None:
    """What a new HTTP connection from ``peer`` counts against in the per-client cap on open
    connections: the subject the rate limits use (IPv6 per /64). None when no per-client cap
    applies: trusted networks are never limited, and a trusted proxy's connections carry many
    clients whom only its headers name, read after the connection is taken (the proxy limits its
    clients itself, nginx's ``limit_conn``); those count against the total cap alone.
    """
    ip = parse_ip(peer)
    if in_networks(ip, settings.trusted_networks) or in_networks(ip, settings.trusted_proxies):
        return None
    return _ip_subject(ip)


def _target_subject(target: str) -> str:
    """A target's key that does not reveal it, the same for every spelling of the mailbox
    (``Address.canonical``): ``victim+1@``, ``"victim"@``, ``VICTIM@`` and the Unicode and
    A-label forms of the domain are one target. Text that is no address (the API validates
    before it asks) counts as itself, case-folded."""
    try:
        key = parse_address(target.strip()).canonical
    except InvalidAddress:
        key = target.strip().casefold()
    return "to:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _switched_on(settings: AbuseSettings) -> dict[str, dict[str, dict[str, Rate]]]:
    """stage -> what it counts per -> {limit name: Rate}, for the limits ``settings`` switch on."""
    rates: dict[str, dict[str, dict[str, Rate]]] = {}
    for stage, limits in STAGES.items():
        rates[stage] = {per: {} for per in PER}
        for limit in limits:
            rate = getattr(settings, limit.setting)
            if limit.daily:
                rate = Rate(rate, DAY_SECONDS) if rate else None
            if rate is not None:
                rates[stage][limit.per][limit.name] = rate
    return rates


class AbusePolicy:
    """The decisions of both front doors; see the module docstring for who calls what, when."""

    def __init__(self, settings: AbuseSettings, limiter: RateLimiter, rbl: RblChecker) -> None:
        self.settings = settings
        self.limiter = limiter
        self.rbl = rbl
        self.stats: collections.Counter = collections.Counter()
        self.rates = _switched_on(settings)
        self._leaving: dict[str, list[Lease]] = {}  # subject -> what closed connections held
        # Asked at every SMTP connection, by the same few peers.
        self.is_trusted = functools.lru_cache(maxsize=4096)(self._in_trusted_networks)

    @classmethod
    def from_settings(cls, settings: AbuseSettings, limiter: RateLimiter,
                      dns_servers: tuple[Listen, ...] = ()) -> "AbusePolicy":
        """``dns_servers``: the dns section's resolvers, which block lists are asked through."""
        return cls(settings, limiter,
                   RblChecker(settings.rbl_zones, dns_servers, settings.rbl_timeout))

    def _in_trusted_networks(self, ip: IPAddress | None) -> bool:
        return in_networks(ip, self.settings.trusted_networks)

    # --- HTTP

    def connection_subject(self, peer: str | None) -> str | None:
        """What a new HTTP connection counts against in the server's per-client cap
        (``connection_subject`` by this policy's trusted networks and proxies)."""
        return connection_subject(peer, self.settings)

    def on_alias_creation(self, ip: str | IPAddress | None, target: str) -> Refusal | None:
        """Before creating an alias for ``target`` asked for by ``ip``."""
        ip = parse_ip(ip)
        if self.is_trusted(ip):
            return None
        what, rates = "http alias creation", self.rates["alias-creation"]
        return (self._take(what, ip, _ip_subject(ip), rates[CLIENT])
                or self._rbl_refusal(what, ip)
                or self._take(what, ip, _target_subject(target), rates[TARGET]))

    def on_domain_registration(self, ip: str | IPAddress | None) -> Refusal | None:
        """Before registering a custom domain for ``ip``: the client's registrations, then the
        block lists, as for an alias creation."""
        ip = parse_ip(ip)
        if self.is_trusted(ip):
            return None
        what = "http domain registration"
        return (self._take(what, ip, _ip_subject(ip), self.rates["domain-registration"][CLIENT])
                or self._rbl_refusal(what, ip))

    def on_domain_check(self, ip: str | IPAddress | None, token_hash: str) -> Refusal | None:
        """Before looking a registration's records up on its owner's request: each check makes
        us query the domain's name servers, so a token holder may not make us do it without
        end. Counted per registration, trusted clients included, so that another registrant of
        the same domain cannot spend the owner's checks."""
        return self._take("http domain check", parse_ip(ip), "reg:" + token_hash[:32],
                          self.rates["domain-check"][REGISTRATION])

    def on_custom_alias(self, ip: str | IPAddress | None, domain: str) -> Refusal | None:
        """Before creating an alias at the custom ``domain`` (A-label), whose owner ``ip`` proved
        to be: the domain's aliases per day. Asked after ``on_alias_creation``."""
        ip = parse_ip(ip)
        if self.is_trusted(ip):
            return None
        return self._take(f"http alias creation at {domain}", ip, domain,
                          self.rates["custom-alias"][DOMAIN])

    # --- SMTP

    def on_connect(self, ip: str | IPAddress | None) -> tuple[SmtpClient, Refusal | None]:
        """A client connected: its handle, and why it is turned away, or None. Served, it may
        hold a slot and a paid-in-advance token: give the handle back with ``on_disconnect``."""
        ip = parse_ip(ip)
        client = SmtpClient(ip, None if self.is_trusted(ip) else _ip_subject(ip))
        if client.subject is None:
            return client, None
        rates = self.rates["smtp-connection"][CLIENT]
        open_limit = self.settings.smtp_concurrent_per_ip
        advance = self.rates["smtp-message"][CLIENT]
        if rates or open_limit or advance:
            leaving = self._leaving.pop(client.subject, ())  # given back first, same write
            try:
                admitted = self.limiter.admit(client.subject, rates, open_limit, CONNECTION_LEASE_MS,
                                              OPEN_CONNECTIONS_RETRY_MS, advance, leaving)
            except StoreUnavailable as exc:
                self._redis_down(exc)
            else:
                if isinstance(admitted, Throttled):
                    return client, self._throttled("smtp connection", ip, admitted)
                client.lease = admitted
        refusal = self._rbl_refusal("smtp connection", ip)
        if refusal:
            self.on_disconnect(client)
        return client, refusal

    def on_disconnect(self, client: SmtpClient) -> None:
        """Give back what ``client``'s connection held, now (nothing for a trusted client): that
        connection's own, never another's of the same client."""
        lease, client.lease = client.lease, None
        if lease is not None:
            self._leave([lease])

    def on_disconnect_later(self, client: SmtpClient) -> bool:
        """The same, soon: with the next connection of the same client this process admits (in
        that one write), or at the next ``give_back_pending``. True when something waits for it.
        A client with more than half its open connections in use gets its slot back now."""
        lease, client.lease = client.lease, None
        if lease is None:
            return False
        if 2 * lease.open > self.settings.smtp_concurrent_per_ip:
            self._leave([lease])
            return False
        self._leaving.setdefault(lease.subject, []).append(lease)
        return True

    def give_back_pending(self) -> None:
        """What every connection closed since holds goes back, in one write."""
        leaving, self._leaving = self._leaving, {}
        self._leave([lease for leases in leaving.values() for lease in leases])

    def _leave(self, leases: list[Lease]) -> None:
        if not leases:
            return
        try:
            self.limiter.leave(*leases)
        except StoreUnavailable as exc:
            self._redis_down(exc)  # the leases lapse by themselves

    def on_message(self, client: SmtpClient) -> Refusal | None:
        """A client starts a message (MAIL FROM); its first was paid for when it connected."""
        if client.subject is None or (client.lease is not None and client.lease.spend_advance()):
            return None
        return self._take("smtp message", client.ip, client.subject,
                          self.rates["smtp-message"][CLIENT])

    def alias_limits(self, client: SmtpClient) -> dict[str, Rate]:
        """What the store takes with each use it reserves for ``client`` (none when trusted)."""
        return {} if client.subject is None else self.rates["alias-delivery"][ALIAS]

    def reply_limit(self) -> Rate | None:
        """The rate of the owner's replies through one alias (``AliasStore.reply_route``)."""
        return self.rates["alias-reply"][ALIAS].get(REPLY_LIMIT)

    def on_alias_throttled(self, alias_id: str, client: SmtpClient,
                           throttled: Throttled) -> Refusal:
        """One of ``alias_limits`` said no when the store reserved a use of ``alias_id``."""
        return self._throttled(f"smtp delivery to alias {alias_id.lower()}", client.ip, throttled)

    # --- shared

    def _take(self, what: str, ip: IPAddress | None, subject: str,
              rates: dict[str, Rate]) -> Refusal | None:
        try:
            throttled = self.limiter.take(subject, rates)
        except StoreUnavailable as exc:
            self._redis_down(exc)
            return None
        return self._throttled(what, ip, throttled) if throttled else None

    def _throttled(self, what: str, ip: IPAddress | None, throttled: Throttled) -> Refusal:
        limit = LIMITS[throttled.limit]
        return self._refuse(what, Refusal(RATE_LIMITED, limit.name, _name(ip),
                                          throttled.retry_after_seconds),
                            f"{limit.name} limit reached ({limit.setting})")

    def _rbl_refusal(self, what: str, ip: IPAddress | None) -> Refusal | None:
        if ip is None or not self.rbl.enabled:
            return None
        verdict = self.rbl.check(ip)
        if verdict.listed:
            return self._refuse(what, Refusal(RBL_LISTED, verdict.listed_in, str(ip)),
                                f"listed in {verdict.listed_in}")
        if verdict.failed and self.settings.rbl_fail_closed:
            failed = ", ".join(verdict.failed)
            return self._refuse(what, Refusal(RBL_UNAVAILABLE, failed, str(ip),
                                              RBL_UNAVAILABLE_RETRY_SECONDS),
                                f"block list look-up failed in {failed} (fail closed)")
        return None

    def _refuse(self, what: str, refusal: Refusal, reason: str) -> Refusal:
        self.stats[refusal.kind] += 1
        log.info("refused %s from %s: %s", what, _name_in_log(refusal.client), reason)
        return refusal

    def status_line(self) -> str:
        """What the defences did since start, in one line (for a SIGUSR1 status log)."""
        counts = {**self.stats, **{f"dns-{what}": n for what, n in self.rbl.stats.counts.items()}}
        return " ".join(f"{name}={counts[name]}" for name in sorted(counts)) or "nothing yet"

    def _redis_down(self, exc: StoreUnavailable) -> None:
        self.stats["redis-unavailable"] += 1
        log.warning("rate limits not applied (failing open): %s", exc)


def _name(ip: IPAddress | None) -> str:
    return str(ip) if ip is not None else "unknown"


def _name_in_log(client: str) -> str:
    return "an unknown client" if client == "unknown" else client
