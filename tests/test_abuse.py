"""The abuse policy's decisions, called the way the SMTP server and the API call them.

Real Redis (the session's) and a real DNS server (tests/dns_server.py); no SMTP server is involved:
these are the functions it calls, and what they answer is what its client will read.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets

import pytest

from harness.processes import wait_for
from tempalias.abuse import AbusePolicy, client_ip, parse_ip
from tempalias.config import Config, ConfigError, Rate, load_config, parse_listen, parse_rate
from tempalias.embedded_redis import free_loopback_port
from tempalias.rbl import RblChecker
from tempalias.store import RateLimiter, connect

OFF = dict(create_rate_per_ip=None, create_daily_per_ip=None, create_daily_per_target=None,
           smtp_connections_per_ip=None, smtp_messages_per_ip=None, smtp_concurrent_per_ip=0,
           alias_message_rate=None)


@pytest.fixture
def policy_for(redis_client, dns_server):
    """A policy with every limit off but those given, on the session's Redis and test DNS."""

    def make(client=None, defaults: tuple[str, ...] = (), **settings) -> AbusePolicy:
        """``defaults``: limits left at the service's default rather than off."""
        off = {name: value for name, value in OFF.items() if name not in defaults}
        config = Config(domains=("tempalias.test",), dns_servers=(parse_listen(dns_server.address),),
                        **{**off, **settings})
        rbl = RblChecker(config.rbl_zones, config.dns_servers, config.rbl_timeout)
        return AbusePolicy(config, RateLimiter(client or redis_client), rbl)

    return make


def fresh_ip() -> str:
    """A client address no other test used, so the shared Redis holds no buckets for it."""
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


# --- on_connect


def test_a_listed_client_gets_554_naming_the_zone(policy_for):
    refusal = policy_for(rbl_zones=("bl.test",)).on_connect("127.0.0.2")
    assert refusal.smtp_reply == "554 5.7.1 127.0.0.2 listed in bl.test"
    assert refusal.kind == "rbl-listed" and refusal.http_status == 403


def test_an_unlisted_client_is_served(policy_for):
    assert policy_for(rbl_zones=("bl.test",)).on_connect("127.0.0.5") is None


def test_trusted_networks_are_never_checked_nor_limited(policy_for):
    policy = policy_for(rbl_zones=("bl.test",), smtp_connections_per_ip=Rate(1, 3600.0),
                        trusted_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    assert [policy.on_connect("127.0.0.2") for _ in range(3)] == [None, None, None]
    assert [policy.on_message("127.0.0.2") for _ in range(3)] == [None, None, None]


def test_the_default_trusted_network_is_only_localhost(policy_for):
    policy = policy_for(smtp_connections_per_ip=Rate(1, 3600.0))
    assert policy.on_connect("127.0.0.1") is None and policy.on_connect("127.0.0.1") is None
    assert policy.on_connect("::1") is None and policy.on_connect("::1") is None
    other = fresh_ip()
    assert policy.on_connect(other) is None
    assert policy.on_connect(other) is not None


def test_rbl_failure_fails_open_by_default(policy_for, caplog):
    caplog.set_level(logging.WARNING, "tempalias.rbl")
    policy = policy_for(rbl_zones=("broken.test",))
    assert policy.on_connect("127.0.0.2") is None
    assert policy.rbl.stats.counts["servfail"] == 1
    assert "broken.test" in caplog.text


def test_the_status_line_counts_refusals_and_dns_failures(policy_for):
    policy = policy_for(rbl_zones=("bl.test", "broken.test"))
    assert policy.status_line() == "nothing yet"
    policy.on_connect("127.0.0.2")
    policy.on_connect("127.0.0.5")
    status = policy.status_line().split()
    assert "rbl-listed=1" in status and "dns-servfail=2" in status and "dns-checks=2" in status


def test_rbl_failure_is_a_421_when_failing_closed(policy_for):
    policy = policy_for(rbl_zones=("silent.test",), rbl_timeout=0.3, rbl_fail_closed=True)
    refusal = policy.on_connect("127.0.0.5")
    assert (refusal.code, refusal.enhanced) == (421, "4.7.0")
    assert refusal.kind == "rbl-unavailable" and refusal.http_status == 503


def test_too_many_connections_per_minute_get_421_until_the_window_passes(policy_for):
    policy = policy_for(smtp_connections_per_ip=Rate(2, 4.0))
    ip = fresh_ip()
    assert policy.on_connect(ip) is None
    assert policy.on_connect(ip) is None
    refusal = policy.on_connect(ip)
    assert refusal.smtp_reply.startswith(f"421 4.7.0 too many connections from {ip}")
    assert refusal.retry_after >= 1
    wait_for(lambda: policy.on_connect(ip) is None, 10, "the connection rate to recover")


def test_open_connections_per_client_are_bounded_across_processes(policy_for, redis_server):
    ip = fresh_ip()
    first = policy_for(smtp_concurrent_per_ip=2)
    second = policy_for(connect(redis_server.url, timeout=5.0), smtp_concurrent_per_ip=2)
    assert first.on_connect(ip) is None
    assert second.on_connect(ip) is None
    refusal = first.on_connect(ip)
    assert (refusal.code, refusal.enhanced) == (421, "4.7.0")
    assert "open connections" in refusal.text
    second.on_disconnect(ip)
    assert first.on_connect(ip) is None
    assert second.on_connect(ip) is not None


def test_a_refused_connection_holds_no_slot(policy_for):
    ip = fresh_ip()
    policy = policy_for(smtp_concurrent_per_ip=1)
    assert policy.on_connect(ip) is None
    assert policy.on_connect(ip) is not None
    policy.on_disconnect(ip)
    assert policy.on_connect(ip) is None


# --- on_message and on_alias_delivery


def test_too_many_messages_per_client_get_451_and_recover(policy_for):
    policy = policy_for(smtp_messages_per_ip=Rate(2, 4.0))
    ip = fresh_ip()
    assert policy.on_message(ip) is None and policy.on_message(ip) is None
    refusal = policy.on_message(ip)
    assert (refusal.code, refusal.enhanced) == (451, "4.7.1")
    assert refusal.retry_after >= 1
    wait_for(lambda: policy.on_message(ip) is None, 10, "the message rate to recover")


def test_too_many_messages_for_one_alias_get_451_and_recover(policy_for):
    policy = policy_for(alias_message_rate=Rate(2, 4.0))
    alias_id = secrets.token_hex(4)
    assert policy.on_alias_delivery(alias_id) is None
    assert policy.on_alias_delivery(alias_id.upper()) is None  # ids match case-insensitively
    refusal = policy.on_alias_delivery(alias_id)
    assert (refusal.code, refusal.enhanced) == (451, "4.7.1")
    assert policy.on_alias_delivery(secrets.token_hex(4)) is None  # another alias is unaffected
    wait_for(lambda: policy.on_alias_delivery(alias_id) is None, 10, "the alias rate to recover")


def test_by_default_an_alias_takes_30_messages_an_hour(policy_for):
    policy = policy_for(defaults=("alias_message_rate",))
    alias_id = secrets.token_hex(4)
    assert [policy.on_alias_delivery(alias_id, fresh_ip()) for _ in range(30)] == [None] * 30
    refusal = policy.on_alias_delivery(alias_id, fresh_ip())  # whoever sends it
    assert (refusal.code, refusal.enhanced) == (451, "4.7.1")
    assert 60 < refusal.retry_after <= 120  # a token every 2 minutes: 30 an hour, not a minute
    assert policy.on_alias_delivery(alias_id, "127.0.0.1") is None  # trusted: never limited


# --- alias creation (what the API asks)


def test_creation_is_limited_per_target_whatever_the_client(policy_for, caplog):
    caplog.set_level(logging.INFO, "tempalias.abuse")
    policy = policy_for(create_daily_per_target=Rate(2, 86400.0))
    target = f"victim{secrets.token_hex(3)}@example.org"
    assert policy.on_alias_creation(fresh_ip(), target) is None
    # plus-addressing and case do not make another target
    assert policy.on_alias_creation(fresh_ip(), target.replace("@", "+x@").upper()) is None
    refusal = policy.on_alias_creation(fresh_ip(), target)
    assert refusal.kind == "rate-limited" and refusal.http_status == 429
    assert refusal.retry_after > 3600  # one token a day comes back every 12 hours
    assert policy.on_alias_creation(fresh_ip(), "someone.else" + target) is None
    refused = [r for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refused) == 1
    assert "per-target" in refused[0].getMessage()
    assert target.split("@")[0] not in caplog.text  # the target is never logged


def test_creation_from_a_listed_client_is_refused(policy_for):
    refusal = policy_for(rbl_zones=("bl.test",)).on_alias_creation("127.0.0.2", "a@example.org")
    assert refusal.kind == "rbl-listed" and refusal.http_status == 403


def test_ipv6_clients_are_limited_per_64(policy_for):
    policy = policy_for(smtp_messages_per_ip=Rate(1, 3600.0))
    prefix = f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}"
    assert policy.on_message(f"{prefix}::1") is None
    assert policy.on_message(f"{prefix}::2") is not None


# --- Redis down: fail open


def test_an_unreachable_redis_fails_open_and_is_counted(policy_for, caplog):
    caplog.set_level(logging.WARNING, "tempalias.abuse")
    dead = connect(f"redis://127.0.0.1:{free_loopback_port()}/0", timeout=0.5)
    policy = policy_for(dead, smtp_connections_per_ip=Rate(1, 60.0), smtp_concurrent_per_ip=1,
                        smtp_messages_per_ip=Rate(1, 60.0), alias_message_rate=Rate(1, 60.0),
                        create_rate_per_ip=Rate(1, 60.0))
    ip = fresh_ip()
    for _ in range(2):
        assert policy.on_connect(ip) is None
        assert policy.on_message(ip) is None
        assert policy.on_alias_delivery("abcdef") is None
        assert policy.on_alias_creation(ip, "a@example.org") is None
    policy.on_disconnect(ip)
    assert policy.stats["redis-unavailable"] >= 8
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
