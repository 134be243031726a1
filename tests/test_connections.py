"""Which deployment a TEMPALIAS_REDIS_URL names, and how commands are routed on a Cluster."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from tempalias.store import BadRedisUrl, keys, parse_redis_url
from tempalias.store.connections import command_slots, first_key


def test_one_redis_urls_stay_what_redis_py_makes_of_them():
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@redis.example:6380/1",
                "unix:///var/lib/tempalias/redis/redis.sock"):
        assert parse_redis_url(url).kind == "single"


def test_a_sentinel_url_names_its_sentinels_service_database_and_password():
    target = parse_redis_url("redis+sentinel://:s%40cret@10.0.0.1:26379,[2001:db8::2]:26380,"
                             "sentinel3/tempalias/2")
    assert target.kind == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("2001:db8::2", 26380), ("sentinel3", 26379))
    assert (target.service, target.db, target.password) == ("tempalias", 2, "s@cret")


def test_a_cluster_url_names_its_seeds():
    target = parse_redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2")
    assert (target.kind, target.nodes) == ("cluster", (("10.0.0.1", 7000), ("10.0.0.2", 6379)))
    assert target.password is None


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1", "must start with"),
    ("redis+sentinel://127.0.0.1:26379", "names no service"),
    ("redis+sentinel://127.0.0.1:26379/tempalias/x", "not a number"),
    ("redis+sentinel://127.0.0.1:0/tempalias", "not HOST:PORT"),
    ("redis+cluster://127.0.0.1:7000/3", "one database"),
    ("redis+cluster://:pw@", "not HOST:PORT"),
    ("redis+cluster://127.0.0.1:7000?timeout=3", "no query options"),
])
def test_a_url_that_names_no_deployment_says_why(url, words):
    with pytest.raises(BadRedisUrl, match=words):
        parse_redis_url(url)


def test_a_command_goes_to_the_slot_of_its_first_key_and_keyless_ones_ride_along():
    alias_key, ends = keys.alias_key("k3x9qa"), "ta:other"
    commands = [("PING",), ("EVALSHA", "0" * 40, 2, alias_key, keys.held_key("k3x9qa"), "x"),
                ("WAIT", 1, 500), ("ZADD", ends, 1, "k3x9qa"), ("WAIT", 1, 500),
                ("EVALSHA", "0" * 40, 0, "arg")]
    assert first_key(commands[1]) == alias_key and first_key(commands[0]) is None
    own, other = key_slot(alias_key.encode()), key_slot(ends.encode())
    assert command_slots(commands) == [own, own, own, other, other, other]
    assert command_slots([("PING",)]) == [None]
