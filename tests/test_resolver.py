"""The one resolver of every look-up, against a real DNS server on loopback (harness/dns_server.py)."""

from __future__ import annotations

import time

import dns.exception
import dns.resolver
import pytest

from tempalias.config import parse_listen
from tempalias.resolver import make_resolver

NAME = "host.resolver.test"


@pytest.fixture
def resolver_for(dns_zone):
    def make(timeout: float = 2.0) -> dns.resolver.Resolver:
        return make_resolver((parse_listen(dns_zone.address),), timeout)

    return make


def test_it_asks_the_configured_server_and_keeps_no_cache(dns_zone, resolver_for):
    resolver = resolver_for()
    dns_zone.set_records(NAME, "A", ["192.0.2.1"])
    assert [r.address for r in resolver.resolve(NAME, "A")] == ["192.0.2.1"]
    dns_zone.set_records(NAME, "A", ["192.0.2.2"])  # published a moment later: seen at once
    assert [r.address for r in resolver.resolve(NAME, "A")] == ["192.0.2.2"]
    assert dns_zone.queries[NAME] == 2


def test_a_servfail_is_an_answer_not_retried(dns_zone, resolver_for):
    dns_zone.fail(NAME, "servfail")
    with pytest.raises(dns.resolver.NoNameservers):
        resolver_for().resolve(NAME, "A")
    assert dns_zone.queries[NAME] == 1


def test_a_look_up_lasts_the_timeout_not_dnspythons_own(dns_zone, resolver_for):
    dns_zone.fail(NAME, "timeout")
    started = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        resolver_for(timeout=0.3).resolve(NAME, "A")
    assert time.monotonic() - started < 4.0  # dnspython's own lifetime is 5 s
