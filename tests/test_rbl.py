"""RBL look-ups against a real DNS server on loopback (harness/dns_server.py)."""

from __future__ import annotations

import ipaddress

import pytest

from tempalias.config import parse_listen
from tempalias.rbl import RblChecker, reversed_name

ip = ipaddress.ip_address


@pytest.fixture
def checker_for(dns_server):
    def make(*zones: str, timeout: float = 2.0) -> RblChecker:
        return RblChecker(zones, (parse_listen(dns_server.address),), timeout)

    return make


def test_ipv4_is_looked_up_as_reversed_octets():
    assert reversed_name(ip("192.0.2.7"), "zen.example") == "7.2.0.192.zen.example."


def test_ipv6_is_looked_up_as_reversed_nibbles():
    name = reversed_name(ip("2001:db8::1"), "bl.example.")
    assert name == "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.bl.example."


def test_a_listed_ipv4_address_is_listed(checker_for):
    verdict = checker_for("bl.test").check(ip("127.0.0.2"))
    assert verdict.listed_in == "bl.test"
    assert verdict.failed == ()


def test_a_listed_ipv6_address_is_listed(checker_for):
    assert checker_for("bl.test").check(ip("2001:db8::bad")).listed_in == "bl.test"


def test_an_ipv4_mapped_address_is_looked_up_as_ipv4(checker_for):
    assert checker_for("bl.test").check(ip("::ffff:127.0.0.2")).listed_in == "bl.test"


def test_nxdomain_is_not_listed(checker_for):
    verdict = checker_for("bl.test").check(ip("127.0.0.5"))
    assert not verdict.listed
    assert verdict.failed == ()


def test_any_other_code_inside_127_8_is_listed(checker_for):
    assert checker_for("codes.test").check(ip("127.0.0.30")).listed_in == "codes.test"


def test_an_answer_outside_127_8_is_not_a_listing(checker_for):
    assert not checker_for("codes.test").check(ip("127.0.0.31")).listed


@pytest.mark.parametrize("client", ["127.0.0.2", "127.0.0.32"])
def test_blocked_resolver_codes_are_not_a_listing(checker_for, client):
    zone = "refuses.test" if client == "127.0.0.2" else "codes.test"
    checker = checker_for(zone)
    verdict = checker.check(ip(client))
    assert not verdict.listed
    assert verdict.failed == ()
    assert checker.stats.counts["resolver-refused"] == 1


def test_a_timeout_fails_open_and_is_counted(checker_for):
    checker = checker_for("silent.test", timeout=0.3)
    verdict = checker.check(ip("127.0.0.2"))
    assert not verdict.listed
    assert verdict.failed == ("silent.test",)
    assert checker.stats.counts["timeout"] == 1


def test_a_servfail_fails_open_and_is_counted(checker_for):
    checker = checker_for("broken.test")
    verdict = checker.check(ip("127.0.0.2"))
    assert not verdict.listed
    assert verdict.failed == ("broken.test",)
    assert checker.stats.counts["servfail"] == 1


def test_every_zone_is_asked_and_a_dead_one_does_not_hide_a_listing(checker_for):
    verdict = checker_for("silent.test", "broken.test", "bl.test", timeout=0.3).check(
        ip("127.0.0.20"))
    assert verdict.listed_in == "bl.test"
    assert set(verdict.failed) == {"silent.test", "broken.test"}


def test_answers_are_cached_for_their_ttl(checker_for, dns_server):
    checker = checker_for("bl.test")
    listed_name = reversed_name(ip("127.0.0.21"), "bl.test").rstrip(".")
    clean_name = reversed_name(ip("127.0.0.22"), "bl.test").rstrip(".")
    for _ in range(3):
        assert checker.check(ip("127.0.0.21")).listed
        assert not checker.check(ip("127.0.0.22")).listed
    assert dns_server.queries[listed_name] == 1
    assert dns_server.queries[clean_name] == 1
    assert checker.stats.counts["cache-hits"] == 4


def test_failures_are_not_cached(checker_for, dns_server):
    checker = checker_for("broken.test")
    name = reversed_name(ip("127.0.0.23"), "broken.test").rstrip(".")
    checker.check(ip("127.0.0.23"))
    checker.check(ip("127.0.0.23"))
    assert dns_server.queries[name] == 2


def test_no_zones_means_no_look_up(dns_server):
    checker = RblChecker((), (parse_listen(dns_server.address),))
    assert not checker.enabled
    assert not checker.check(ip("127.0.0.2")).listed
