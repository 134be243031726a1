"""Custom-domain DNS checks against a real DNS server on loopback (harness/dns_server.py)."""

from __future__ import annotations

import re
import time

import pytest

from tempalias.config import parse_listen
from tempalias.domaincheck import (
    MAX_DOMAIN_LENGTH,
    CheckResult,
    DomainChecker,
    Record,
    expected_records,
    verification_value,
)
from tempalias.resolver import make_resolver

DOMAIN = "temp.example.test"
TXT_NAME = "_tempalias.temp.example.test"
MX_HOST = "mx.tempalias.test"
SECRET = b"s" * 32
TOKEN_HASH = "ab" * 32
VALUE = verification_value(SECRET, DOMAIN, TOKEN_HASH)


@pytest.fixture
def checker_for(dns_zone):
    def make(timeout: float = 2.0) -> DomainChecker:
        return DomainChecker(make_resolver((parse_listen(dns_zone.address),), timeout), timeout)

    return make


@pytest.fixture
def check(checker_for):
    def run(domain: str = DOMAIN, value: str = VALUE) -> CheckResult:
        return checker_for().check(domain, MX_HOST, value)

    return run


def publish(zone, mx=(f"10 {MX_HOST}",), txt=(VALUE,)) -> None:
    zone.set_records(DOMAIN, "MX", list(mx))
    zone.set_records(TXT_NAME, "TXT", list(txt))


def test_the_records_to_publish_are_an_mx_and_a_txt_fully_qualified():
    assert expected_records("Temp.Example.Test.", "MX.tempalias.test.", VALUE) == [
        Record("MX", DOMAIN, f"10 {MX_HOST}"),
        Record("TXT", TXT_NAME, VALUE),
    ]


def test_published_records_pass(dns_zone, check):
    publish(dns_zone)
    assert check() == CheckResult(ok=True, transient=False, problems=())


@pytest.mark.parametrize("other", [None, ("A", ["192.0.2.1"])], ids=["no-such-name", "no-mx"])
def test_missing_records_are_both_named(dns_zone, check, other):
    if other:
        dns_zone.set_records(DOMAIN, *other)
    result = check()
    assert not result.ok
    assert not result.transient
    mx_problem, txt_problem = result.problems
    assert "MX" in mx_problem and DOMAIN in mx_problem and MX_HOST in mx_problem
    assert "TXT" in txt_problem and TXT_NAME in txt_problem and VALUE in txt_problem
    found = "does not exist" if other is None else "no MX record at all"
    assert found in mx_problem


def test_an_mx_at_another_host_is_named_with_what_was_found(dns_zone, check):
    publish(dns_zone, mx=["10 mail.example.net", "20 backup.example.net"])
    result = check()
    assert not result.ok and not result.transient
    assert result.problems == (
        f"no MX record for {DOMAIN} points at {MX_HOST} "
        "(found: 10 mail.example.net, 20 backup.example.net)",)


def test_our_mx_among_others_passes_whatever_its_preference_and_case(dns_zone, check):
    publish(dns_zone, mx=["5 mail.example.net", "50 MX.TempAlias.Test."])
    assert check().ok


def test_a_cname_at_the_domain_is_a_problem_even_when_its_target_has_our_mx(dns_zone, check):
    dns_zone.set_records(DOMAIN, "CNAME", ["elsewhere.example.net"])
    dns_zone.set_records("elsewhere.example.net", "MX", [f"10 {MX_HOST}"])
    dns_zone.set_records(TXT_NAME, "TXT", [VALUE])
    result = check()
    assert not result.ok and not result.transient
    (problem,) = result.problems
    assert "CNAME" in problem and "elsewhere.example.net" in problem and DOMAIN in problem


def test_other_txt_strings_beside_ours_pass(dns_zone, check):
    publish(dns_zone, txt=["v=spf1 -all", VALUE, "google-site-verification=abc"])
    assert check().ok


def test_a_txt_record_split_into_several_strings_is_read_joined(dns_zone, check):
    publish(dns_zone, txt=[[VALUE[:10], VALUE[10:]]])
    assert check().ok


def test_the_value_of_another_registration_does_not_verify(dns_zone, check):
    theirs = verification_value(SECRET, DOMAIN, "cd" * 32)
    publish(dns_zone, txt=[theirs])
    result = check()
    assert not result.ok and not result.transient
    (problem,) = result.problems
    assert TXT_NAME in problem and VALUE in problem and f'"{theirs}"' in problem


def test_a_silent_server_is_transient_within_the_budget(dns_zone, checker_for):
    budget = 0.5
    dns_zone.fail(DOMAIN, "timeout")
    dns_zone.fail(TXT_NAME, "timeout")
    started = time.monotonic()
    result = checker_for(budget).check(DOMAIN, MX_HOST, VALUE)
    assert time.monotonic() - started < budget + 5.0  # the check returns; no timing beyond that
    assert not result.ok and result.transient
    assert len(result.problems) == 2
    for problem in result.problems:
        assert "did not answer" in problem and "try again later" in problem


def test_a_servfail_is_transient_and_the_other_record_is_still_judged(dns_zone, check):
    dns_zone.fail(DOMAIN, "servfail")
    result = check()
    assert not result.ok and result.transient
    mx_problem, txt_problem = result.problems
    assert DOMAIN in mx_problem and "did not answer" in mx_problem
    assert TXT_NAME in txt_problem and "did not answer" not in txt_problem


def test_a_domain_too_long_for_its_txt_name_is_a_problem_not_an_error(check):
    domain = ".".join(["a" * 60] * 4)
    assert len(domain) == MAX_DOMAIN_LENGTH + 1  # a DNS name, but _tempalias.<it> is not
    result = check(domain=domain)
    assert not result.ok and not result.transient
    (problem,) = result.problems
    assert domain in problem


def test_a_verification_value_is_one_per_registration_and_hides_the_token():
    other_token = verification_value(SECRET, DOMAIN, "cd" * 32)
    other_domain = verification_value(SECRET, "other.example.test", TOKEN_HASH)
    other_secret = verification_value(b"t" * 32, DOMAIN, TOKEN_HASH)
    assert len({VALUE, other_token, other_domain, other_secret}) == 4
    assert verification_value(SECRET, DOMAIN, TOKEN_HASH) == VALUE
    assert verification_value(SECRET, "TEMP.example.test.", TOKEN_HASH) == VALUE
    for value in (VALUE, other_token, other_domain, other_secret):
        assert re.fullmatch(r"tempalias-verify=[a-z2-7]{32}", value)
        assert TOKEN_HASH not in value and TOKEN_HASH[:16] not in value
