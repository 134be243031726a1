"""Custom domains in the store against a real redis-server: registration, the first verification
winning, checks that suspend and restore, erasure, and aliases in a domain's own namespace."""

from __future__ import annotations

import secrets
import time

import pytest
from redis.crc import key_slot

from tempalias.abuse import DOMAIN_LIMITS
from tempalias.config import Rate
from tempalias.store import (DOMAINS_KEY, IDLEN_KEY, REPLY_LIMIT, AliasNotFound,
                             AliasStore, AliasTaken, CheckOutcome, DomainNotFound, DomainStore,
                             DomainSuspended, DomainTaken, RateLimiter, ReplyRoute, UnknownDomain,
                             hash_token, keys)
from tempalias.store.errors import AliasExhausted, RateLimited

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
GRACE_MS = 72 * HOUR_MS
VALUE = "tempalias-verify=abcdefghijklmnopqrstuvwxyzabcdef"
LIMITS = {"alias-message": Rate(10, 60.0)}


@pytest.fixture
def now(clock):
    """Now as the stores see it (ms), from the test's clock."""
    return lambda: int(clock() * 1000)


@pytest.fixture
def aliases(redis_client, clock):
    return AliasStore(redis_client, clock=clock)


@pytest.fixture
def domains(redis_client, aliases):
    return DomainStore(redis_client, runner=aliases.runner)


@pytest.fixture
def domain():
    """A domain of this test alone (the session's Redis is shared)."""
    return f"d{secrets.token_hex(4)}.example.org"


def make_active(domains: DomainStore, domain: str, now_ms: int, owner: str = "owner") -> str:
    token_hash = hash_token(owner)
    domains.register(domain, token_hash, now_ms)
    assert domains.activate(domain, token_hash, VALUE, now_ms)
    return token_hash


def keys_of_domain(redis_client, domain: str) -> set[str]:
    """Every key in the whole Redis that belongs to ``domain`` (its hash tag)."""
    return {key for key in redis_client.scan_iter(count=1000) if f"{{{domain}}}" in key}


# --- registration and verification


def test_registrations_of_one_domain_by_different_tokens_coexist(domains, domain, now,
                                                                 redis_client):
    first = domains.register(domain, hash_token("first"), now())
    domains.register(domain, hash_token("second"), now())
    assert domains.pending(domain, hash_token("first")) == first
    assert first.expires_ms - first.created_ms == 7 * DAY_MS
    assert domains.pending(domain, hash_token("second")).domain == domain
    with pytest.raises(DomainNotFound):
        domains.pending(domain, hash_token("nobody"))
    ttl = redis_client.pttl(keys.pending_key(domain, hash_token("first")))
    assert 7 * DAY_MS - 60_000 < ttl <= 7 * DAY_MS
    with pytest.raises(DomainNotFound):  # a registration is no active domain
        domains.get(domain, hash_token("first"))


def test_the_first_verification_wins_and_erases_the_other_registrations(domains, domain, now,
                                                                        redis_client):
    for owner in ("a", "b", "c"):
        domains.register(domain, hash_token(owner), now())
    verified_at = now()
    assert domains.activate(domain, hash_token("b"), VALUE, verified_at) is True
    with pytest.raises(DomainTaken):
        domains.activate(domain, hash_token("a"), VALUE, now())
    for loser in ("a", "c"):
        with pytest.raises(DomainNotFound):
            domains.pending(domain, hash_token(loser))
    # the winner's registration became the domain: nothing pending is left of it
    assert keys_of_domain(redis_client, domain) == {keys.domain_key(domain)}
    shown = domains.get(domain, hash_token("b"))
    assert (shown.status, shown.verified_ms, shown.checked_ms, shown.value, shown.aliases) == (
        "active", verified_at, verified_at, VALUE, 0)
    assert shown.suspended_ms is None
    assert redis_client.zscore(DOMAINS_KEY, domain) == verified_at + DAY_MS
    # verifying again changes nothing; registering it again is refused
    assert domains.activate(domain, hash_token("b"), VALUE, now()) is False
    with pytest.raises(DomainTaken):
        domains.register(domain, hash_token("d"), now())


def test_the_operator_sees_the_registrations_still_waiting(domains, domain, now, clock):
    assert domains.registrations(domain, now()) == []
    domains.register(domain, hash_token("first"), now())
    clock.advance(3600)
    domains.register(domain, hash_token("second"), now())
    assert domains.registrations(domain, now()) == [hash_token("first"), hash_token("second")]
    clock.advance(7 * 86_400 - 1800)  # the first has lapsed, the second waits
    assert domains.registrations(domain, now()) == [hash_token("second")]
    domains.activate(domain, hash_token("second"), VALUE, now())
    assert domains.registrations(domain, now()) == []


def test_a_registration_that_never_was_or_was_withdrawn_activates_nothing(domains, domain, now):
    with pytest.raises(DomainNotFound):
        domains.activate(domain, hash_token("stranger"), VALUE, now())
    domains.register(domain, hash_token("owner"), now())
    domains.withdraw(domain, hash_token("owner"))
    with pytest.raises(DomainNotFound):
        domains.withdraw(domain, hash_token("owner"))
    with pytest.raises(DomainNotFound):
        domains.activate(domain, hash_token("owner"), VALUE, now())
    with pytest.raises(DomainNotFound):
        domains.get(domain, None)


def test_a_wrong_token_is_indistinguishable_from_an_unknown_domain(domains, domain, now):
    make_active(domains, domain, now())
    with pytest.raises(DomainNotFound):
        domains.get(domain, hash_token("stranger"))
    with pytest.raises(DomainNotFound):
        domains.get(f"unknown-{domain}", hash_token("owner"))
    assert domains.get(domain, None).status == "active"  # the operator needs no token
    assert domains.get(domain, hash_token("owner")).status == "active"


# --- checks on the schedule


def test_checks_suspend_restore_and_end_the_grace_period(domains, domain, clock, now,
                                                         redis_client):
    make_active(domains, domain, now())
    assert domains.mark_checked(domain, True, now(), GRACE_MS) is CheckOutcome.ACTIVE
    clock.advance(3600)
    gone_at = now()
    assert domains.mark_checked(domain, False, gone_at, GRACE_MS) is CheckOutcome.SUSPENDED
    shown = domains.get(domain, None)
    assert (shown.status, shown.suspended_ms, shown.checked_ms) == ("suspended", gone_at, gone_at)
    assert redis_client.zscore(DOMAINS_KEY, domain) == gone_at + DAY_MS
    clock.advance(86_400)
    assert domains.mark_checked(domain, False, now(), GRACE_MS) is CheckOutcome.STILL_SUSPENDED
    assert domains.get(domain, None).suspended_ms == gone_at  # since the first failed check
    assert domains.mark_checked(domain, True, now(), GRACE_MS) is CheckOutcome.RESTORED
    shown = domains.get(domain, None)
    assert (shown.status, shown.suspended_ms) == ("active", None)

    gone_again = now()
    domains.mark_checked(domain, False, gone_again, GRACE_MS)
    clock.advance(48 * 3600 + 1)
    assert domains.mark_checked(domain, False, now(), GRACE_MS) is CheckOutcome.STILL_SUSPENDED
    # the next check comes when the grace period ends, sooner than a day later
    assert redis_client.zscore(DOMAINS_KEY, domain) == gone_again + GRACE_MS
    clock.advance(24 * 3600)
    assert domains.mark_checked(domain, False, now(), GRACE_MS) is CheckOutcome.GRACE_OVER


def test_due_lists_the_domains_whose_check_has_come(domains, now, clock):
    early, late = f"early-{secrets.token_hex(4)}.example", f"late-{secrets.token_hex(4)}.example"
    make_active(domains, early, now())
    clock.advance(3600)
    make_active(domains, late, now())
    assert not {early, late} & set(domains.due(now(), limit=10_000))
    clock.advance(86_400 - 3600)
    due = domains.due(now(), limit=10_000)
    assert early in due and late not in due
    domains.check_later(early, now() + 600_000)  # its DNS did not answer: try again later
    assert early not in domains.due(now(), limit=10_000)
    clock.advance(3600)
    assert {early, late} <= set(domains.due(now(), limit=10_000))


def test_a_due_check_is_claimed_by_one_caller_until_it_is_done_or_lapses(domains, domain, now,
                                                                         clock, redis_client):
    make_active(domains, domain, now())
    assert domains.claim(domain, now(), 60_000) is False  # not due
    clock.advance(86_400)
    assert domains.claim(domain, now(), 60_000) is True
    assert domains.claim(domain, now(), 60_000) is False  # another janitor saw it due too
    assert domain not in domains.due(now(), limit=10_000)
    clock.advance(61)  # the claimant died: the check is due again
    assert domains.claim(domain, now(), 60_000) is True
    domains.mark_checked(domain, True, now(), GRACE_MS)
    assert redis_client.zscore(DOMAINS_KEY, domain) == now() + DAY_MS
    assert domains.claim(f"unknown-{domain}", now(), 60_000) is False


def test_a_check_of_a_domain_gone_meanwhile_takes_it_off_the_schedule(domains, domain, now,
                                                                     redis_client):
    make_active(domains, domain, now())
    redis_client.delete(keys.domain_key(domain))  # erased by another process since due()
    with pytest.raises(DomainNotFound):
        domains.mark_checked(domain, True, now(), GRACE_MS)
    assert redis_client.zscore(DOMAINS_KEY, domain) is None


# --- aliases in a custom domain's namespace


def test_a_local_part_is_its_own_alias_in_each_namespace(aliases, domains, domain, now,
                                                         redis_client):
    plain = aliases.create("plain@example.net", HOUR_MS, None)
    local = plain.alias.id
    other = f"other-{domain}"
    make_active(domains, domain, now())
    make_active(domains, other, now())
    here = aliases.create("here@example.net", HOUR_MS, None, domain=domain, custom=True,
                          local_part=local)
    there = aliases.create("there@example.net", HOUR_MS, None, domain=other, custom=True,
                           local_part=local)
    assert (here.alias.id, there.alias.id) == (f"{local}@{domain}", f"{local}@{other}")
    assert here.alias.domain == domain
    targets = {alias_id: aliases.reserve(alias_id).target
               for alias_id in (local, f"{local}@{domain}", f"{local}@{other}")}
    assert targets == {local: "plain@example.net", f"{local}@{domain}": "here@example.net",
                       f"{local}@{other}": "there@example.net"}
    aliases.revoke(here.alias.id, here.token)
    with pytest.raises(AliasNotFound):
        aliases.reserve(f"{local}@{domain}")
    assert set(redis_client.scan_iter(match=keys.alias_pattern(here.alias.id))) == {
        keys.id_key(here.alias.id)}
    assert aliases.reserve(local).target == "plain@example.net"
    assert aliases.get(f"{local}@{other}", there.token).target == "there@example.net"


def test_a_chosen_local_part_is_taken_once_in_the_domains_life(aliases, domains, domain, now):
    make_active(domains, domain, now())
    first = aliases.create("a@example.net", HOUR_MS, None, domain=domain, custom=True,
                           local_part="Shop-News")
    assert first.alias.id == f"shop-news@{domain}"
    reservation = aliases.reserve(f"SHOP-NEWS@{domain.upper()}")  # ids match in any case
    assert reservation.alias_id == first.alias.id
    aliases.release(reservation)
    with pytest.raises(AliasTaken):
        aliases.create("b@example.net", HOUR_MS, None, domain=domain, custom=True,
                       local_part="shop-news")
    aliases.revoke(first.alias.id, first.token)
    with pytest.raises(AliasTaken):  # revoked, but it was an alias in this domain's life
        aliases.create("b@example.net", HOUR_MS, None, domain=domain, custom=True,
                       local_part="shop-news")


def test_random_local_parts_grow_in_their_domain_alone(redis_client, domains, domain, now):
    redis_client.delete(IDLEN_KEY)
    store = AliasStore(redis_client, id_length=1, id_alphabet="ab")
    make_active(domains, domain, now())
    made = [store.create(f"u{n}@example.net", HOUR_MS, None, domain=domain, custom=True)
            for n in range(4)]
    assert len({m.alias.id for m in made}) == 4
    assert all(m.alias.id.endswith(f"@{domain}") for m in made)
    assert int(redis_client.get(keys.domain_idlen_key(domain))) >= 2
    assert redis_client.get(IDLEN_KEY) is None  # the service's own ids did not grow
    for n, m in enumerate(made):
        assert store.get(m.alias.id, m.token).target == f"u{n}@example.net"


def test_aliases_are_made_only_at_an_active_domain(aliases, domains, domain, now, redis_client):
    with pytest.raises(DomainNotFound):
        aliases.create("a@example.net", HOUR_MS, None, domain=domain, custom=True)
    domains.register(domain, hash_token("owner"), now())
    with pytest.raises(DomainNotFound):
        aliases.create("a@example.net", HOUR_MS, None, domain=domain, custom=True,
                       local_part="shop")
    domains.activate(domain, hash_token("owner"), VALUE, now())
    domains.mark_checked(domain, False, now(), GRACE_MS)
    with pytest.raises(DomainSuspended):
        aliases.create("a@example.net", HOUR_MS, None, domain=domain, custom=True,
                       local_part="shop")
    assert keys_of_domain(redis_client, domain) == {keys.domain_key(domain)}


def test_mail_to_a_suspended_domain_is_told_since_when_and_reserves_nothing(
        aliases, domains, domain, now, clock, redis_client):
    make_active(domains, domain, now())
    made = aliases.create("a@example.net", HOUR_MS, 2, domain=domain, custom=True,
                          local_part="shop")
    clock.advance(60)
    gone_at = now()
    domains.mark_checked(domain, False, gone_at, GRACE_MS)
    with pytest.raises(DomainSuspended) as refused:
        aliases.reserve(made.alias.id, LIMITS)
    assert (refused.value.domain, refused.value.since_ms) == (domain, gone_at)
    assert redis_client.zcard(keys.held_key(made.alias.id)) == 0
    assert not redis_client.exists(keys.alias_limit_key(made.alias.id, "alias-message"))
    domains.mark_checked(domain, True, now(), GRACE_MS)
    assert aliases.reserve(made.alias.id, LIMITS).target == "a@example.net"


def test_mail_to_a_domain_that_is_not_active_is_an_unknown_domain(aliases, domains, domain,
                                                                  now):
    with pytest.raises(UnknownDomain) as refused:
        aliases.reserve(f"shop@{domain}")
    # an unknown alias to whoever treats it so, and a domain that is not ours to SMTP
    assert isinstance(refused.value, AliasNotFound) and isinstance(refused.value, DomainNotFound)
    domains.register(domain, hash_token("owner"), now())
    with pytest.raises(UnknownDomain):
        aliases.reserve(f"shop@{domain}")
    make_active(domains, f"other-{domain}", now())
    made = aliases.create("a@example.net", HOUR_MS, None, domain=f"other-{domain}", custom=True,
                          local_part="shop")
    with pytest.raises(AliasNotFound):  # an id at one domain is nothing at another
        aliases.reserve(made.alias.id, domain=domain)
    assert aliases.reserve(made.alias.id, domain=f"other-{domain}").target == "a@example.net"


@pytest.mark.parametrize("bad_id", ["shop@localhost", "@x.example.org", "a b@x.example.org",
                                    "a..b@x.example.org", ".a@x.example.org",
                                    "a@-x.example.org", "a@x_y.example.org", "a:b@x.example.org",
                                    "a@x.example.org:6379", "x" * 65 + "@x.example.org",
                                    "ü@x.example.org", "a@{x}.example.org"])
def test_malformed_custom_ids_match_nothing(aliases, bad_id):
    with pytest.raises(AliasNotFound):
        aliases.reserve(bad_id)
    with pytest.raises(AliasNotFound):
        aliases.get(bad_id, "token")
    with pytest.raises(AliasNotFound):
        aliases.revoke(bad_id, None)


def test_the_alias_count_is_of_live_aliases(aliases, domains, domain, now, clock, redis_client):
    owner = make_active(domains, domain, now())

    def make(uses=None, lifetime_ms=HOUR_MS):
        return aliases.create("a@example.net", lifetime_ms, uses, domain=domain, custom=True)

    make()
    make(lifetime_ms=60_000)
    used_up = make(uses=1)
    revoked = make()
    assert domains.get(domain, owner, now()).aliases == 4
    aliases.commit(aliases.reserve(used_up.alias.id))
    aliases.revoke(revoked.alias.id, revoked.token)
    assert domains.get(domain, owner, now()).aliases == 2
    clock.advance(61)
    assert domains.get(domain, owner, now()).aliases == 1  # ended, even before the purge
    assert aliases.purge() >= 1
    assert redis_client.zcard(keys.domain_aliases_key(domain)) == 1  # the purge took it out


def test_a_used_up_alias_of_a_custom_domain_is_gone(aliases, domains, domain, now):
    make_active(domains, domain, now())
    made = aliases.create("a@example.net", HOUR_MS, 1, domain=domain, custom=True,
                          local_part="once")
    first = aliases.reserve(made.alias.id)
    with pytest.raises(AliasExhausted):
        aliases.reserve(made.alias.id)
    assert aliases.commit(first) == 0
    with pytest.raises(AliasNotFound):
        aliases.reserve(made.alias.id)


def test_letting_time_pass_reaches_the_limits_of_a_custom_domains_aliases(
        redis_client, domains, domain, let_time_pass):
    """conftest's ``let_time_pass`` (end-to-end limit tests) moves their buckets too."""
    store = AliasStore(redis_client)  # Redis's clock, as in a running service
    make_active(domains, domain, int(time.time() * 1000))
    made = store.create("a@example.net", HOUR_MS, None, domain=domain, custom=True)
    hourly = {"alias-message": Rate(1, 3600.0)}
    store.release(store.reserve(made.alias.id, hourly))
    with pytest.raises(RateLimited):
        store.reserve(made.alias.id, hourly)
    let_time_pass(3600)
    store.release(store.reserve(made.alias.id, hourly))
    store.runner.close()


# --- erasure


def test_erasing_a_domain_leaves_no_key_of_it_behind(aliases, domains, domain, now,
                                                     redis_client):
    limiter = RateLimiter(redis_client, runner=aliases.runner)
    make_active(domains, domain, now())
    neighbour = f"neighbour-{domain}"
    make_active(domains, neighbour, now())
    kept = aliases.create("k@example.net", HOUR_MS, None, domain=neighbour, custom=True,
                          local_part="shop")
    shop = aliases.create("a@example.net", HOUR_MS, 3, domain=domain, custom=True,
                          local_part="shop")
    aliases.commit(aliases.reserve(shop.alias.id, LIMITS))
    aliases.reserve(shop.alias.id, LIMITS)  # a delivery under way
    randoms = [aliases.create("r@example.net", HOUR_MS, None, domain=domain, custom=True)
               for _ in range(2)]
    # braces and glob characters are atext: the hash tag stays the domain's
    randoms.append(aliases.create("w@example.net", HOUR_MS, None, domain=domain, custom=True,
                                  local_part="a{b}*c"))
    assert key_slot(keys.alias_key(randoms[-1].alias.id).encode()) == key_slot(
        keys.domain_key(domain).encode())
    revoked = aliases.create("v@example.net", HOUR_MS, None, domain=domain, custom=True,
                             local_part="gone")
    aliases.revoke(revoked.alias.id, revoked.token)
    assert limiter.take(domain, {"domain-alias": Rate(500, 86_400.0)}) is None
    ids = [shop.alias.id, revoked.alias.id, *(m.alias.id for m in randoms)]
    assert len(keys_of_domain(redis_client, domain)) > 10

    assert domains.erase(domain, limits=("alias-message", "domain-alias")) == 4
    assert keys_of_domain(redis_client, domain) == set()
    assert redis_client.zscore(DOMAINS_KEY, domain) is None
    with pytest.raises(UnknownDomain):
        aliases.reserve(shop.alias.id)
    with pytest.raises(DomainNotFound):
        domains.erase(domain)
    # the neighbour is untouched
    assert aliases.reserve(kept.alias.id).target == "k@example.net"
    assert redis_client.zscore(DOMAINS_KEY, neighbour) is not None
    # the domain's next owner starts afresh: every local part is free again
    make_active(domains, domain, now(), owner="next owner")
    again = aliases.create("new@example.net", HOUR_MS, None, domain=domain, custom=True,
                           local_part="gone")
    assert aliases.reserve(again.alias.id).target == "new@example.net"
    assert domains.get(domain, hash_token("next owner")).aliases == 1


def test_erasing_a_domain_with_a_token_needs_the_owners(domains, domain, now, redis_client):
    make_active(domains, domain, now())
    with pytest.raises(DomainNotFound):
        domains.erase(domain, hash_token("stranger"))
    assert domains.get(domain, None).status == "active"
    assert domains.erase(domain, hash_token("owner")) == 0
    assert keys_of_domain(redis_client, domain) == set()


def test_erasing_a_domain_that_is_only_registered_erases_its_registrations(domains, domain,
                                                                           now, redis_client):
    domains.register(domain, hash_token("a"), now())
    domains.register(domain, hash_token("b"), now())
    assert domains.erase(domain) == 0
    assert keys_of_domain(redis_client, domain) == set()
    with pytest.raises(DomainNotFound):
        domains.pending(domain, hash_token("a"))


def test_replies_at_a_custom_domain_follow_the_domain_and_end_with_it(aliases, domains, domain,
                                                                     now, redis_client):
    make_active(domains, domain, now())
    shop = aliases.create("owner@example.net", HOUR_MS, None, domain=domain, custom=True,
                          local_part="shop", replies=True)
    random = aliases.reverse_addresses(shop.alias.id, ["b@example.org"])["b@example.org"]
    limit = Rate(10, 60.0)
    assert aliases.reply_route(shop.alias.id, random, limit) == ReplyRoute(
        shop.alias.id, "owner@example.net", "b@example.org", domain)
    assert aliases.reserve(shop.alias.id).domain == domain

    domains.mark_checked(domain, False, now(), GRACE_MS)
    with pytest.raises(DomainSuspended):
        aliases.reply_route(shop.alias.id, random, limit)
    domains.mark_checked(domain, True, now(), GRACE_MS)
    assert aliases.reply_route(shop.alias.id, random, limit).sender == "b@example.org"

    assert redis_client.exists(keys.revs_key(shop.alias.id),
                               keys.alias_limit_key(shop.alias.id, REPLY_LIMIT)) == 2
    domains.erase(domain, limits=DOMAIN_LIMITS)
    assert keys_of_domain(redis_client, domain) == set()
    with pytest.raises(UnknownDomain):
        aliases.reply_route(shop.alias.id, random, limit)
