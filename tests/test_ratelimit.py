"""The store's RateLimiter on the session's real Redis: token buckets and connection leases.

Time is the ``clock`` fixture's, which moves only when a test says so: a refill or a lapse is
seen at once, and waits are exact."""

from __future__ import annotations

import secrets

import pytest

from tempalias.config import Rate
from tempalias.store import RateLimiter, StoreUnavailable, Throttled, connect, keys

LEASE_MS = 60_000
FULL_RETRY_MS = 60_000


@pytest.fixture
def limiter(redis_client, clock):
    limiter = RateLimiter(redis_client, clock=clock)
    yield limiter
    limiter.close()


@pytest.fixture
def subject():
    return f"test:{secrets.token_hex(6)}"


def test_a_bucket_lets_its_burst_through_then_says_how_long_to_wait(limiter, subject):
    limits = {"burst": Rate(3, 30.0)}
    assert [limiter.take(subject, limits) for _ in range(3)] == [None, None, None]
    # one token comes back every 30/3 = 10 s, and no time has passed
    assert limiter.take(subject, limits) == Throttled("burst", 10_000)
    assert Throttled("burst", 10_000).retry_after_seconds == 10
    assert Throttled("burst", 9_001).retry_after_seconds == 10


def test_a_bucket_refills_after_its_interval(limiter, subject, clock):
    limits = {"fast": Rate(1, 2.0)}
    assert limiter.take(subject, limits) is None
    clock.advance(1.9)
    assert limiter.take(subject, limits) == Throttled("fast", 100)
    clock.advance(0.1)
    assert limiter.take(subject, limits) is None


def test_refused_requests_take_nothing(limiter, subject, clock):
    limits = {"slow": Rate(1, 3.0)}
    assert limiter.take(subject, limits) is None
    # knocking while empty does not push the moment of the next token further away
    assert [limiter.take(subject, limits) for _ in range(20)] == [Throttled("slow", 3000)] * 20
    clock.advance(3.0)
    assert limiter.take(subject, limits) is None


def test_several_buckets_are_all_or_nothing(limiter, subject):
    roomy, tight = Rate(100, 3600.0), Rate(1, 3600.0)
    assert limiter.take(subject, {"roomy": roomy, "tight": tight}) is None
    throttled = limiter.take(subject, {"roomy": roomy, "tight": tight})
    assert throttled is not None and throttled.limit == "tight"
    # the refused request took nothing from "roomy": it still has 99 of its 100
    assert all(limiter.take(subject, {"roomy": roomy}) is None for _ in range(99))
    assert limiter.take(subject, {"roomy": roomy}) is not None


def test_subjects_do_not_share_buckets(limiter, subject):
    limits = {"one": Rate(1, 3600.0)}
    assert limiter.take(subject, limits) is None
    assert limiter.take(subject + "-other", limits) is None
    assert limiter.take(subject, limits) is not None


def test_no_limits_means_go(limiter, subject):
    assert limiter.take(subject, {}) is None


def test_keys_share_the_subject_hash_tag_and_expire_by_themselves(limiter, subject, redis_client):
    limiter.take(subject, {"a": Rate(2, 60.0), "b": Rate(5, 600.0)})
    found = sorted(redis_client.scan_iter(match=keys.limit_pattern(subject)))
    assert found == [keys.limit_key(subject, "a"), keys.limit_key(subject, "b")]
    assert all(f"{{{subject}}}" in key for key in found)
    assert all(0 < redis_client.pttl(key) <= 600_000 for key in found)


def test_without_a_clock_redis_keeps_the_time_and_two_limiters_share_the_buckets(
        redis_server, redis_client, subject):
    one, other = RateLimiter(redis_client), RateLimiter(connect(redis_server.url, timeout=5.0))
    try:
        limits = {"shared": Rate(2, 3600.0)}
        assert one.take(subject, limits) is None
        assert other.take(subject, limits) is None
        assert one.take(subject, limits) is not None
        assert other.take(subject, limits) is not None
    finally:
        one.close()
        other.close()
        other.redis.close()


# --- admit and leave: what an SMTP connection holds


def admit(limiter, subject, limits=None, open_limit=2, advance=None):
    return limiter.admit(subject, limits or {}, open_limit, LEASE_MS, FULL_RETRY_MS, advance)


def open_leases(redis_client, subject) -> int:
    return redis_client.zcard(keys.lease_key(subject))


def test_leases_bound_open_connections_until_given_back(limiter, subject, redis_client):
    first, second = admit(limiter, subject), admit(limiter, subject)
    assert first.lease_id and second.lease_id and first.lease_id != second.lease_id
    assert admit(limiter, subject) == Throttled("open", FULL_RETRY_MS)
    limiter.leave(first)
    assert open_leases(redis_client, subject) == 1
    assert admit(limiter, subject).lease_id is not None


def test_leaving_gives_back_that_connections_lease_and_no_other(limiter, subject, redis_client):
    first, second = admit(limiter, subject), admit(limiter, subject)
    limiter.leave(second)
    limiter.leave(second)  # twice is once
    assert redis_client.zrange(keys.lease_key(subject), 0, -1) == [first.lease_id]


def test_a_lease_whose_holder_died_lapses(limiter, subject, clock):
    assert limiter.admit(subject, {}, 1, 1000, FULL_RETRY_MS).lease_id is not None
    assert limiter.admit(subject, {}, 1, 1000, FULL_RETRY_MS) == Throttled("open", FULL_RETRY_MS)
    clock.advance(1.0)
    assert limiter.admit(subject, {}, 1, 1000, FULL_RETRY_MS).lease_id is not None


def test_a_client_turned_away_at_admission_takes_nothing(limiter, subject, redis_client):
    limits = {"connect": Rate(2, 3600.0)}
    first = admit(limiter, subject, limits, open_limit=1)
    # no slot left: the connection bucket is not touched
    assert admit(limiter, subject, limits, open_limit=1) == Throttled("open", FULL_RETRY_MS)
    limiter.leave(first)
    admit(limiter, subject, limits, open_limit=5)
    # no token left: no slot is taken
    assert admit(limiter, subject, limits, open_limit=5).limit == "connect"
    assert open_leases(redis_client, subject) == 1


def test_the_first_message_is_paid_at_admission_and_given_back_unless_spent(limiter, subject):
    messages = {"message": Rate(2, 3600.0)}
    unused = admit(limiter, subject, advance=messages)
    spent = admit(limiter, subject, advance=messages)
    assert unused.advance == spent.advance == messages
    assert limiter.take(subject, messages) == Throttled("message", 1_800_000)  # both paid
    assert spent.spend_advance() and not spent.spend_advance()
    limiter.leave(spent)
    limiter.leave(unused)
    assert limiter.take(subject, messages) is None  # the unused one came back
    assert limiter.take(subject, messages) is not None


def test_no_token_for_the_first_message_still_admits(limiter, subject):
    messages = {"message": Rate(1, 3600.0)}
    assert limiter.take(subject, messages) is None
    lease = admit(limiter, subject, advance=messages)
    assert lease.lease_id is not None and lease.advance == {}
    assert not lease.spend_advance()  # the message asks for its own token then


def test_an_unreachable_redis_is_store_unavailable(subject):
    from tempalias.embedded_redis import free_loopback_port

    client = connect(f"redis://127.0.0.1:{free_loopback_port()}/0", timeout=0.5)
    limiter = RateLimiter(client)
    try:
        with pytest.raises(StoreUnavailable):
            limiter.take(subject, {"x": Rate(1, 1.0)})
        with pytest.raises(StoreUnavailable):
            admit(limiter, subject)
    finally:
        limiter.close()
        client.close()


def test_leases_of_several_connections_and_subjects_go_back_in_one_call(limiter, redis_client):
    messages = {"message": Rate(3, 3600.0)}
    one, two = f"test:{secrets.token_hex(6)}", f"test:{secrets.token_hex(6)}"
    leases = [admit(limiter, one, advance=messages), admit(limiter, one, advance=messages),
              admit(limiter, two, advance=messages)]
    assert leases[0].spend_advance()
    limiter.leave(*leases)
    assert open_leases(redis_client, one) == open_leases(redis_client, two) == 0
    # one's two unspent... one's spent token stays taken, the other came back
    assert [limiter.take(one, messages) for _ in range(3)] == [None, None, Throttled("message", 1_200_000)]
    assert [limiter.take(two, messages) for _ in range(3)] == [None, None, None]


def test_an_admission_first_gives_back_what_closed_connections_held(limiter, subject,
                                                                     redis_client):
    messages = {"message": Rate(1, 3600.0)}
    first = limiter.admit(subject, {}, 1, LEASE_MS, FULL_RETRY_MS, messages)
    assert first.open == 1 and first.advance == messages
    # the one slot and the one token are free again for the next connection, in the same write
    second = limiter.admit(subject, {}, 1, LEASE_MS, FULL_RETRY_MS, messages, leaving=[first])
    assert second.open == 1 and second.advance == messages
    assert redis_client.zrange(keys.lease_key(subject), 0, -1) == [second.lease_id]


# --- conftest's ``let_time_pass``: what the end-to-end limit tests rely on


def test_letting_time_pass_in_redis_is_time_passing_for_a_limiter_on_redis_clock(
        redis_client, subject, let_time_pass):
    """A service reads Redis's clock, so its tests move the moments stored in Redis instead: to
    the limiter that must be the same as waiting, to the millisecond, for buckets and leases."""
    limiter = RateLimiter(redis_client)  # no clock: Redis's, as in a running service
    try:
        hourly = {"hourly": Rate(2, 3600.0)}
        assert [limiter.take(subject, hourly) for _ in range(2)] == [None, None]
        wait = limiter.take(subject, hourly).retry_after_ms
        assert 1_790_000 < wait <= 1_800_000
        let_time_pass(wait / 1000 - 5)
        assert 4_000 < limiter.take(subject, hourly).retry_after_ms <= 5_000  # not yet
        let_time_pass(5)
        assert limiter.take(subject, hourly) is None
        assert limiter.take(subject, hourly) is not None  # one token came back, no more

        assert limiter.admit(subject, {}, 1, LEASE_MS, FULL_RETRY_MS).lease_id is not None
        assert limiter.admit(subject, {}, 1, LEASE_MS, FULL_RETRY_MS) == Throttled(
            "open", FULL_RETRY_MS)
        let_time_pass(LEASE_MS / 1000 - 5)
        assert limiter.admit(subject, {}, 1, LEASE_MS, FULL_RETRY_MS) == Throttled(
            "open", FULL_RETRY_MS)  # the lease of a holder that died has not lapsed yet
        let_time_pass(5)
        assert limiter.admit(subject, {}, 1, LEASE_MS, FULL_RETRY_MS).lease_id is not None

        let_time_pass(3600)  # and a key whose moment has passed is gone, as if it expired
        assert not list(redis_client.scan_iter(match=keys.limit_pattern(subject)))
    finally:
        limiter.close()
