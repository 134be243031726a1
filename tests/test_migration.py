"""The migration from schema 1's keys, written here as an older tempalias wrote them (spelled
out, not by keys.py, on purpose), on a Redis of the test's own."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tempalias.store import AliasNotFound, AliasStore, alias_token_hash, hash_token, keys
from tempalias.store.migration import SCHEMA, Migrated, Migration

HOUR_MS = 3_600_000


def write_schema_1_alias(client, alias_id: str, token: str, expires_ms: int, *,
                         uses: int | None = None, domain: str | None = None,
                         delivered: int = 0) -> None:
    """An alias, its reservation and its ``ta:ends`` entry as schema 1 wrote them; ``alias_id``
    ``local@DOMAIN`` is at a custom domain (``domain`` is then that domain)."""
    local, at, custom = alias_id.rpartition("@")
    base = f"ta:{{{custom}}}{local}:" if at else f"ta:{{{alias_id}}}:"
    client.set(f"{base}id", "1")
    fields = {"target": f"{local or alias_id}@example.org", "token": hash_token(token),
              "created": expires_ms - HOUR_MS, "expires": expires_ms, "delivered": delivered}
    if uses is not None:
        fields["uses"] = uses
    if domain is not None:
        fields["domain"] = domain
    client.hset(f"{base}alias", mapping=fields)
    client.pexpireat(f"{base}alias", expires_ms)
    client.zadd("ta:ends", {alias_id: expires_ms})
    if at:
        client.sadd(f"ta:dom:{{{custom}}}:ids", local)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_nothing_of_schema_1_is_lost(own_redis, clock):
    """Every id reserved stays taken, live aliases keep working with their old tokens, and
    their ends are purged on time; a custom domain's reservations stay as they are."""
    now = int(clock() * 1000)
    reserved = ["a", "b", "aa", "ab", "ba", "bb"]  # every id of [ab]{1,2}
    for alias_id in reserved:
        own_redis.set(f"ta:{{{alias_id}}}:id", "1")
    own_redis.set("ta:idlen", "2")
    write_schema_1_alias(own_redis, "aa", "aa token", now + HOUR_MS, uses=3, delivered=1)
    write_schema_1_alias(own_redis, "bb", "bb token", now + HOUR_MS, domain="tempalias.test")
    write_schema_1_alias(own_redis, "ab", "ab token", now + 60_000)
    write_schema_1_alias(own_redis, "shop@temp.example.org", "shop token", now + HOUR_MS,
                         domain="temp.example.org")
    store = AliasStore(own_redis, id_length=1, id_alphabet="ab", clock=clock)

    migrated = Migration(store).run()

    assert migrated == Migrated(folded=6, compacted=4, moved=3)
    assert own_redis.get(keys.SCHEMA_KEY) == str(SCHEMA) and Migration(store).current()
    assert own_redis.exists(*(f"ta:{{{alias_id}}}:id" for alias_id in reserved), "ta:ends") == 0
    assert own_redis.exists("ta:{temp.example.org}shop:id") == 1  # erased with its domain
    assert own_redis.exists("ta:{aa}:alias", "ta:{bb}:alias", "ta:{ab}:alias") == 0
    assert own_redis.hgetall(keys.alias_key("aa")) == {
        "t": "aa@example.org", "h": alias_token_hash("aa token"), "c": str(now), "u": "3",
        "d": "1"}
    assert own_redis.pexpiretime(keys.alias_key("aa")) == now + HOUR_MS
    assert "a" not in own_redis.hgetall("ta:{temp.example.org}shop:alias")  # its id says it

    made = [store.create("new@example.org", HOUR_MS, None).alias.id for _ in range(12)]
    assert not set(made) & set(reserved) and len(set(made)) == 12
    assert store.current_id_length() >= 3

    shown = store.get("aa", "aa token")
    assert (shown.target, shown.uses_left, shown.delivered, shown.expires_ms, shown.domain) == (
        "aa@example.org", 3, 1, now + HOUR_MS, None)
    for domain in ("tempalias.test", "alias.example.org"):  # made before several domains
        assert store.commit(store.reserve("aa", domain=domain)) is not None
    assert store.get("aa", "aa token").uses_left == 1
    with pytest.raises(AliasNotFound):
        store.reserve("bb", domain="alias.example.org")
    assert store.reserve("bb", domain="tempalias.test").domain == "tempalias.test"
    assert store.get("shop@temp.example.org", "shop token").domain == "temp.example.org"
    store.revoke("bb", "bb token")
    assert own_redis.exists(keys.alias_key("bb")) == 0

    clock.advance(61)  # ab's end has come: gone, as its expiry takes it
    with pytest.raises(AliasNotFound):
        store.reserve("ab")
    assert own_redis.exists(keys.alias_key("ab")) == 0
    assert own_redis.pexpiretime(keys.alias_key("aa")) == now + HOUR_MS

    assert Migration(store).run() == Migrated(0, 0, 0)
    assert Migration(store).ensure() is None


def test_a_hash_without_its_expiry_gets_it_from_its_field(own_redis):
    expires = now_ms() + HOUR_MS
    write_schema_1_alias(own_redis, "lost", "lost token", expires)
    own_redis.persist("ta:{lost}:alias")
    store = AliasStore(own_redis)
    Migration(store).run()
    assert own_redis.pexpiretime(keys.alias_key("lost")) == expires
    assert store.get("lost", "lost token").target == "lost@example.org"


def test_several_nodes_migrating_at_once_lose_nothing(own_redis):
    count = 3000
    expires = now_ms() + HOUR_MS
    ids = [f"m{n}" for n in range(count)]
    pipe = own_redis.pipeline(transaction=False)
    for alias_id in ids:
        write_schema_1_alias(pipe, alias_id, f"{alias_id} token", expires, uses=2)
    pipe.execute()
    store = AliasStore(own_redis)
    nodes = 3
    together = threading.Barrier(nodes)

    def node(_) -> Migrated:
        migration = Migration(AliasStore(own_redis))
        together.wait(10)
        return migration.run()

    with ThreadPoolExecutor(nodes) as pool:
        runs = list(pool.map(node, range(nodes)))
    # each piece of work done at least once; a reservation or an entry may be handled twice
    assert sum(run.compacted for run in runs) == count  # one script a hash: exactly once
    assert all(run.folded <= count and run.moved <= count for run in runs)
    assert not list(own_redis.scan_iter(match="ta:{*}:id"))
    assert own_redis.exists("ta:ends") == 0
    assert sum(run.moved for run in runs) == count  # RENAME: exactly once
    assert not list(own_redis.scan_iter(match="ta:{m*}:alias"))
    assert not any(take.new for take in store.retired.take_all(ids))
    for alias_id in ids[::100]:
        assert store.get(alias_id, f"{alias_id} token").uses_left == 2
