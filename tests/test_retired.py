"""The retired-id bit set against a Redis of its own: no id taken twice, layers, their shape."""

from __future__ import annotations

import collections
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.crc import key_slot

from harness.processes import wait_for
from tempalias.store import AliasStore, alias_token_hash, aliases, keys, random_id, retired
from tempalias.store.retired import RetiredIds, layer_shape

HOUR_MS = 3_600_000


def fresh_ids(count: int) -> list[str]:
    return [secrets.token_hex(6) for _ in range(count)]


def take_all(retired: RetiredIds, ids: list[str]) -> list:
    """``take_all`` in batches of a thousand, as the migration sends them."""
    return [take for first in range(0, len(ids), 1000)
            for take in retired.take_all(ids[first:first + 1000])]


def layers_of(client, shard: int) -> list[tuple[int, ...]]:
    """(offset, m, k, n) of each layer of one shard, oldest first."""
    stored = client.hget(keys.retired_layers_key(shard), "layers") or ""
    return [tuple(int(part) for part in layer.split(",")) for layer in stored.split(";") if layer]


def test_a_layer_is_sized_from_its_ids_and_error_rate():
    shape = layer_shape(1_000_000, 0.01)
    assert (shape.ids, shape.bits, shape.positions) == (7_813, 74_889, 7)  # of 128 shards
    assert 9.5 < shape.bits / shape.ids < 9.6  # -ln(0.01) / ln(2)^2 bits an id: 1.2 bytes
    assert layer_shape(1_000_000, 0.001).positions == 10
    assert layer_shape(1, 0.5) == layer_shape(128, 0.5)  # at least one id a shard


def test_an_id_once_taken_is_never_new_again(own_redis):
    """No false negatives, over several layers per shard; and an id never taken is refused at
    about the rate TAKE_ID reports, which grows with the full layers."""
    store = AliasStore(own_redis)
    retired = RetiredIds(store.runner, ids_per_layer=3_200, error=0.01)  # 25 ids a shard
    taken = fresh_ids(12_000)
    first = take_all(retired, taken)
    # refused: false positives (burnt), 0 to 4% as the layers fill
    assert sum(take.new for take in first) > 11_600
    assert not any(take.new for take in take_all(retired, taken))
    assert all(len(layers_of(own_redis, shard)) >= 3 for shard in range(keys.ALIAS_SHARDS))
    probes = take_all(retired, fresh_ids(4_000))
    refused = [take.false_positive_rate for take in probes if not take.new]
    # about four full layers a shard of 1% each, and one partly full
    assert 0.01 < len(refused) / len(probes) < 0.12
    assert all(0.02 < rate < 0.1 for rate in refused)


def test_two_creators_of_one_id_never_both_get_it(own_redis):
    store = AliasStore(own_redis)
    contenders = 24
    for _ in range(5):
        alias_id = secrets.token_hex(6)
        together = threading.Barrier(contenders)

        def take(_) -> bool:
            together.wait(10)
            return store.retired.take(alias_id).new

        with ThreadPoolExecutor(contenders) as pool:
            new = list(pool.map(take, range(contenders)))
        assert sorted(new) == [False] * (contenders - 1) + [True]


def test_a_layer_keeps_the_shape_it_opened_with(own_redis):
    """Settings changed later shape new layers only: the old ones are read as they were made."""
    store = AliasStore(own_redis)
    before = RetiredIds(store.runner, ids_per_layer=1_280, error=0.05)  # 10 ids a shard
    old = fresh_ids(3_200)
    take_all(before, old)
    after = RetiredIds(store.runner, ids_per_layer=12_800, error=0.001)
    assert not any(take.new for take in take_all(after, old))
    take_all(after, fresh_ids(3_200))
    small, large = layer_shape(1_280, 0.05), layer_shape(12_800, 0.001)
    for shard in range(keys.ALIAS_SHARDS):
        layers = layers_of(own_redis, shard)
        shapes = [(m, k, n) for _, m, k, n in layers]
        opened_after = shapes.index((large.bits, large.positions, large.ids))
        assert set(shapes[:opened_after]) == {(small.bits, small.positions, small.ids)}
        assert set(shapes[opened_after:]) == {(large.bits, large.positions, large.ids)}
        # one after another in one bitmap, which is as long as they are
        assert [offset for offset, *_ in layers] == [
            sum(m for _, m, _, _ in layers[:i]) for i in range(len(layers))]
        last_offset, last_bits = layers[-1][0], layers[-1][1]
        assert own_redis.strlen(keys.retired_bits_key(shard)) == -(-(last_offset + last_bits) // 8)


def test_a_layer_opened_past_a_mebibyte_grows_the_bitmap_in_place(own_redis):
    """Below 1 MiB a new layer rewrites the bitmap at its exact length (SETBIT would double it);
    past it, SETBIT grows it (by 1 MiB of slack at most), without a copy of megabytes."""
    retired_ids = RetiredIds(AliasStore(own_redis).runner, ids_per_layer=16_000, error=0.01)
    full = (0, 8 * 2**20, 7, 875_000)  # one full layer of 1 MiB, as a busy shard would have
    own_redis.hset(keys.retired_layers_key(0), mapping={
        "layers": ",".join(map(str, full)) + ";", "count": full[3]})
    own_redis.setrange(keys.retired_bits_key(0), 0, b"\0" * 2**20)
    alias_id = next(alias_id for alias_id in iter(lambda: secrets.token_hex(6), None)
                    if retired_ids.call(alias_id).keys[0] == keys.retired_layers_key(0))
    assert retired_ids.take(alias_id).new
    shape = retired_ids.shape
    assert layers_of(own_redis, 0) == [full, (full[1], shape.bits, shape.positions, shape.ids)]
    assert own_redis.strlen(keys.retired_bits_key(0)) == -(-(full[1] + shape.bits) // 8)
    assert not retired_ids.take(alias_id).new


def test_the_shards_are_slots_spread_over_a_cluster():
    """Each shard's two keys share a slot (TAKE_ID runs on one); the 128 shards are 128 slots,
    at most 49 in each third of the slot range (three primaries that split it evenly)."""
    slots = []
    for shard in range(keys.ALIAS_SHARDS):
        pair = {key_slot(keys.retired_layers_key(shard).encode()),
                key_slot(keys.retired_bits_key(shard).encode())}
        assert len(pair) == 1
        slots += pair
    assert len(set(slots)) == keys.ALIAS_SHARDS
    assert max(collections.Counter(slot * 3 // 16384 for slot in slots).values()) <= 49


def test_false_positives_do_not_grow_the_id_length(own_redis):
    """A bit set refusing half of the fresh ids (one full layer at 50%) costs draws, not length:
    growing at every refusal would have added a character at about every creation."""
    store = AliasStore(own_redis, id_length=8, retired_ids_per_layer=16_000,
                       retired_ids_error=0.5)
    take_all(store.retired, fresh_ids(16_000))
    probes = take_all(store.retired, fresh_ids(400))
    assert 0.3 < sum(not take.new for take in probes) / len(probes) < 0.7
    made = {store.create("a@example.org", HOUR_MS, None).alias.id for _ in range(200)}
    assert len(made) == 200
    assert store.current_id_length() == 8 and own_redis.get(keys.IDLEN_KEY) is None


def test_a_crowded_length_grows(own_redis):
    """Real collisions (a young bit set's refusals are nearly certain to be) grow the length, and
    no id is handed out twice meanwhile."""
    store = AliasStore(own_redis, id_length=1, id_alphabet="abc")
    made = [store.create("a@example.org", HOUR_MS, None).alias.id for _ in range(30)]
    assert len(set(made)) == 30
    assert store.current_id_length() >= 3  # 3 + 9 ids of one and two characters


# --- what it costs: 100,000 aliases made, measured, retired and measured again


MEASURED = 100_000
MEASURED_PER_LAYER = 115_000  # a layer each shard, with room for chance's spread (899 ids)
HEX = "0123456789abcdef"


def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


def create_pipelined(store: AliasStore, count: int, length: int) -> list[str]:
    """``count`` aliases through the store's own script, CREATE_ALIAS (the id taken in the bit
    set and the alias stored), sent a thousand at a time: what ``create`` does, fifty times
    faster."""
    made: list[str] = []
    while len(made) < count:
        drawn = list({random_id(HEX, length) for _ in range(min(1000, count - len(made)))})
        calls = [aliases._Order(f"u{len(made) + i:05}@example.org",
                                alias_token_hash(secrets.token_urlsafe(24)), HOUR_MS, None,
                                "tempalias.test", False, False).call(alias_id, store.clock,
                                                                     store.retired)[1]
                 for i, alias_id in enumerate(drawn)]
        made += [alias_id for alias_id, reply in zip(drawn, store.runner.send(*calls))
                 if reply == 1]
    return made[:count]


def retire(client, alias_ids: list[str]) -> None:
    """The aliases' keys gone, as their expiry takes them: a thousand at a time."""
    for first in range(0, len(alias_ids), 1000):
        client.unlink(*(keys.alias_key(alias_id) for alias_id in alias_ids[first:first + 1000]))


def warm_up(store: AliasStore) -> None:
    """Each script the measurement runs, once, then every key deleted: what Redis keeps from a
    script's first call (its cache, the Lua client's buffers: some 200 KB) is no alias's and no
    id's."""
    made = store.create("warm@example.org", HOUR_MS, None, domain="tempalias.test")
    store.revoke(made.alias.id, made.token)
    store.redis.flushall()


@pytest.mark.slow
def test_a_retired_id_costs_two_bytes_at_most_and_is_never_handed_out_again(own_redis, clock):
    """Issue 15: bytes per live alias and per retired id, from INFO memory on a Redis of the
    test's own (ids of five hex digits: one draw in ten hits a retired id as the last are made)."""
    store = AliasStore(own_redis, id_length=5, id_alphabet=HEX, clock=clock,
                       retired_ids_per_layer=MEASURED_PER_LAYER)
    warm_up(store)
    empty = used_memory(own_redis)

    made = create_pipelined(store, MEASURED, 5)
    assert len(set(made)) == MEASURED
    live = (used_memory(own_redis) - empty) / MEASURED
    retire(own_redis, made)

    again = [store.create("again@example.org", HOUR_MS, None) for _ in range(3000)]
    assert not {made.alias.id for made in again} & set(made)
    for alias in again:
        store.revoke(alias.alias.id, alias.token)

    bit_set = [key for shard in range(keys.ALIAS_SHARDS)
               for key in (keys.retired_layers_key(shard), keys.retired_bits_key(shard))]
    # and nothing else, but the id length should the last draws have found it crowded
    assert set(own_redis.scan_iter(count=1000)) - {keys.IDLEN_KEY} == set(bit_set)
    held = 0  # ids in the bit set: full layers and the newest one's count
    for shard in range(keys.ALIAS_SHARDS):
        *full, newest = layers_of(own_redis, shard)
        held += sum(n for *_, n in full)
        held += int(own_redis.hget(keys.retired_layers_key(shard), "count"))
    assert held == MEASURED + len(again)
    # what Redis frees when the bit set goes is what the retired ids cost it (the tables of the
    # keyspace, the connections' buffers: they come and go whatever the ids)
    own = sum(own_redis.memory_usage(key, samples=0) for key in bit_set) / held
    with_bit_set = used_memory(own_redis)
    own_redis.delete(*bit_set)
    per_retired_id = (with_bit_set - used_memory(own_redis)) / held
    print(f"\nper live alias: {live:.1f} B (its share of the bit set included); "
          f"per retired id: {per_retired_id:.2f} B (MEMORY USAGE of the bit set: {own:.2f} B)")
    assert per_retired_id <= 2.0
    assert live < 300
