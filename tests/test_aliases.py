"""The alias use cases (tempalias/aliases.py), called as the doors call them.

Real parts: the session's Redis under a real ``AliasStore``, and a real ``AbusePolicy`` whose
limits live in that Redis. No door is involved: what these answer is what every door translates.
"""

from __future__ import annotations

import logging
import secrets
import time

import pytest

from harness.processes import wait_for
from tempalias.abuse import AbusePolicy
from tempalias.addresses import domain_to_ascii
from tempalias.aliases import (
    AliasNotFound, AliasRules, AliasService, AliasTaken, CreationRefused, DomainNotFound,
    InvalidOrder, StoreUnavailable)
from tempalias.config import Config, Rate
from tempalias.embedded_redis import free_loopback_port
from tempalias.store import (MS_PER_DAY, AliasStore, DomainStore, RateLimiter,
                             connect, hash_token, keys)

RULES = AliasRules(domains=("first.test", "second.test"), max_days=30, max_uses=50,
                   default_days=5)
NO_LIMITS = dict(create_rate_per_ip=None, create_daily_per_ip=None, create_daily_per_target=None)


@pytest.fixture
def service_with(store, redis_client):
    """A service on the session's Redis whose policy has no creation limits but those given."""

    def make(**limits) -> AliasService:
        abuse = Config(**{**NO_LIMITS, **limits}).section("abuse")
        return AliasService(store, AbusePolicy.from_settings(abuse, RateLimiter(redis_client)),
                            RULES)

    return make


@pytest.fixture
def aliases(service_with):
    return service_with()


def fresh_ip() -> str:
    """A client address no other test used, so the shared Redis holds no buckets for it."""
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def fresh_target() -> str:
    return f"owner{secrets.token_hex(4)}@example.org"


# --- create


def test_an_order_without_days_or_uses_lasts_the_default_days_with_no_use_limit(aliases):
    created = aliases.create(fresh_target(), client_ip=fresh_ip())
    alias = created.view.alias
    assert created.days == RULES.default_days
    assert alias.expires_ms - alias.created_ms == RULES.default_days * MS_PER_DAY
    assert alias.uses_left is None and created.view.active


def test_the_alias_is_at_the_first_domain_and_keeps_the_target_in_canonical_form(aliases):
    created = aliases.create("Owner@Example.ORG", 2, 3, fresh_ip())
    assert created.view.address == f"{created.view.alias.id}@first.test"
    assert created.view.alias.target == "Owner@example.org"
    assert aliases.show(created.view.alias.id, created.token) == created.view


def test_days_and_uses_at_their_maximum_are_taken(aliases):
    created = aliases.create(fresh_target(), RULES.max_days, RULES.max_uses, fresh_ip())
    alias = created.view.alias
    assert alias.expires_ms - alias.created_ms == RULES.max_days * MS_PER_DAY
    assert alias.uses_left == RULES.max_uses


@pytest.mark.parametrize("target, days, uses, field", [
    (None, None, None, "target"),
    (42, None, None, "target"),
    ("no-at-sign", None, None, "target"),
    ("a@first.test", None, None, "target"),  # would loop back here
    ("a@mail.second.test", None, None, "target"),  # below one of our domains, too
    ("a@example.org", 0, None, "days"),
    ("a@example.org", RULES.max_days + 1, None, "days"),
    ("a@example.org", -1, None, "days"),
    ("a@example.org", 2.0, None, "days"),  # the doors read their wire formats, not the service
    ("a@example.org", "3", None, "days"),
    ("a@example.org", True, None, "days"),
    ("a@example.org", None, 0, "uses"),
    ("a@example.org", None, RULES.max_uses + 1, "uses"),
    ("a@example.org", None, [1], "uses"),
    ("a@example.org", None, False, "uses"),
])
def test_an_invalid_order_names_its_field_and_creates_nothing(aliases, ids_taken,
                                                              target, days, uses, field):
    before = ids_taken()
    with pytest.raises(InvalidOrder) as raised:
        aliases.create(target, days, uses, fresh_ip())
    assert raised.value.field == field
    assert raised.value.description.startswith(field + " ")
    assert ids_taken() == before


@pytest.mark.parametrize("replies", [None, 1, 0, "true", "yes", [True]])
def test_replies_is_true_or_false_and_nothing_else(aliases, ids_taken, replies):
    before = ids_taken()
    with pytest.raises(InvalidOrder) as raised:
        aliases.create(fresh_target(), client_ip=fresh_ip(), replies=replies)
    assert raised.value.field == "replies"
    assert raised.value.description == "replies must be true or false"
    assert ids_taken() == before


def test_an_alias_takes_replies_when_ordered_and_says_so(aliases, store):
    replying = aliases.create(fresh_target(), client_ip=fresh_ip(), replies=True)
    silent = aliases.create(fresh_target(), client_ip=fresh_ip())
    assert replying.view.summary()["replies"] is True
    assert silent.view.summary()["replies"] is False
    assert aliases.show(replying.view.alias.id, replying.token).alias.replies
    assert store.reserve(replying.view.alias.id).replies
    assert not store.reserve(silent.view.alias.id).replies
    domain = active_domain(store)
    custom = aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                            local_part="replying", domain_token="owner-token", replies=True)
    assert aliases.show(custom.view.alias.id, custom.token).summary()["replies"] is True


def test_a_range_error_says_the_range():
    with pytest.raises(InvalidOrder) as raised:
        RULES.order("a@example.org", uses=RULES.max_uses + 1)
    assert raised.value.description == f"uses must be a whole number from 1 to {RULES.max_uses}"


def test_a_refusal_by_the_policy_creates_nothing_and_carries_its_verdict(service_with, ids_taken):
    aliases = service_with(create_rate_per_ip=Rate(1, 3600.0))
    client = fresh_ip()
    aliases.create(fresh_target(), client_ip=client)
    before = ids_taken()
    with pytest.raises(CreationRefused) as raised:
        aliases.create(fresh_target(), client_ip=client)
    refusal = raised.value.refusal
    assert refusal.kind == "rate-limited" and refusal.retry_after > 0
    assert refusal.limit == "create" and refusal.client == client
    assert ids_taken() == before
    aliases.create(fresh_target(), client_ip=fresh_ip())  # another client is unaffected


def test_an_invalid_order_spends_no_limit(service_with):
    aliases = service_with(create_rate_per_ip=Rate(1, 3600.0))
    client = fresh_ip()
    with pytest.raises(InvalidOrder):
        aliases.create("a@first.test", client_ip=client)
    assert aliases.create(fresh_target(), client_ip=client).token


def test_the_policy_limits_each_target_whatever_the_spelling(service_with):
    aliases = service_with(create_daily_per_target=Rate(1, 86400.0))
    target = fresh_target()
    aliases.create(target, client_ip=fresh_ip())
    with pytest.raises(CreationRefused):
        aliases.create(target.upper(), client_ip=fresh_ip())


def test_a_trusted_client_is_never_refused(service_with):
    aliases = service_with(create_rate_per_ip=Rate(1, 3600.0))
    for _ in range(3):
        aliases.create(fresh_target(), client_ip="127.0.0.1")  # trusted by default


def test_without_a_policy_nothing_is_refused(store):
    """The operator's CLI: no abuse policy, however often it creates for whomever."""
    operator = AliasService(store, None, RULES)
    target = fresh_target()
    assert len({operator.create(target).view.alias.id for _ in range(3)}) == 3


def test_creation_logs_the_alias_never_the_target(aliases, caplog):
    caplog.set_level(logging.INFO, "tempalias")
    target = fresh_target()
    created = aliases.create(target, client_ip=fresh_ip())
    assert created.view.alias.id in caplog.text
    assert target.split("@")[0] not in caplog.text


# --- several domains, and custom domains


def active_domain(store, owner_token: str = "owner-token") -> str:
    """A custom domain of this test alone, verified (as ``domains.py`` does once its records
    are found), owned by whoever holds ``owner_token``."""
    domain = f"d{secrets.token_hex(4)}.example.org"
    domains = DomainStore(store.redis, runner=store.runner)
    domains.register(domain, hash_token(owner_token), int(time.time() * 1000))
    domains.activate(domain, hash_token(owner_token), "tempalias-verify=x", int(time.time() * 1000))
    return domain


def test_an_alias_is_at_the_domain_asked_for_and_answers_only_there(aliases, store):
    created = aliases.create(fresh_target(), client_ip=fresh_ip(), domain="Second.Test")
    alias_id = created.view.alias.id
    assert created.view.address == f"{alias_id}@second.test"
    assert store.reserve(alias_id, domain="second.test").target == created.view.alias.target
    with pytest.raises(AliasNotFound):
        store.reserve(alias_id, domain="first.test")
    first = aliases.create(fresh_target(), client_ip=fresh_ip())
    assert first.view.alias.domain == "first.test"  # the default is stored too


def test_an_alias_made_before_several_domains_shows_the_first(aliases, store, redis_client):
    made = store.create(fresh_target(), MS_PER_DAY, None)  # no domain in its hash
    assert aliases.show_as_operator(made.alias.id).address == f"{made.alias.id}@first.test"


@pytest.mark.parametrize("domain, local_part, field, words", [
    ("unknown.example", None, "domain", "not offered here"),
    ("not a domain", None, "domain", "not a domain name"),
    (7, None, "domain", "as a string"),
    ("first.test", "shop", "local_part", "only at your own custom domain"),
    (None, "shop", "local_part", "only at your own custom domain"),
])
def test_a_domain_not_offered_or_a_local_part_chosen_at_ours_is_refused(
        aliases, ids_taken, domain, local_part, field, words):
    before = ids_taken()
    with pytest.raises(InvalidOrder) as raised:
        aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                       local_part=local_part, domain_token="whatever")
    assert raised.value.field == field and words in raised.value.description
    assert ids_taken() == before


def test_the_owner_of_a_custom_domain_makes_aliases_there_with_any_local_part(aliases, store):
    domain = active_domain(store)
    random = aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain.upper(),
                            domain_token="owner-token")
    assert random.view.alias.id.endswith(f"@{domain}")
    chosen = aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                            local_part="Shop-News", domain_token="owner-token")
    assert chosen.view.alias.id == chosen.view.address == f"shop-news@{domain}"
    assert aliases.show(f"SHOP-NEWS@{domain}", chosen.token) == chosen.view
    with pytest.raises(AliasTaken):
        aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                       local_part="shop-news", domain_token="owner-token")
    aliases.revoke(chosen.view.alias.id, chosen.token)


def test_without_the_domain_token_nobody_makes_aliases_at_a_custom_domain(aliases, store,
                                                                           redis_client):
    domain = active_domain(store)
    for token in (None, "", "owner-token-not"):
        with pytest.raises(DomainNotFound):
            aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                           local_part="shop", domain_token=token)
    assert redis_client.zcard(keys.domain_aliases_key(domain)) == 0


@pytest.mark.parametrize("local_part, words", [
    ("postmaster", "role mailboxes"), ("Abuse", "role mailboxes"), ("admin", "role mailboxes"),
    ("a" * 65, "at most 64"), ("a..b", "single dots"), (".a", "single dots"),
    ("a b", "single dots"), ("a@b", "single dots"), ("müller", "single dots"), ("", "single dots"),
    (5, "a string"), ("r=shop", "reserved for reply addresses"),
    ("R=abcdefghijklmnop=k3x9qa", "reserved for reply addresses"),
])
def test_a_chosen_local_part_must_be_a_dot_atom_and_no_role_name(aliases, store, local_part,
                                                                 words):
    domain = active_domain(store)
    with pytest.raises(InvalidOrder) as raised:
        aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                       local_part=local_part, domain_token="owner-token")
    assert raised.value.field == "local_part" and words in raised.value.description


def test_a_target_at_a_custom_domain_served_here_is_a_chain_not_a_loop(aliases, store):
    """Mail to it leaves through the smarthost and comes back to another alias, which forwards
    it on: a chain. Only a cycle loops, and the SMTP loop guard stops that (test_loops.py);
    asking the store about every target's domain cost each creation a second round trip
    (2,900 -> 2,100-2,600 creations/s, wrk -c50, 2 workers)."""
    domain = active_domain(store)
    created = aliases.create(f"someone@{domain.upper()}", client_ip=fresh_ip())
    assert created.view.alias.target == f"someone@{domain}"


def test_a_custom_domain_gets_its_daily_aliases_and_no_more(service_with, store):
    aliases = service_with(domain_daily_aliases=2)
    domain = active_domain(store)
    for _ in range(2):
        aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                       domain_token="owner-token")
    with pytest.raises(CreationRefused) as raised:
        aliases.create(fresh_target(), client_ip=fresh_ip(), domain=domain,
                       domain_token="owner-token")
    assert (raised.value.refusal.limit, raised.value.refusal.retry_after) == (
        "domain-alias", 43200)
    aliases.create(fresh_target(), client_ip=fresh_ip())  # our own domains are not capped so


def test_an_internationalised_custom_domain_shows_its_u_label(aliases, store):
    label = f"bücher{secrets.token_hex(3)}"
    a_label = domain_to_ascii(f"{label}.example")
    domains = DomainStore(store.redis, runner=store.runner)
    domains.register(a_label, hash_token("t"), int(time.time() * 1000))
    domains.activate(a_label, hash_token("t"), "v", int(time.time() * 1000))
    created = aliases.create(fresh_target(), client_ip=fresh_ip(), domain=f"{label}.example",
                             local_part="news", domain_token="t")
    assert created.view.alias.id == f"news@{a_label}"
    assert created.view.address == f"news@{label}.example"
    assert aliases.show(f"news@{label}.example", created.token) == created.view


# --- show and revoke, for the owner


def test_show_needs_the_token_and_takes_the_id_in_any_case(aliases):
    created = aliases.create(fresh_target(), client_ip=fresh_ip())
    alias_id = created.view.alias.id
    assert aliases.show(alias_id.upper(), created.token).alias.id == alias_id
    for token in (created.token + "x", "", None):
        with pytest.raises(AliasNotFound):
            aliases.show(alias_id, token)
    with pytest.raises(AliasNotFound):
        aliases.show("zzzzzzzzzz", created.token)


def test_revoke_with_a_wrong_or_missing_token_is_not_found_and_erases_nothing(aliases):
    created = aliases.create(fresh_target(), client_ip=fresh_ip())
    alias_id = created.view.alias.id
    for token in (created.token + "x", "", None):  # None would be the operator's revoke
        with pytest.raises(AliasNotFound):
            aliases.revoke(alias_id, token)
    assert aliases.show(alias_id, created.token).alias.id == alias_id
    aliases.revoke(alias_id, created.token)
    with pytest.raises(AliasNotFound):
        aliases.show(alias_id, created.token)
    with pytest.raises(AliasNotFound):
        aliases.revoke(alias_id, created.token)


# --- the operator's variants, and upkeep


def test_the_operator_shows_and_revokes_without_a_token(aliases):
    created = aliases.create(fresh_target(), 2, 3, fresh_ip())
    alias_id = created.view.alias.id
    assert aliases.show_as_operator(alias_id.upper()) == created.view
    aliases.revoke_as_operator(alias_id)
    for operation in (aliases.show_as_operator, aliases.revoke_as_operator):
        with pytest.raises(AliasNotFound):
            operation(alias_id)


def test_purge_erases_ended_aliases_and_keeps_live_ones(aliases, store, redis_client):
    """At our domains an ended alias is gone by its own expiry; purge leaves the live ones."""
    live = aliases.create(fresh_target(), client_ip=fresh_ip()).view.alias.id
    ended = store.create(fresh_target(), 1, None).alias.id  # a lifetime of 1 ms
    wait_for(lambda: redis_client.exists(keys.alias_key(ended)) == 0, 10,
             "the alias whose millisecond has passed to be gone")
    assert aliases.purge() >= 0
    assert redis_client.exists(keys.alias_key(live)) == 1


def test_an_unreachable_store_is_store_unavailable():
    dead = connect(f"redis://127.0.0.1:{free_loopback_port()}/0", timeout=0.5)
    abuse = Config().section("abuse")  # default limits on: they fail open, the store not
    aliases = AliasService(AliasStore(dead), AbusePolicy.from_settings(abuse, RateLimiter(dead)),
                           RULES)
    try:
        for operation in (lambda: aliases.create(fresh_target(), client_ip=fresh_ip()),
                          lambda: aliases.show("abcdef", "token"),
                          lambda: aliases.revoke("abcdef", "token"),
                          aliases.purge, aliases.ping):
            with pytest.raises(StoreUnavailable):
                operation()
    finally:
        dead.close()
