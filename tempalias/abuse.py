"""Abuse defences as one policy: who is trusted, who the client is, and whether to let it through.

Both front doors ask the same ``AbusePolicy``, built once per process from the config:

- HTTP: ``on_alias_creation(ip, target)`` before an alias is created; ``client_ip(...)`` finds the
  client behind a trusted proxy.
- SMTP (the server calls these; none of them talks SMTP itself):
  ``on_connect(ip)`` when a client connects (connection rate, RBL, open connections); when it
  returned None a connection slot is held, and ``on_disconnect(ip)`` must give it back;
  ``on_message(ip)`` at each MAIL FROM (messages per client); ``on_alias_delivery(alias_id)`` once
  per resolved alias recipient (messages per alias).
  ``on_connect`` may wait up to ``rbl_timeout`` for DNS: the server can run it in a greenlet while
  it greets, and answer the client's first command with the refusal if the check is still running.

Each returns None (go on) or a ``Refusal`` carrying the SMTP reply, the HTTP mapping and a log
reason; every refusal is logged here, in one line, with the client IP and never a target address.
Trusted networks are never checked nor limited. Limits live in Redis (``RateLimiter``), so every
process and node shares them. When Redis cannot be reached the limits fail open (logged and
counted): whatever the client wanted needs the alias store on that same Redis, which then refuses
it with a 503 or a 4xx anyway, so failing closed would add nothing but a second error.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import ipaddress
import logging
import threading
from dataclasses import dataclass

from tempalias.addresses import InvalidAddress, parse_address
from tempalias.config import Config, IPNetwork, Rate
from tempalias.rbl import RblChecker
from tempalias.store import RateLimiter, StoreUnavailable, Throttled

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CONNECTION_LEASE_MS = 3_600_000  # a slot whose holder died without giving it back lapses then
RBL_UNAVAILABLE_RETRY_SECONDS = 60
IPV6_LIMIT_PREFIX = 64  # one IPv6 client usually owns a whole /64: limit the network, not the address


@dataclass(frozen=True)
class Refusal:
    """Why a client is turned away, in every form a front door needs."""

    kind: str  # "rbl-listed", "rbl-unavailable" or "rate-limited"
    code: int  # SMTP reply code
    enhanced: str  # SMTP enhanced status code
    text: str  # for the client: SMTP reply text, HTTP description
    reason: str  # for the log: which defence said no
    retry_after: int | None = None  # seconds, when waiting helps

    @property
    def smtp_reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def http_status(self) -> int:
        return {"rbl-listed": 403, "rate-limited": 429}.get(self.kind, 503)


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


def connection_subject(peer: str | None, config: Config) -> str | None:
    """What a new HTTP connection from ``peer`` counts against in the per-client cap on open
    connections: the subject the rate limits use (IPv6 per /64). None when no per-client cap
    applies: trusted networks are never limited, and a trusted proxy's connections carry many
    clients whom only its headers name, read after the connection is taken (the proxy limits its
    clients itself, nginx's ``limit_conn``); those count against the total cap alone.
    """
    ip = parse_ip(peer)
    if in_networks(ip, config.trusted_networks) or in_networks(ip, config.trusted_proxies):
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


def _active(limits: dict[str, Rate | None]) -> dict[str, Rate]:
    return {name: rate for name, rate in limits.items() if rate is not None}


class AbusePolicy:
    """The decisions of both front doors; see the module docstring for who calls what, when."""

    def __init__(self, config: Config, limiter: RateLimiter, rbl: RblChecker) -> None:
        self.config = config
        self.limiter = limiter
        self.rbl = rbl
        self.stats: collections.Counter = collections.Counter()
        self._leases: dict[str, list[str]] = collections.defaultdict(list)
        self._leases_lock = threading.Lock()
        # Asked three times per SMTP message, by the same few peers.
        self.is_trusted = functools.lru_cache(maxsize=4096)(self._in_trusted_networks)

    @classmethod
    def from_config(cls, config: Config, limiter: RateLimiter) -> "AbusePolicy":
        return cls(config, limiter,
                   RblChecker(config.rbl_zones, config.dns_servers, config.rbl_timeout))

    def _in_trusted_networks(self, ip: IPAddress | None) -> bool:
        return in_networks(ip, self.config.trusted_networks)

    # --- HTTP

    def on_alias_creation(self, ip: str | IPAddress | None, target: str) -> Refusal | None:
        """Before creating an alias for ``target`` asked for by ``ip``."""
        ip = parse_ip(ip)
        if self.is_trusted(ip):
            return None
        config = self.config
        throttled = self._take(_ip_subject(ip), {"create": config.create_rate_per_ip,
                                                 "create-day": config.create_daily_per_ip})
        if throttled:
            return self._refuse("http alias creation", ip, Refusal(
                "rate-limited", 451, "4.7.1",
                f"too many new aliases from your address; try again in "
                f"{throttled.retry_after_seconds} s",
                f"{throttled.limit} limit per client reached", throttled.retry_after_seconds))
        refusal = self._rbl_refusal(ip, "http alias creation", at_connect=False)
        if refusal:
            return refusal
        throttled = self._take(_target_subject(target),
                               {"create-target": config.create_daily_per_target})
        if throttled:
            return self._refuse("http alias creation", ip, Refusal(
                "rate-limited", 451, "4.7.1",
                f"too many new aliases for this target address; try again in "
                f"{throttled.retry_after_seconds} s",
                "per-target limit reached", throttled.retry_after_seconds))
        return None

    # --- SMTP

    def on_connect(self, ip: str | IPAddress | None) -> Refusal | None:
        """A client connected. None: serve it (it now holds a slot: call ``on_disconnect``)."""
        ip = parse_ip(ip)
        if self.is_trusted(ip):
            return None
        subject = _ip_subject(ip)
        throttled = self._take(subject, {"smtp-connect": self.config.smtp_connections_per_ip})
        if throttled:
            return self._refuse("smtp connection", ip, Refusal(
                "rate-limited", 421, "4.7.0",
                f"too many connections from {ip}; try again in {throttled.retry_after_seconds} s",
                "connections per client limit reached", throttled.retry_after_seconds))
        refusal = self._rbl_refusal(ip, "smtp connection", at_connect=True)
        if refusal:
            return refusal
        limit = self.config.smtp_concurrent_per_ip
        if limit:
            try:
                lease = self.limiter.open_lease(subject, limit, CONNECTION_LEASE_MS)
            except StoreUnavailable as exc:
                self._redis_down(exc)
                return None
            if lease is None:
                return self._refuse("smtp connection", ip, Refusal(
                    "rate-limited", 421, "4.7.0",
                    f"too many open connections from {ip}; try again later",
                    f"{limit} open connections per client reached", 60))
            with self._leases_lock:
                self._leases[subject].append(lease)
        return None

    def on_disconnect(self, ip: str | IPAddress | None) -> None:
        """Give back the slot ``on_connect`` took (a no-op for trusted or slot-less clients)."""
        if not self._leases:
            return  # nobody holds a slot (no limit on open connections, or trusted clients)
        subject = _ip_subject(parse_ip(ip))
        with self._leases_lock:
            leases = self._leases.get(subject)
            if not leases:
                return
            lease = leases.pop()
            if not leases:
                del self._leases[subject]
        try:
            self.limiter.close_lease(subject, lease)
        except StoreUnavailable as exc:
            self._redis_down(exc)  # the lease lapses by itself

    def on_message(self, ip: str | IPAddress | None) -> Refusal | None:
        """A client starts a message (MAIL FROM)."""
        ip = parse_ip(ip)
        if self.is_trusted(ip):
            return None
        throttled = self._take(_ip_subject(ip), {"smtp-message": self.config.smtp_messages_per_ip})
        if throttled:
            return self._refuse("smtp message", ip, Refusal(
                "rate-limited", 451, "4.7.1",
                f"too many messages from {ip}; try again in {throttled.retry_after_seconds} s",
                "messages per client limit reached", throttled.retry_after_seconds))
        return None

    def on_alias_delivery(self, alias_id: str, ip: str | IPAddress | None = None) -> Refusal | None:
        """An alias resolved as a recipient: may it take one more message now?"""
        if self.is_trusted(parse_ip(ip)):
            return None  # trusted networks are never rate-limited (a relay of your own, tests)
        throttled = self._take(f"alias:{alias_id.lower()}",
                               {"alias-message": self.config.alias_message_rate})
        if throttled:
            return self._refuse(f"smtp delivery to alias {alias_id.lower()}", parse_ip(ip),
                                Refusal("rate-limited", 451, "4.7.1",
                                        f"this alias takes no more messages for now; try again in "
                                        f"{throttled.retry_after_seconds} s",
                                        "messages per alias limit reached",
                                        throttled.retry_after_seconds))
        return None

    # --- shared

    def _take(self, subject: str, limits: dict[str, Rate | None]) -> Throttled | None:
        try:
            return self.limiter.take(subject, _active(limits))
        except StoreUnavailable as exc:
            self._redis_down(exc)
            return None

    def _rbl_refusal(self, ip: IPAddress | None, what: str, at_connect: bool) -> Refusal | None:
        if ip is None or not self.rbl.enabled:
            return None
        verdict = self.rbl.check(ip)
        if verdict.listed:
            return self._refuse(what, ip, Refusal(
                "rbl-listed", 554, "5.7.1", f"{ip} listed in {verdict.listed_in}",
                f"listed in {verdict.listed_in}"))
        if verdict.failed and self.config.rbl_fail_closed:
            return self._refuse(what, ip, Refusal(
                "rbl-unavailable", 421 if at_connect else 451, "4.7.0" if at_connect else "4.7.1",
                f"cannot check {ip} against block lists now; try again later",
                "block list look-up failed in " + ", ".join(verdict.failed) + " (fail closed)",
                RBL_UNAVAILABLE_RETRY_SECONDS))
        return None

    def _refuse(self, what: str, ip: IPAddress | None, refusal: Refusal) -> Refusal:
        self.stats[refusal.kind] += 1
        log.info("refused %s from %s: %s", what, ip or "an unknown client", refusal.reason)
        return refusal

    def status_line(self) -> str:
        """What the defences did since start, in one line (for a SIGUSR1 status log)."""
        counts = {**self.stats, **{f"dns-{what}": n for what, n in self.rbl.stats.counts.items()}}
        return " ".join(f"{name}={counts[name]}" for name in sorted(counts)) or "nothing yet"

    def _redis_down(self, exc: StoreUnavailable) -> None:
        self.stats["redis-unavailable"] += 1
        log.warning("rate limits not applied (failing open): %s", exc)
