"""The abuse policy's decisions, called the way the SMTP server and the API call them.

Real Redis (the session's) and a real DNS server (harness/dns_server.py); no SMTP server is involved:
these are the functions it calls, and what they answer is what its client will read.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets

import pytest

from tempalias.abuse import (DOMAIN_LIMITS, PER, RATE_LIMITED, RBL_LISTED, RBL_UNAVAILABLE, STAGES, AbusePolicy,
                             Refusal, client_ip, parse_ip)
from tempalias.config import Config, ConfigError, Rate, load_config, parse_listen, parse_rate
from tempalias.embedded_redis import free_loopback_port
from tempalias.rbl import RblChecker
from tempalias.store import AliasStore, RateLimited, RateLimiter, connect, keys

OFF = dict(create_rate_per_ip=None, create_daily_per_ip=None, create_daily_per_target=None,
           smtp_connections_per_ip=None, smtp_messages_per_ip=None, smtp_concurrent_per_ip=0,
           alias_message_rate=None, domain_rate_per_ip=None, domain_daily_aliases=0)
HOUR_MS = 3_600_000


@pytest.fixture
def policy_for(redis_client, dns_server, clock):
    """A policy with every limit off but those given, on the session's Redis and test DNS, its
    limits on the ``clock`` fixture's time."""
    limiters = []

    def make(client=None, defaults: tuple[str, ...] = (), **settings) -> AbusePolicy:
        """``defaults``: limits left at the service's default rather than off."""
        off = {name: value for name, value in OFF.items() if name not in defaults}
        abuse = Config(**{**off, **settings}).section("abuse")
        rbl = RblChecker(abuse.rbl_zones, (parse_listen(dns_server.address),), abuse.rbl_timeout)
        limiters.append(RateLimiter(client or redis_client, clock=clock))
        return AbusePolicy(abuse, limiters[-1], rbl)

    yield make
    for limiter in limiters:
        limiter.close()


def fresh_ip() -> str:
    """A client address no other test used, so the shared Redis holds no buckets for it."""
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def connect_from(policy: AbusePolicy, ip: str) -> Refusal | None:
    """on_connect as the server calls it; a served connection keeps its handle until the test ends."""
    return policy.on_connect(ip)[1]


def test_every_limit_of_a_stage_names_a_setting_and_a_subject():
    abuse = Config().section("abuse")
    for stage, limits in STAGES.items():
        for limit in limits:
            assert hasattr(abuse, limit.setting), (stage, limit)
            assert limit.per in PER, (stage, limit)
    names = [limit.name for limits in STAGES.values() for limit in limits]
    assert len(names) == len(set(names))


# --- on_connect


def test_a_listed_client_is_refused_naming_the_zone(policy_for):
    client, refusal = policy_for(rbl_zones=("bl.test",)).on_connect("127.0.0.2")
    assert refusal == Refusal(RBL_LISTED, "bl.test", "127.0.0.2")
    assert client.lease is None  # nothing is held for a refused connection


def test_an_unlisted_client_is_served(policy_for):
    assert connect_from(policy_for(rbl_zones=("bl.test",)), "127.0.0.5") is None


def test_trusted_networks_are_never_checked_nor_limited(policy_for):
    policy = policy_for(rbl_zones=("bl.test",), smtp_connections_per_ip=Rate(1, 3600.0),
                        smtp_messages_per_ip=Rate(1, 3600.0), alias_message_rate=Rate(1, 3600.0),
                        trusted_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    clients = [policy.on_connect("127.0.0.2") for _ in range(3)]
    assert [refusal for _, refusal in clients] == [None, None, None]
    client = clients[0][0]
    assert [policy.on_message(client) for _ in range(3)] == [None, None, None]
    assert policy.alias_limits(client) == {}


def test_the_default_trusted_network_is_only_localhost(policy_for):
    policy = policy_for(smtp_connections_per_ip=Rate(1, 3600.0))
    assert connect_from(policy, "127.0.0.1") is None and connect_from(policy, "127.0.0.1") is None
    assert connect_from(policy, "::1") is None and connect_from(policy, "::1") is None
    other = fresh_ip()
    assert connect_from(policy, other) is None
    assert connect_from(policy, other) is not None


def test_rbl_failure_fails_open_by_default(policy_for, caplog):
    caplog.set_level(logging.WARNING, "tempalias.rbl")
    policy = policy_for(rbl_zones=("broken.test",))
    assert connect_from(policy, "127.0.0.2") is None
    assert policy.rbl.stats.counts["servfail"] == 1
    assert "broken.test" in caplog.text


def test_the_status_line_counts_refusals_and_dns_failures(policy_for):
    policy = policy_for(rbl_zones=("bl.test", "broken.test"))
    assert policy.status_line() == "nothing yet"
    policy.on_connect("127.0.0.2")
    policy.on_connect("127.0.0.5")
    status = policy.status_line().split()
    assert "rbl-listed=1" in status and "dns-servfail=2" in status and "dns-checks=2" in status


def test_rbl_failure_refuses_when_failing_closed(policy_for):
    policy = policy_for(rbl_zones=("silent.test",), rbl_timeout=0.3, rbl_fail_closed=True)
    assert connect_from(policy, "127.0.0.5") == Refusal(RBL_UNAVAILABLE, "silent.test", "127.0.0.5", 60)


def test_too_many_connections_are_refused_until_the_window_passes(policy_for, clock):
    policy = policy_for(smtp_connections_per_ip=Rate(2, 4.0))
    ip = fresh_ip()
    assert connect_from(policy, ip) is None
    assert connect_from(policy, ip) is None
    assert connect_from(policy, ip) == Refusal(RATE_LIMITED, "smtp-connect", ip, 2)
    clock.advance(2.0)
    assert connect_from(policy, ip) is None


def test_open_connections_per_client_are_bounded_across_processes(policy_for, redis_server):
    ip = fresh_ip()
    other_redis = connect(redis_server.url, timeout=5.0)
    first = policy_for(smtp_concurrent_per_ip=2)
    second = policy_for(other_redis, smtp_concurrent_per_ip=2)
    first_client, refusal = first.on_connect(ip)
    assert refusal is None
    second_client, refusal = second.on_connect(ip)
    assert refusal is None
    assert connect_from(first, ip) == Refusal(RATE_LIMITED, "open", ip, 60)
    second.on_disconnect(second_client)
    assert connect_from(first, ip) is None
    assert connect_from(second, ip) is not None
    other_redis.close()


def test_a_disconnect_gives_back_that_connections_slot_only(policy_for, redis_client):
    """Issue 12: the server gives back the lease of *its* connection, not some lease of the IP."""
    policy = policy_for(smtp_concurrent_per_ip=3)
    ip = fresh_ip()
    first, _ = policy.on_connect(ip)
    second, _ = policy.on_connect(ip)
    kept = second.lease.lease_id
    policy.on_disconnect(first)  # the first to connect is the first to leave
    policy.on_disconnect(first)  # twice is once
    assert redis_client.zrange(keys.lease_key(second.subject), 0, -1) == [kept]


def test_a_closed_connections_slot_goes_back_with_the_clients_next_connection(policy_for,
                                                                              redis_client):
    policy = policy_for(smtp_concurrent_per_ip=4)
    ip = fresh_ip()
    first, _ = policy.on_connect(ip)
    assert policy.on_disconnect_later(first)  # waits for give_back_pending...
    assert redis_client.zcard(keys.lease_key(first.subject)) == 1
    second, refusal = policy.on_connect(ip)  # ...or the next connection, in its one write
    assert refusal is None
    assert redis_client.zrange(keys.lease_key(first.subject), 0, -1) == [second.lease.lease_id]
    policy.give_back_pending()
    assert redis_client.zcard(keys.lease_key(first.subject)) == 1


def test_pending_slots_of_every_client_go_back_together(policy_for, redis_client):
    policy = policy_for(smtp_concurrent_per_ip=4, smtp_messages_per_ip=Rate(1, 3600.0))
    clients = [policy.on_connect(fresh_ip())[0] for _ in range(3)]
    assert all(policy.on_disconnect_later(client) for client in clients)
    assert policy.on_disconnect_later(clients[0]) is False  # given back once
    policy.give_back_pending()
    for client in clients:
        assert redis_client.zcard(keys.lease_key(client.subject)) == 0
        again, _ = policy.on_connect(str(client.ip))
        assert policy.on_message(again) is None  # the unspent token came back too


def test_a_client_near_its_limit_gets_its_slot_back_at_once(policy_for, redis_client):
    policy = policy_for(smtp_concurrent_per_ip=2)
    ip = fresh_ip()
    first, _ = policy.on_connect(ip)
    second, _ = policy.on_connect(ip)  # both slots in use
    assert policy.on_disconnect_later(second) is False
    assert redis_client.zrange(keys.lease_key(first.subject), 0, -1) == [first.lease.lease_id]


def test_a_refused_connection_holds_no_slot(policy_for):
    ip = fresh_ip()
    policy = policy_for(smtp_concurrent_per_ip=1)
    client, _ = policy.on_connect(ip)
    refused_client, refusal = policy.on_connect(ip)
    assert refusal is not None and refused_client.lease is None
    policy.on_disconnect(refused_client)  # what the server does not do, and harmless
    assert connect_from(policy, ip) is not None
    policy.on_disconnect(client)
    assert connect_from(policy, ip) is None


# --- on_message and the per-alias limits


def test_too_many_messages_per_client_are_refused_and_recover(policy_for, clock):
    policy = policy_for(smtp_messages_per_ip=Rate(2, 4.0))
    ip = fresh_ip()
    client, _ = policy.on_connect(ip)
    assert policy.on_message(client) is None and policy.on_message(client) is None
    assert policy.on_message(client) == Refusal(RATE_LIMITED, "smtp-message", ip, 2)
    clock.advance(2.0)
    assert policy.on_message(client) is None


def test_the_first_message_is_paid_at_connect_and_given_back_unsent(policy_for):
    """One round trip less per connection: the connect script takes the first message's token;
    a connection that sent no message gives it back when it ends."""
    policy = policy_for(smtp_messages_per_ip=Rate(2, 3600.0))
    ip = fresh_ip()
    idle, _ = policy.on_connect(ip)
    busy, _ = policy.on_connect(ip)
    assert policy.on_message(busy) is None  # its own paid token
    assert policy.on_message(busy) is not None  # the idle connection holds the other one
    policy.on_disconnect(idle)
    assert policy.on_message(busy) is None
    assert policy.on_message(busy) is not None


def test_messages_per_alias_are_taken_with_its_use_and_recover(policy_for, redis_client, clock):
    policy = policy_for(alias_message_rate=Rate(2, 4.0))
    store = AliasStore(redis_client, clock=clock)
    client, _ = policy.on_connect(fresh_ip())
    limits = policy.alias_limits(client)
    alias_id = store.create("a@example.org", HOUR_MS, None).alias.id
    store.release(store.reserve(alias_id, limits))
    store.release(store.reserve(alias_id.upper(), limits))  # ids match case-insensitively
    with pytest.raises(RateLimited) as refused:
        store.reserve(alias_id, limits)
    assert policy.on_alias_throttled(alias_id, client, refused.value.throttled) == \
        Refusal(RATE_LIMITED, "alias-message", str(client.ip), 2)
    other = store.create("a@example.org", HOUR_MS, None).alias.id
    store.release(store.reserve(other, limits))  # another alias is unaffected
    clock.advance(2.0)
    store.release(store.reserve(alias_id, limits))


# --- alias creation (what the API asks)


def test_creation_is_limited_per_target_whatever_the_client(policy_for, caplog):
    caplog.set_level(logging.INFO, "tempalias.abuse")
    policy = policy_for(create_daily_per_target=Rate(2, 86400.0))
    target = f"victim{secrets.token_hex(3)}@example.org"
    assert policy.on_alias_creation(fresh_ip(), target) is None
    # plus-addressing and case do not make another target
    assert policy.on_alias_creation(fresh_ip(), target.replace("@", "+x@").upper()) is None
    ip = fresh_ip()
    # one token a day comes back every 12 hours
    assert policy.on_alias_creation(ip, target) == Refusal(RATE_LIMITED, "create-target", ip, 43200)
    assert policy.on_alias_creation(fresh_ip(), "someone.else" + target) is None
    assert target.split("@")[0] not in caplog.text  # the target is never logged


def test_creation_from_a_listed_client_is_refused(policy_for):
    refusal = policy_for(rbl_zones=("bl.test",)).on_alias_creation("127.0.0.2", "a@example.org")
    assert refusal == Refusal(RBL_LISTED, "bl.test", "127.0.0.2")


# --- custom domains: registrations per client, aliases per domain


def test_domain_registrations_are_limited_per_client_and_by_block_lists(policy_for, clock):
    policy = policy_for(domain_rate_per_ip=Rate(2, 86400.0), rbl_zones=("bl.test",))
    ip = fresh_ip()
    assert policy.on_domain_registration(ip) is None
    assert policy.on_domain_registration(ip) is None
    # one registration a day comes back every 12 hours
    assert policy.on_domain_registration(ip) == Refusal(RATE_LIMITED, "domain-register", ip,
                                                        43200)
    assert policy.on_domain_registration(fresh_ip()) is None
    clock.advance(43200)
    assert policy.on_domain_registration(ip) is None
    assert policy.on_domain_registration("127.0.0.2") == Refusal(RBL_LISTED, "bl.test",
                                                                 "127.0.0.2")
    assert policy.on_domain_registration("127.0.0.1") is None  # trusted: never limited


def test_a_custom_domain_gets_its_daily_aliases_whoever_asks(policy_for, redis_client):
    policy = policy_for(domain_daily_aliases=2)
    domain = f"d{secrets.token_hex(4)}.example.org"
    assert policy.on_custom_alias(fresh_ip(), domain) is None
    assert policy.on_custom_alias(fresh_ip(), domain) is None
    ip = fresh_ip()
    assert policy.on_custom_alias(ip, domain) == Refusal(RATE_LIMITED, "domain-alias", ip, 43200)
    assert policy.on_custom_alias(ip, f"other-{domain}") is None
    # the bucket is the domain's own, in its slot: erased with the domain
    assert redis_client.exists(keys.limit_key(domain, "domain-alias"))
    assert "domain-alias" in DOMAIN_LIMITS and "alias-message" in DOMAIN_LIMITS
    assert policy_for().on_custom_alias(ip, f"off-{domain}") is None  # 0: off


def test_ipv6_clients_are_limited_per_64(policy_for):
    policy = policy_for(smtp_messages_per_ip=Rate(1, 3600.0))
    prefix = f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}"
    first, _ = policy.on_connect(f"{prefix}::1")
    second, _ = policy.on_connect(f"{prefix}::2")
    assert policy.on_message(first) is None
    assert policy.on_message(second) is not None


# --- Redis down: fail open


def test_an_unreachable_redis_fails_open_and_is_counted(policy_for, caplog):
    caplog.set_level(logging.WARNING, "tempalias.abuse")
    dead = connect(f"redis://127.0.0.1:{free_loopback_port()}/0", timeout=0.5)
    policy = policy_for(dead, smtp_connections_per_ip=Rate(1, 60.0), smtp_concurrent_per_ip=1,
                        smtp_messages_per_ip=Rate(1, 60.0), alias_message_rate=Rate(1, 60.0),
                        create_rate_per_ip=Rate(1, 60.0))
    ip = fresh_ip()
    for _ in range(2):
        client, refusal = policy.on_connect(ip)
        assert refusal is None
        assert policy.on_message(client) is None
        assert policy.on_alias_creation(ip, "a@example.org") is None
        policy.on_disconnect(client)
    assert policy.stats["redis-unavailable"] == 6
    assert "failing open" in caplog.text
    dead.close()


# --- client IP and settings


PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    assert client_ip("192.0.2.1", "198.51.100.7", PROXIES) == parse_ip("192.0.2.1")
    assert client_ip("10.0.0.1", "198.51.100.7", PROXIES) == parse_ip("198.51.100.7")


def test_forwarded_for_takes_the_right_most_hop_that_is_not_a_proxy():
    chain = "203.0.113.9, 198.51.100.7, 10.1.1.1"
    assert client_ip("10.0.0.1", chain, PROXIES) == parse_ip("198.51.100.7")


def test_forwarded_for_junk_makes_an_unknown_client():
    assert client_ip("10.0.0.1", "203.0.113.9, not-an-ip", PROXIES) is None
    assert client_ip("10.0.0.1", "[2001:db8::1]:443", PROXIES) == parse_ip("2001:db8::1")
    assert client_ip("10.0.0.1", "198.51.100.7:5555", PROXIES) == parse_ip("198.51.100.7")


def test_rates_are_parsed_and_zero_switches_them_off():
    assert parse_rate("5/50s") == Rate(5, 50.0)
    assert parse_rate("20/1d") == Rate(20, 86400.0)
    assert parse_rate("100/1h") == Rate(100, 3600.0)
    assert parse_rate("0") is None
    config = load_config(environ={"TEMPALIAS_SMTP_MESSAGES_PER_IP": "0",
                                  "TEMPALIAS_TRUSTED_NETWORKS": "127.0.0.0/8, ::1/128",
                                  "TEMPALIAS_DNS_SERVERS": "127.0.0.1:5353, ::1",
                                  "TEMPALIAS_RBL_FAIL_CLOSED": "yes"})
    assert config.smtp_messages_per_ip is None
    assert config.trusted_networks == (ipaddress.ip_network("127.0.0.0/8"),
                                       ipaddress.ip_network("::1/128"))
    assert [str(server) for server in config.dns_servers] == ["127.0.0.1:5353", "[::1]:53"]
    assert config.rbl_fail_closed is True


@pytest.mark.parametrize("name,value", [
    ("TEMPALIAS_CREATE_RATE_PER_IP", "five a minute"),
    ("TEMPALIAS_CREATE_RATE_PER_IP", "0/1m"),
    ("TEMPALIAS_TRUSTED_PROXIES", "10.0.0.0/33"),
    ("TEMPALIAS_DNS_SERVERS", "resolver.example:53"),
    ("TEMPALIAS_RBL_FAIL_CLOSED", "maybe"),
])
def test_bad_abuse_settings_are_a_one_line_config_error(name, value):
    with pytest.raises(ConfigError) as caught:
        load_config(environ={name: value})
    assert name in str(caught.value) and "\n" not in str(caught.value)
