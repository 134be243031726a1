"""The alias use cases (tempalias/aliases.py), called as the doors call them.

Real parts: the session's Redis under a real ``AliasStore``, and a real ``AbusePolicy`` whose
limits live in that Redis. No door is involved: what these answer is what every door translates.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from harness.processes import wait_for
from tempalias.abuse import AbusePolicy
from tempalias.aliases import (
    AliasNotFound, AliasRules, AliasService, CreationRefused, InvalidOrder, StoreUnavailable)
from tempalias.config import Config, Rate
from tempalias.embedded_redis import free_loopback_port
from tempalias.store import ENDS_KEY, MS_PER_DAY, AliasStore, RateLimiter, connect

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
def test_an_invalid_order_names_its_field_and_creates_nothing(aliases, redis_client,
                                                              target, days, uses, field):
    before = redis_client.zcard(ENDS_KEY)
    with pytest.raises(InvalidOrder) as raised:
        aliases.create(target, days, uses, fresh_ip())
    assert raised.value.field == field
    assert raised.value.description.startswith(field + " ")
    assert redis_client.zcard(ENDS_KEY) == before


def test_a_range_error_says_the_range():
    with pytest.raises(InvalidOrder) as raised:
        RULES.order("a@example.org", uses=RULES.max_uses + 1)
    assert raised.value.description == f"uses must be a whole number from 1 to {RULES.max_uses}"


def test_a_refusal_by_the_policy_creates_nothing_and_carries_its_verdict(service_with,
                                                                         redis_client):
    aliases = service_with(create_rate_per_ip=Rate(1, 3600.0))
    client = fresh_ip()
    aliases.create(fresh_target(), client_ip=client)
    before = redis_client.zcard(ENDS_KEY)
    with pytest.raises(CreationRefused) as raised:
        aliases.create(fresh_target(), client_ip=client)
    refusal = raised.value.refusal
    assert refusal.kind == "rate-limited" and refusal.retry_after > 0
    assert refusal.limit == "create" and refusal.client == client
    assert redis_client.zcard(ENDS_KEY) == before
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
    live = aliases.create(fresh_target(), client_ip=fresh_ip()).view.alias.id
    ended = store.create(fresh_target(), 1, None).alias.id  # a lifetime of 1 ms
    removed: list[int] = []
    wait_for(lambda: removed.append(aliases.purge()) or redis_client.zscore(ENDS_KEY, ended) is None,
             10, "purge to take the alias whose millisecond has passed")
    assert sum(removed) >= 1
    assert redis_client.zscore(ENDS_KEY, live) is not None


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
