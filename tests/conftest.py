"""Shared fixtures: a private redis-server per test session, stores on it, running services."""

from __future__ import annotations

import itertools
import time

import pytest

from harness.processes import ServiceProcess
from harness.smtp_peer import SmtpPeer
from tempalias.embedded_redis import RedisServer, free_loopback_port
from tempalias.store import AliasStore, connect, keys


def private_redis(tmp_path_factory, name: str):
    """A redis-server of our own on a free loopback port, until the generator is closed."""
    server = RedisServer(str(tmp_path_factory.mktemp(name)), port=free_loopback_port(),
                         persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server of our own for the session; never the shared one on 6379."""
    yield from private_redis(tmp_path_factory, "redis")


@pytest.fixture(scope="module")
def module_redis_server(tmp_path_factory):
    """A redis-server of the test module's own (see ``own_redis``)."""
    yield from private_redis(tmp_path_factory, "own-redis")


@pytest.fixture
def own_redis(module_redis_server):
    """A client of a Redis that is empty when the test starts: for what every store on a Redis
    shares (the retired-id bit set, the schema's version), which the session's cannot give one
    test alone, and for memory measured with ``INFO memory``."""
    client = connect(module_redis_server.url, timeout=30.0)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def redis_client(redis_server):
    client = connect(redis_server.url, timeout=5.0)
    yield client
    client.close()


@pytest.fixture
def store(redis_client):
    return AliasStore(redis_client)


def ids_taken_on(client) -> int:
    """How many ids the retired-id bit set holds: every creation at our domains adds one."""
    total = 0
    for shard in range(keys.ALIAS_SHARDS):
        layers, count = client.hmget(keys.retired_layers_key(shard), "layers", "count")
        full = [int(layer.split(",")[3]) for layer in (layers or "").split(";") if layer][:-1]
        total += sum(full) + int(count or 0)
    return total


@pytest.fixture
def ids_taken(redis_client):
    """``ids_taken()``: the ids the retired-id bit set holds, which each creation adds to."""
    return lambda: ids_taken_on(redis_client)


class FakeClock:
    """A clock for the stores' ``clock`` (seconds, as ``time.time``) that moves only when told:
    limit tests see a bucket refill or a lease lapse without waiting for it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


# KEYS[1..]  - rate-limit keys: buckets (a TAT, ms) and lease sets (lease id -> lapse, ms)
# ARGV[1]    - how many ms pass
# returns 1; error NOT-A-LIMIT <key> for a key of another kind
PASS_TIME = """
local ms = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
    local ttl = redis.call('PTTL', key)
    if ttl >= 0 and ttl <= ms then
        redis.call('DEL', key)  -- it would have expired meanwhile
    elseif ttl ~= -2 then
        local kind = redis.call('TYPE', key)['ok']
        if kind == 'string' then
            redis.call('SET', key, tonumber(redis.call('GET', key)) - ms, 'KEEPTTL')
        elseif kind == 'zset' then
            local leases = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
            for i = 1, #leases, 2 do
                redis.call('ZADD', key, tonumber(leases[i + 1]) - ms, leases[i])
            end
        else
            return redis.error_reply('NOT-A-LIMIT ' .. key)
        end
        if ttl > 0 then
            redis.call('PEXPIRE', key, ttl - ms)
        end
    end
end
return 1
"""


class LimitTime:
    """Lets time pass for the rate limits of running services (``service_factory``) on one Redis,
    without waiting for it: ``let_time_pass(seconds)``.

    A service child cannot take the ``clock`` fixture: its limiter reads Redis's own clock. So this
    moves the limiter's state instead of the clock. Its scripts compare every moment they stored
    with now, and nothing else: a bucket's TAT, a lease's lapse, and the keys' TTLs (written as
    that moment minus now). Moving each of them N seconds back, and deleting a key whose TTL is
    up within N seconds (it would have expired), is to the limiter exactly N seconds passing. The
    service runs its own, unchanged code, with no test-only clock setting, and the tests keep
    talking HTTP and SMTP to it.

    Time passes for every client on that Redis at once, as it does: a test need not know how the
    abuse policy names what it limits (``ip:...``, ``to:<hash>``, alias ids), only the key schema
    (``keys.LIMITS_PATTERN``). Real time keeps passing too, so a test that says "not yet" should
    leave a margin of seconds before the moment it expects a refill.
    """

    def __init__(self, client) -> None:
        self.redis = client
        self.script = client.register_script(PASS_TIME)

    def __call__(self, seconds: float) -> None:
        limits = list(self.redis.scan_iter(match=keys.LIMITS_PATTERN, count=1000))
        for first in range(0, len(limits), 1000):
            self.script(keys=limits[first:first + 1000], args=[round(seconds * 1000)])


@pytest.fixture
def let_time_pass(redis_client):
    """``let_time_pass(seconds)`` for the limits of the services on the session's Redis."""
    return LimitTime(redis_client)


class DomainTime:
    """Lets time pass for one custom domain in Redis, without waiting: ``(domain, seconds)``
    moves the moments stored about it (when it was registered, verified, last checked and
    suspended, and its next check in ``ta:domains``) that many seconds back, as ``LimitTime`` does
    for the limits. To a running service it is exactly that much time passing for the domain: a
    check of the schedule (24 h) comes due, a grace period (72 h) runs out."""

    FIELDS = ("created", "verified", "checked", "suspended")

    def __init__(self, client) -> None:
        self.redis = client

    def __call__(self, domain: str, seconds: float) -> None:
        ms = round(seconds * 1000)
        key = keys.domain_key(domain)
        stored = dict(zip(self.FIELDS, self.redis.hmget(key, self.FIELDS)))
        moved = {name: int(value) - ms for name, value in stored.items() if value is not None}
        if moved:
            self.redis.hset(key, mapping=moved)
        due = self.redis.zscore(keys.DOMAINS_KEY, domain)
        if due is not None:
            self.redis.zadd(keys.DOMAINS_KEY, {domain: due - ms}, xx=True)


@pytest.fixture
def let_domain_time_pass(redis_client):
    """``let_domain_time_pass(domain, seconds)`` for the custom domains of the services on the
    session's Redis."""
    return DomainTime(redis_client)


@pytest.fixture(scope="session")
def service_factory(tmp_path_factory, redis_server, dns_server):
    """Start ``tempalias serve`` children; each gets its own directory. All stop at session end.

    By default they share the session's Redis; pass ``TEMPALIAS_REDIS_URL=""`` in ``env`` to get
    the embedded default instead. Their DNS is the session's DNS server on loopback (the checks
    of mail received ask it about every sender), unless ``env`` says otherwise.
    """
    started: list[ServiceProcess] = []
    counter = itertools.count()

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = (),
              workdir=None) -> ServiceProcess:
        env = {"TEMPALIAS_REDIS_URL": redis_server.url,
               "TEMPALIAS_DNS_SERVERS": dns_server.address, **(env or {})}
        if workdir is None:
            workdir = tmp_path_factory.mktemp(f"service{next(counter)}")
        service = ServiceProcess(workdir, env, args).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def service(service_factory):
    """One running tempalias on the session's Redis, shared by the tests that only talk to it."""
    return service_factory()


@pytest.fixture(scope="session")
def dns_server():
    """A real DNS server on a loopback UDP port: test block lists and a zone tests write
    (harness/dns_server.py)."""
    from harness.dns_server import TestDnsServer

    server = TestDnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def dns_zone(dns_server):
    """The session's DNS server with the test's own zone empty at the start and at the end: the
    test publishes records with ``set_records`` (harness/dns_server.py)."""
    dns_server.reset()
    yield dns_server
    dns_server.reset()


# --- SMTP proxy (tests/test_smtp_*.py): a real SMTP sink as smarthost, and tempalias in front


@pytest.fixture(scope="session")
def smtp_sink_server():
    """One SMTP sink for the session (harness/smtp_peer.py); ``smtp_sink`` resets it per test."""
    sink = SmtpPeer().start()
    yield sink
    sink.stop()


@pytest.fixture
def smtp_sink(smtp_sink_server):
    smtp_sink_server.reset()
    yield smtp_sink_server
    smtp_sink_server.release.set()


@pytest.fixture(scope="session")
def smtp_service(service_factory, smtp_sink_server):
    """tempalias relaying to the session's sink; short smarthost timeout for the stall tests.
    ARC off: the message streams through as it comes (the sealing path has its own service,
    ``sealing_service``)."""
    return service_factory(env={
        "TEMPALIAS_ARC": "no",
        "TEMPALIAS_SMARTHOST": smtp_sink_server.address,
        "TEMPALIAS_SMARTHOST_TIMEOUT": "3",
        "TEMPALIAS_SRS_SECRET": "test-srs-secret",
        "TEMPALIAS_SMTP_MAX_BAD_COMMANDS": "5",
    })


@pytest.fixture(scope="session")
def sealing_service(service_factory, smtp_sink_server):
    """tempalias as deployed: ARC on (messages held whole, checked and sealed), replies possible;
    its DKIM key is made on first start in its data directory."""
    return service_factory(env={
        "TEMPALIAS_SMARTHOST": smtp_sink_server.address,
        "TEMPALIAS_SMARTHOST_TIMEOUT": "3",
        "TEMPALIAS_SRS_SECRET": "test-srs-secret",
    })


@pytest.fixture
def own_peer():
    """``own_peer(**options)``: an SMTP peer of the test's own (``SmtpPeer`` options: a smarthost
    without PIPELINING or SMTPUTF8, with STARTTLS or AUTH, ...); each is stopped after the test."""
    peers: list[SmtpPeer] = []

    def start(**options) -> SmtpPeer:
        peer = SmtpPeer(**options).start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
