"""DNS block list (RBL) look-ups: is this client IP listed in any of the configured zones?

An IP is looked up as its reversed octets (IPv4) or reversed nibbles (IPv6) under each zone, all
zones at once when sockets are gevent's (the service monkey-patches), one after another otherwise
(tests and admin commands call it directly); either way each query has its own timeout.

Only an A answer inside 127.0.0.0/8 means "listed". 127.255.255.252-255 are the codes public lists
answer with to say "you are querying through a resolver we block" (or "over quota"): they are
logged as a fault of ours and do not list the client. NXDOMAIN or no A record means not listed. A
timeout or a SERVFAIL is a failure: the verdict says so, and the caller decides whether that blocks
(fail closed) or not (fail open, the default). Answers are cached for their TTL (NXDOMAIN for its
SOA minimum), bounded in time and in the number of entries; failures are never cached.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field

import dns.exception
import dns.rdatatype
import dns.resolver
import gevent
import gevent.monkey
from gevent.pool import Pool

from tempalias import metrics
from tempalias.config import Listen
from tempalias.resolver import make_resolver

log = logging.getLogger(__name__)

LISTED_RANGE = ipaddress.ip_network("127.0.0.0/8")
REFUSED_RESOLVER_RANGE = ipaddress.ip_network("127.255.255.252/30")  # blocked resolver, quota
CACHE_MAX_TTL = 3600.0
CACHE_NEGATIVE_TTL = 300.0  # NXDOMAIN without an SOA to say otherwise
CACHE_MAX_ENTRIES = 10_000


def reversed_name(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, zone: str) -> str:
    """``7.2.0.192.zone`` for 192.0.2.7; 32 reversed nibbles then the zone for IPv6."""
    if ip.version == 4:
        parts = reversed(str(ip).split("."))
    else:
        parts = reversed(ip.exploded.replace(":", ""))
    return ".".join(parts) + "." + zone.rstrip(".") + "."


@dataclass(frozen=True)
class Verdict:
    """What the block lists said about one IP."""

    listed_in: str | None = None  # the first zone that lists it
    failed: tuple[str, ...] = ()  # zones that timed out or failed (SERVFAIL, refused)

    @property
    def listed(self) -> bool:
        return self.listed_in is not None


@dataclass
class _Answer:
    listed: bool
    expires: float


@dataclass
class RblStats:
    """Counters an operator (or a test) can read: look-ups, listings and failures by kind."""

    counts: collections.Counter = field(default_factory=collections.Counter)

    def count(self, what: str) -> None:
        self.counts[what] += 1


class RblChecker:
    """Looks client IPs up in DNS block lists, through the given resolvers or the system's."""

    def __init__(self, zones: tuple[str, ...], servers: tuple[Listen, ...] = (),
                 timeout: float = 2.0) -> None:
        self.zones = tuple(zone.rstrip(".") for zone in zones)
        self.timeout = timeout
        self.stats = RblStats()
        # no zones, no look-up: no resolver to configure (nor a missing one to complain about)
        self.resolver = make_resolver(servers, timeout) if self.zones else None
        self._cache: collections.OrderedDict[tuple[str, str], _Answer] = collections.OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.zones)

    def check(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Verdict:
        """Look ``ip`` up in every zone; never raises, never waits much longer than the timeout."""
        if not self.zones:
            return Verdict()
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        self.stats.count("checks")
        if gevent.monkey.is_module_patched("socket") and len(self.zones) > 1:
            pool = Pool(len(self.zones))
            outcomes = {}
            with gevent.Timeout(self.timeout + 1.0, False):  # belt and braces over each lifetime
                for zone, outcome in zip(self.zones, pool.imap(lambda z: self._lookup(ip, z),
                                                               self.zones)):
                    outcomes[zone] = outcome
            pool.kill(block=False)
            for zone in self.zones:
                if zone not in outcomes:
                    log.warning("rbl %s: no answer for %s in time", zone, ip)
                    self.stats.count("timeout")
                    metrics.rbl_lookup(zone, "timeout", self.timeout + 1.0)
                    outcomes[zone] = None
        else:
            outcomes = {zone: self._lookup(ip, zone) for zone in self.zones}
        listed_in = next((zone for zone in self.zones if outcomes[zone]), None)
        failed = tuple(zone for zone in self.zones if outcomes[zone] is None)
        if listed_in:
            self.stats.count("listed")
        return Verdict(listed_in, failed)

    def _lookup(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, zone: str) -> bool | None:
        """True listed, False not listed, None when the zone could not tell us."""
        key = (str(ip), zone)
        now = time.monotonic()
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None and cached.expires > now:
                self.stats.count("cache-hits")
                return cached.listed
        started = time.monotonic()
        listed, result = self._ask(ip, zone, key)
        metrics.rbl_lookup(zone, result, time.monotonic() - started)
        return listed

    def _ask(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, zone: str,
             key: tuple[str, str]) -> tuple[bool | None, str]:
        """The DNS look-up behind ``_lookup``, and its result in the metrics' words."""
        name = reversed_name(ip, zone)
        try:
            answer = self.resolver.resolve(name, "A", lifetime=self.timeout,
                                           raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            self._remember(key, False, _negative_ttl(exc))
            return False, "clean"
        except dns.exception.Timeout:
            log.warning("rbl %s: look-up of %s timed out", zone, ip)
            self.stats.count("timeout")
            return None, "timeout"
        except dns.exception.DNSException as exc:
            log.warning("rbl %s: look-up of %s failed: %s", zone, ip,
                        exc.__class__.__name__)
            self.stats.count("servfail")
            return None, "failed"
        if answer.rrset is None:
            self._remember(key, False, CACHE_NEGATIVE_TTL)
            return False, "clean"
        codes = [ipaddress.ip_address(record.address) for record in answer.rrset
                 if record.rdtype == dns.rdatatype.A]
        if any(code in REFUSED_RESOLVER_RANGE for code in codes):
            log.warning("rbl %s refuses our resolver (answered %s): the list is not checked",
                        zone, ", ".join(map(str, codes)))
            self.stats.count("resolver-refused")
            return False, "refused-resolver"  # not cached: it says nothing about the client
        listed = any(code in LISTED_RANGE for code in codes)
        self._remember(key, listed, float(answer.rrset.ttl))
        return listed, "listed" if listed else "clean"

    def _remember(self, key: tuple[str, str], listed: bool, ttl: float) -> None:
        ttl = min(ttl, CACHE_MAX_TTL)
        if ttl <= 0:
            return
        with self._cache_lock:
            self._cache[key] = _Answer(listed, time.monotonic() + ttl)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.popitem(last=False)


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """RFC 2308: a negative answer lives min(SOA TTL, SOA MINIMUM) if the SOA came with it."""
    try:
        for response in exc.responses().values():
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return float(min(rrset.ttl, rrset[0].minimum))
    except (AttributeError, KeyError, IndexError):
        pass
    return CACHE_NEGATIVE_TTL
