"""The store's RateLimiter on the session's real Redis: token buckets and connection leases."""

from __future__ import annotations

import secrets

import pytest

from harness.processes import wait_for
from tempalias.config import Rate
from tempalias.store import RateLimiter, StoreUnavailable, connect


@pytest.fixture
def limiter(redis_client):
    return RateLimiter(redis_client)


@pytest.fixture
def subject():
    return f"test:{secrets.token_hex(6)}"


def test_a_bucket_lets_its_burst_through_then_says_how_long_to_wait(limiter, subject):
    limits = {"burst": Rate(3, 30.0)}
    assert [limiter.take(subject, limits) for _ in range(3)] == [None, None, None]
    throttled = limiter.take(subject, limits)
    assert throttled is not None
    assert throttled.limit == "burst"
    # one token comes back every 30/3 = 10 s
    assert 0 < throttled.retry_after_ms <= 10_000
    assert throttled.retry_after_seconds == -(-throttled.retry_after_ms // 1000)


def test_a_bucket_refills_after_its_interval(limiter, subject):
    limits = {"fast": Rate(1, 2.0)}
    assert limiter.take(subject, limits) is None
    assert limiter.take(subject, limits) is not None
    wait_for(lambda: limiter.take(subject, limits) is None, 10, "the bucket to refill")


def test_refused_requests_take_nothing(limiter, subject):
    limits = {"slow": Rate(1, 3.0)}
    assert limiter.take(subject, limits) is None
    # knocking while empty does not push the moment of the next token further away
    waits = [limiter.take(subject, limits) for _ in range(20)]
    assert all(waits)
    assert waits[-1].retry_after_ms <= waits[0].retry_after_ms
    wait_for(lambda: limiter.take(subject, limits) is None, 10, "the bucket to refill")


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
    keys = sorted(redis_client.scan_iter(match=f"ta:rl:{{{subject}}}:*"))
    assert keys == [f"ta:rl:{{{subject}}}:a", f"ta:rl:{{{subject}}}:b"]
    assert all(0 < redis_client.pttl(key) <= 600_000 for key in keys)


def test_two_limiters_on_one_redis_share_the_buckets(redis_server, limiter, subject):
    other = RateLimiter(connect(redis_server.url, timeout=5.0))
    try:
        limits = {"shared": Rate(2, 3600.0)}
        assert limiter.take(subject, limits) is None
        assert other.take(subject, limits) is None
        assert limiter.take(subject, limits) is not None
        assert other.take(subject, limits) is not None
    finally:
        other.redis.close()


def test_leases_bound_open_connections_until_given_back(limiter, subject):
    first = limiter.open_lease(subject, 2, 60_000)
    second = limiter.open_lease(subject, 2, 60_000)
    assert first and second and first != second
    assert limiter.open_lease(subject, 2, 60_000) is None
    limiter.close_lease(subject, first)
    assert limiter.open_lease(subject, 2, 60_000) is not None


def test_a_lease_whose_holder_died_lapses(limiter, subject):
    assert limiter.open_lease(subject, 1, 1000) is not None
    assert limiter.open_lease(subject, 1, 1000) is None
    wait_for(lambda: limiter.open_lease(subject, 1, 1000), 10, "the dead lease to lapse")


def test_an_unreachable_redis_is_store_unavailable(subject):
    from tempalias.embedded_redis import free_loopback_port

    client = connect(f"redis://127.0.0.1:{free_loopback_port()}/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            RateLimiter(client).take(subject, {"x": Rate(1, 1.0)})
        with pytest.raises(StoreUnavailable):
            RateLimiter(client).open_lease(subject, 1, 1000)
    finally:
        client.close()
