"""The custom-domain use cases (tempalias/domains.py), called as the doors call them.

Real parts: the session's Redis under real stores, and the test's DNS server on loopback, whose
zone each test writes (``dns_zone``). Time is the ``clock`` fixture's, so checks that come a day
later, and a grace period of three days, take no time at all.
"""

from __future__ import annotations

import secrets

import pytest

from tempalias.abuse import AbusePolicy
from tempalias.aliases import AliasRules, AliasService, CreationRefused, InvalidOrder
from tempalias.config import Config, Rate, parse_listen
from tempalias.domaincheck import DomainChecker, verification_value
from tempalias.domains import (ACTIVE, PENDING, SUSPENDED, DomainNotFound, DomainRules,
                               DomainService, DomainTaken, verification_secret)
from tempalias.resolver import make_resolver
from tempalias.store import (DOMAINS_KEY, AliasStore, DomainStore, RateLimiter, hash_token,
                             keys)

MX = "mx.tempalias.test"
OURS = ("tempalias.test", "second.test")
SECRET = verification_secret("test-srs-secret")
HOUR = 3600
GRACE = 72 * HOUR
NO_LIMITS = dict(create_rate_per_ip=None, create_daily_per_ip=None,
                 create_daily_per_target=None, domain_rate_per_ip=None, domain_daily_aliases=0)


@pytest.fixture
def alias_store(redis_client, clock):
    return AliasStore(redis_client, clock=clock)


@pytest.fixture
def domain_store(redis_client, alias_store):
    return DomainStore(redis_client, runner=alias_store.runner)


@pytest.fixture
def service_with(domain_store, dns_zone, redis_client, clock):
    """``service_with(policy=False, **limits)``: the use cases on the session's Redis and the
    test's DNS, at the ``clock``'s time; a policy with the given limits, or none (operator)."""
    limiters = []

    def make(policy: bool = False, **limits) -> DomainService:
        abuse = Config(**{**NO_LIMITS, **limits}).section("abuse")
        checker = DomainChecker(make_resolver((parse_listen(dns_zone.address),), 2.0), 2.0)
        verdicts = None
        if policy:
            limiters.append(RateLimiter(redis_client, clock=clock))
            verdicts = AbusePolicy.from_settings(abuse, limiters[-1])
        return DomainService(domain_store, checker, verdicts,
                             DomainRules(OURS, MX, GRACE * 1000), SECRET, clock=clock)

    yield make
    for limiter in limiters:
        limiter.close()


@pytest.fixture
def domains(service_with):
    return service_with()


@pytest.fixture
def domain():
    """A domain of this test alone (the session's Redis is shared)."""
    return f"d{secrets.token_hex(4)}.example.org"


def fresh_ip() -> str:
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def publish(dns_zone, records) -> None:
    """Put the records a registration asks for into the test's zone."""
    for record in records:
        dns_zone.set_records(record.name, record.type, [record.value])


def keys_of_domain(redis_client, domain: str) -> set[str]:
    return {key for key in redis_client.scan_iter(count=1000) if f"{{{domain}}}" in key}


# --- register


def test_a_registration_asks_for_an_mx_here_and_a_txt_of_its_own(domains, domain, redis_client):
    registration = domains.register(f" {domain.upper()}. ")
    assert registration.domain == domain
    mx, txt = registration.records
    assert (mx.type, mx.name, mx.value) == ("MX", domain, f"10 {MX}")
    token_hash = hash_token(registration.token)
    assert (txt.type, txt.name) == ("TXT", f"_tempalias.{domain}")
    assert txt.value == verification_value(SECRET, domain, token_hash)
    assert registration.token not in txt.value
    # the token is stored only as its hash
    stored = {key: redis_client.hgetall(key) for key in keys_of_domain(redis_client, domain)
              if redis_client.type(key) == "hash"}
    assert stored and registration.token not in repr(stored) and token_hash in repr(
        set(redis_client.scan_iter(match=keys.pending_key(domain, "*"))))
    summary = registration.summary()
    assert (summary["domain"], summary["status"], summary["token"]) == (
        domain, "pending", registration.token)
    assert summary["records"][1] == {"type": "TXT", "name": f"_tempalias.{domain}",
                                     "value": txt.value}
    # someone else's registration of the same domain has a value of its own
    other = domains.register(domain)
    assert other.records[1].value != txt.value


def test_an_internationalised_domain_is_stored_as_its_a_label_and_shown_as_its_u_label(
        domains, redis_client):
    label = f"bücher{secrets.token_hex(3)}"
    registration = domains.register(f"{label}.Example")
    a_label = registration.domain
    assert a_label.startswith("xn--") and a_label.endswith(".example")
    assert registration.summary()["domain"] == f"{label}.example"
    assert {r.name for r in registration.records} == {a_label, f"_tempalias.{a_label}"}
    assert redis_client.exists(keys.pending_key(a_label, hash_token(registration.token)))
    view = domains.show(f"{label}.example", registration.token)  # either form finds it
    assert view.summary()["domain"] == f"{label}.example" and view.status == PENDING


@pytest.mark.parametrize("name, words", [
    ("tempalias.test", "a domain of this service"),
    ("Sub.Second.Test", "a domain of this service"),
    ("localhost", "fully qualified"),
    ("nodots", "fully qualified"),
    ("a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".org", "too long"),
    ("bad_name!.example", "not a domain name"),
    ("[192.0.2.1]", "not a domain name"),
    ("xn--zz.example", "not a domain name"),
    (42, "as a string"),
])
def test_domains_that_cannot_be_registered_name_the_field(domains, name, words):
    with pytest.raises(InvalidOrder) as refused:
        domains.register(name)
    assert refused.value.field == "domain" and words in refused.value.description


def test_registrations_per_client_are_limited(service_with):
    domains = service_with(policy=True, domain_rate_per_ip=Rate(2, 86400.0))
    ip = fresh_ip()
    for _ in range(2):
        domains.register(f"d{secrets.token_hex(4)}.example.org", ip)
    with pytest.raises(CreationRefused) as refused:
        domains.register(f"d{secrets.token_hex(4)}.example.org", ip)
    assert (refused.value.refusal.limit, refused.value.refusal.retry_after) == (
        "domain-register", 43200)
    domains.register(f"d{secrets.token_hex(4)}.example.org", fresh_ip())


# --- verify


def test_verify_names_each_missing_record_then_activates_once_they_are_published(
        domains, domain, dns_zone):
    registration = domains.register(domain)
    result = domains.verify(domain, registration.token)
    assert (result.status, result.ok, result.transient) == (PENDING, False, False)
    assert len(result.problems) == 2
    assert f"no MX record for {domain} points at {MX}" in result.problems[0]
    assert f"no TXT record at _tempalias.{domain}" in result.problems[1]
    mx, txt = registration.records
    dns_zone.set_records(mx.name, "MX", [mx.value])
    result = domains.verify(domain, registration.token)
    assert len(result.problems) == 1 and "TXT" in result.problems[0]
    dns_zone.set_records(txt.name, "TXT", [txt.value])
    assert domains.verify(domain, registration.token).status == ACTIVE
    assert domains.show(domain, registration.token).status == ACTIVE
    assert domains.verify(domain, registration.token).ok  # again: still active
    with pytest.raises(DomainTaken):  # verified: nobody registers it again
        domains.register(domain)


def test_the_first_registrant_to_verify_wins_and_the_others_find_nothing(domains, domain,
                                                                       dns_zone):
    first = domains.register(domain)
    second = domains.register(domain)
    publish(dns_zone, second.records)
    # the first registrant's value is not the one published: it cannot win with it
    result = domains.verify(domain, first.token)
    assert result.status == PENDING and "each registration has its own value" in result.problems[0]
    assert domains.verify(domain, second.token).status == ACTIVE
    for attempt in (domains.verify, domains.show, domains.remove):
        with pytest.raises(DomainNotFound):
            attempt(domain, first.token)


def test_dns_that_does_not_answer_is_no_verdict(domains, domain, dns_zone):
    registration = domains.register(domain)
    publish(dns_zone, registration.records)
    dns_zone.fail(f"_tempalias.{domain}", "servfail")
    result = domains.verify(domain, registration.token)
    assert (result.status, result.transient) == (PENDING, True)
    assert "did not answer" in result.problems[0]
    dns_zone.clear_records(f"_tempalias.{domain}")
    publish(dns_zone, registration.records)
    assert domains.verify(domain, registration.token).status == ACTIVE


def test_a_stranger_learns_nothing_and_makes_no_dns_look_up(domains, domain, dns_zone):
    registration = domains.register(domain)
    for token in (None, "", "a-guess", f" {registration.token}x"):
        for attempt in (domains.verify, domains.show, domains.remove):
            with pytest.raises(DomainNotFound):
                attempt(domain, token)
    with pytest.raises(DomainNotFound):
        domains.verify("not a domain!", registration.token)
    assert dns_zone.queries[domain] == 0
    assert domains.show(domain, registration.token).status == PENDING  # nothing was removed


# --- show and remove


def test_the_owner_sees_the_records_the_status_and_the_aliases(domains, domain, dns_zone,
                                                               alias_store, domain_store,
                                                               clock):
    registration = domains.register(domain)
    view = domains.show(domain, registration.token)
    assert (view.status, view.aliases, view.checked_ms) == (PENDING, 0, None)
    assert view.records == registration.records
    assert view.expires_ms == registration.expires_ms
    publish(dns_zone, registration.records)
    verified_at = int(clock() * 1000)
    domains.verify(domain, registration.token)
    aliases = AliasService(alias_store, None, AliasRules(OURS, 30, 50, 5), domain_store)
    aliases.create("owner@example.net", domain=domain, domain_token=registration.token)
    summary = domains.show(domain, registration.token).summary()
    assert {k: summary[k] for k in ("status", "aliases", "suspended_at", "erased_at")} == {
        "status": "active", "aliases": 1, "suspended_at": None, "erased_at": None}
    assert summary["last_check"] == summary["verified_at"] is not None
    assert domain_store.get(domain, None).verified_ms == verified_at
    assert [r["type"] for r in summary["records"]] == ["MX", "TXT"]


def test_removing_an_active_domain_erases_it_with_its_aliases(domains, domain, dns_zone,
                                                             alias_store, domain_store,
                                                             redis_client):
    registration = domains.register(domain)
    publish(dns_zone, registration.records)
    domains.verify(domain, registration.token)
    aliases = AliasService(alias_store, None, AliasRules(OURS, 30, 50, 5), domain_store)
    made = aliases.create("owner@example.net", domain=domain, local_part="shop",
                          domain_token=registration.token)
    assert domains.remove(domain, registration.token) == 1
    assert keys_of_domain(redis_client, domain) == set()
    assert redis_client.zscore(DOMAINS_KEY, domain) is None
    with pytest.raises(DomainNotFound):
        domains.show(domain, registration.token)
    assert made.view.address == f"shop@{domain}"


def test_removing_a_registration_withdraws_it_alone(domains, domain):
    mine, theirs = domains.register(domain), domains.register(domain)
    assert domains.remove(domain, mine.token) == 0
    with pytest.raises(DomainNotFound):
        domains.show(domain, mine.token)
    assert domains.show(domain, theirs.token).status == PENDING


# --- the operator


def test_the_operator_verifies_whichever_registration_published_its_records(
        domains, domain, dns_zone):
    first, second = domains.register(domain), domains.register(domain)
    pending = domains.verify_as_operator(domain)
    assert pending.status == PENDING and pending.problems
    assert domains.show_as_operator(domain).registrations == 2
    publish(dns_zone, second.records)
    assert domains.verify_as_operator(domain).status == ACTIVE
    assert domains.show(domain, second.token).status == ACTIVE
    with pytest.raises(DomainNotFound):
        domains.show(domain, first.token)
    assert domains.show_as_operator(domain).status == ACTIVE
    assert domains.remove_as_operator(domain) == 0
    for attempt in (domains.verify_as_operator, domains.show_as_operator,
                    domains.remove_as_operator):
        with pytest.raises(DomainNotFound):
            attempt(domain)


# --- checks on the schedule


def test_rechecks_suspend_restore_and_erase_after_the_grace_period(
        domains, domain, dns_zone, clock, alias_store, domain_store, redis_client):
    registration = domains.register(domain)
    publish(dns_zone, registration.records)
    domains.verify(domain, registration.token)
    aliases = AliasService(alias_store, None, AliasRules(OURS, 30, 50, 5), domain_store)
    aliases.create("owner@example.net", domain=domain, local_part="shop",
                   domain_token=registration.token)
    assert domain not in domains.recheck_due()  # not due for a day
    clock.advance(24 * HOUR)
    assert domains.recheck_due()[domain] == "active"
    txt = registration.records[1]
    dns_zone.set_records(txt.name, "TXT", [])  # the owner took the TXT away
    clock.advance(24 * HOUR)
    assert domains.recheck_due()[domain] == "suspended"
    view = domains.show(domain, registration.token)
    assert view.status == SUSPENDED
    assert view.erased_ms == view.suspended_ms + GRACE * 1000
    clock.advance(24 * HOUR)
    assert domains.recheck_due()[domain] == "still-suspended"
    publish(dns_zone, registration.records)  # back: active again
    clock.advance(24 * HOUR)
    assert domains.recheck_due()[domain] == "restored"
    assert domains.show(domain, registration.token).status == ACTIVE

    dns_zone.set_records(txt.name, "TXT", [])
    clock.advance(24 * HOUR)
    assert domains.recheck_due()[domain] == "suspended"
    dns_zone.fail(txt.name, "timeout")  # DNS that does not answer neither restores nor erases
    clock.advance(GRACE)
    assert domains.recheck_due()[domain] == "dns-unanswered"
    assert domains.show(domain, registration.token).status == SUSPENDED
    dns_zone.clear_records(txt.name)
    assert domain not in domains.recheck_due()  # the next try comes a little later
    clock.advance(HOUR)
    assert domains.recheck_due()[domain] == "erased"
    assert keys_of_domain(redis_client, domain) == set()
    assert redis_client.zscore(DOMAINS_KEY, domain) is None


def test_a_suspended_owner_who_restores_the_records_is_active_at_once(domains, domain,
                                                                      dns_zone, clock):
    registration = domains.register(domain)
    publish(dns_zone, registration.records)
    domains.verify(domain, registration.token)
    dns_zone.set_records(f"_tempalias.{domain}", "TXT", [])
    clock.advance(24 * HOUR)
    domains.recheck_due()
    result = domains.verify(domain, registration.token)
    assert (result.status, result.ok) == (SUSPENDED, False) and "TXT" in result.problems[0]
    publish(dns_zone, registration.records)
    assert domains.verify(domain, registration.token).status == ACTIVE
    assert domains.show(domain, registration.token).status == ACTIVE


def test_a_domain_another_janitor_is_checking_is_left_to_it(domains, domain, dns_zone, clock,
                                                           domain_store):
    registration = domains.register(domain)
    publish(dns_zone, registration.records)
    domains.verify(domain, registration.token)
    clock.advance(24 * HOUR)
    now = int(clock() * 1000)
    assert domain_store.claim(domain, now, 60_000)  # another process's janitor, first
    queries = dns_zone.queries[domain]
    assert domain not in domains.recheck_due(now)
    assert dns_zone.queries[domain] == queries
    clock.advance(61)  # it died meanwhile: the check is ours after its claim lapsed
    assert domains.recheck_due()[domain] == "active"
