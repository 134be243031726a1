"""Retired ids: every id ever handed out at the operator's domains, in a Bloom-style bit set.

An id is never handed out twice: mail to an alias that ended must not reach a stranger who got
its id later. Until schema 2 each id kept a reservation key (``ta:{id}:id``) forever, some 83
bytes of Redis per id ever issued, growing without end. The question those keys answered is only
"was this id ever taken?", and a Bloom filter answers it in a fixed number of bits per id: it
never says no for an id that was taken (no false negatives: bits are only ever set), and says yes
for one that was not with a chosen probability, which costs no more than another draw. At 1%
that is -ln(0.01) / ln(2)² = 9.6 bits, 1.2 bytes, per id.

- Shards: ``keys.ALIAS_SHARDS`` (128), an id's shard picked by a hash of it
  (``keys.alias_shard``). A shard is a hash of its layers (``keys.retired_layers_key``) and one
  bitmap (``keys.retired_bits_key``) under the hash tag of the shard's aliases, so that one
  script (``aliases.CREATE_ALIAS``, with ``TAKE_ID_LUA``) takes an id and stores its alias in one
  Redis Cluster slot, and the shards spread over the nodes.
- Layers (a scalable Bloom filter, as Almeida et al. 2007, with layers of one size): a layer is
  sized when it opens, from the settings of that moment (``TEMPALIAS_RETIRED_IDS_PER_LAYER``
  ids over all shards, ``TEMPALIAS_RETIRED_IDS_ERROR``): m = ceil(-n ln p / ln(2)²) bits and
  k = round(m / n ln 2) positions for n = ids per layer per shard. Its offset in the bitmap, m, k
  and n are kept in the shard's hash, so a later change of the settings shapes new layers only
  and never misreads old ones. When the newest layer holds n ids, the next id opens a new one.
  An id never taken is refused if any layer says it may hold it, so each full layer adds about p
  to the share of draws refused: a layer should hold a long while of new ids.
- Positions: BLAKE2b of the id gives the shard and two 32-bit numbers h1, h2; TAKE_ID reads bit
  (h1 + i h2) mod m of a layer for i < k (double hashing, Kirsch and Mitzenmacher 2006). Lua's
  numbers are doubles: everything stays below 2^53 (h1 + i h2 < 2^38, offsets < 2^32).
- ``take_id`` tests and sets in one script per shard: of two creators of one id, one alone is
  told it is new. An id it took whose alias then could not be stored is simply burnt.

Custom domains keep their own reservations (``ta:{DOMAIN}local:id``), erased with the domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from tempalias.store import keys
from tempalias.store.runner import Call, Script, ScriptRunner, operation

DEFAULT_IDS_PER_LAYER = 1_000_000
DEFAULT_ERROR = 0.01

# Lua of the scripts that take an id: take_id(layers, bits, h1, h2, m, k, n).
# layers - the shard's layers (ta:retired:{s:N}): 'layers', each "offset,m,k,n;" oldest first
#          (bits, ids); 'count', the ids in the newest layer
# bits   - the shard's bitmap (ta:retired:{s:N}:bits), every layer at its offset
# h1, h2 - the id's two hashes, below 2^32
# m, k, n of a layer opened now (the settings' shape)
# returns 1 when no layer may hold the id: its k bits are now set in the newest layer (opened
#         when the newest was full) and counted; else, with nothing written, the chance that a
#         refusal of an id never taken happens here, that any layer's k bits are set by others:
#         each layer's (1 - e^(-k c / m))^k (c: the ids it holds) joined, as a decimal string
#
# A layer opened in a bitmap shorter than 1 MiB is written at its exact length (GET, SET): SETBIT
# past the end would grow the string to twice what it needs (sds's greedy growth, up to
# SDS_MAX_PREALLOC, 1 MiB), and a longer one by 1 MiB at most.
TAKE_ID_LUA = """
local function take_id(layers_key, bits_key, h1, h2, new_m, new_k, new_n)
    h1, h2 = tonumber(h1), tonumber(h2)
    local meta = redis.call('HMGET', layers_key, 'layers', 'count')
    local layers = {}
    for offset, m, k, n in string.gmatch(meta[1] or '', '(%d+),(%d+),(%d+),(%d+);') do
        table.insert(layers, {offset = tonumber(offset), m = tonumber(m), k = tonumber(k),
                              n = tonumber(n), count = tonumber(n)})
    end
    local count = tonumber(meta[2] or '0')
    if #layers > 0 then
        layers[#layers].count = count
    end

    local function may_hold(layer)
        for i = 0, layer.k - 1 do
            if redis.call('GETBIT', bits_key, layer.offset + (h1 + i * h2) % layer.m) == 0 then
                return false
            end
        end
        return true
    end

    for _, layer in ipairs(layers) do
        if may_hold(layer) then
            local rate = 0
            for _, each in ipairs(layers) do
                local here = (1 - math.exp(-each.k * each.count / each.m)) ^ each.k
                rate = rate + here - rate * here  -- P(A or B), exact for tiny rates too
            end
            return string.format('%.6g', rate)
        end
    end

    local newest = layers[#layers]
    if not newest or count >= newest.n then
        local offset = 0
        if newest then
            offset = newest.offset + newest.m
        end
        newest = {offset = offset, m = tonumber(new_m), k = tonumber(new_k),
                  n = tonumber(new_n)}
        local bytes = math.ceil((offset + newest.m) / 8)
        if bytes < 1048576 then
            local bits = redis.call('GET', bits_key) or ''
            redis.call('SET', bits_key, bits .. string.rep('\\0', bytes - #bits))
        else
            redis.call('SETBIT', bits_key, offset + newest.m - 1, 0)
        end
        redis.call('HSET', layers_key, 'layers', (meta[1] or '') .. table.concat(
            {newest.offset, newest.m, newest.k, newest.n}, ',') .. ';')
        count = 0
    end
    for i = 0, newest.k - 1 do
        redis.call('SETBIT', bits_key, newest.offset + (h1 + i * h2) % newest.m, 1)
    end
    redis.call('HSET', layers_key, 'count', count + 1)
    return 1
end
"""

# KEYS[1] - the shard's layers (ta:retired:{s:N}), KEYS[2] - its bitmap, as take_id's
# ARGV[1..5] - h1, h2, m, k, n, as take_id's
# returns take_id's answer: 1, or the shard's false-positive rate (the migration folds ids in)
TAKE_ID = Script(TAKE_ID_LUA + """
return take_id(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
""")


@dataclass(frozen=True)
class LayerShape:
    """One layer of one shard: ``ids`` it holds, its ``bits`` and the ``positions`` (k) per id."""

    ids: int
    bits: int
    positions: int


def layer_shape(ids_per_layer: int, error: float, shards: int = keys.ALIAS_SHARDS) -> LayerShape:
    """The shape of a layer opened with these settings: n = ids per shard, m = ceil(-n ln p /
    ln(2)²) bits, k = round(m / n ln 2) positions (at least one)."""
    if not 0 < error < 1:
        raise ValueError("the error rate is a probability between 0 and 1")
    ids = max(1, math.ceil(ids_per_layer / shards))
    bits = math.ceil(-ids * math.log(error) / math.log(2) ** 2)
    return LayerShape(ids, bits, max(1, round(bits / ids * math.log(2))))


@dataclass(frozen=True)
class Take:
    """What TAKE_ID said of one id."""

    new: bool  # never taken before, and taken now: its caller alone may hand it out
    # when refused: the chance that the shard refuses an id never taken (its false positives)
    false_positive_rate: float = 0.0


class RetiredIds:
    """The ids ever handed out at the operator's domains (see the module's docstring).

    ``runner``: the alias store's (``AliasStore.runner``), so both share their connections."""

    def __init__(self, runner: ScriptRunner, ids_per_layer: int = DEFAULT_IDS_PER_LAYER,
                 error: float = DEFAULT_ERROR) -> None:
        self.runner = runner
        self.error = error
        self.shape = layer_shape(ids_per_layer, error)

    def keys_and_args(self, alias_id: str) -> tuple[list[str], list[int]]:
        """take_id's keys (the id's shard) and arguments (h1, h2, m, k, n) for ``alias_id``."""
        digest = keys.id_digest(alias_id)
        shard = keys.alias_shard(alias_id)
        first = int.from_bytes(digest[4:8], "big")
        # odd, so that a layer whose m is even still gets k distinct positions from most ids
        step = int.from_bytes(digest[8:12], "big") | 1
        shape = self.shape
        return ([keys.retired_layers_key(shard), keys.retired_bits_key(shard)],
                [first, step, shape.bits, shape.positions, shape.ids])

    def call(self, alias_id: str) -> Call:
        """The TAKE_ID call of ``alias_id``, to send alone or with others; ``outcome`` reads its
        reply."""
        return Call(TAKE_ID, *self.keys_and_args(alias_id))

    @staticmethod
    def outcome(reply: object) -> Take:
        if reply == 1:
            return Take(True)
        return Take(False, float(reply))  # type: ignore[arg-type]

    @operation
    def take(self, alias_id: str) -> Take:
        """Take ``alias_id`` for good, if no layer says it may have been taken."""
        [reply] = self.runner.send(self.call(alias_id))
        return self.outcome(reply)

    @operation
    def take_all(self, alias_ids: Iterable[str]) -> list[Take]:
        """``take`` of each id, in one write (the migration folds old reservations in)."""
        calls = [self.call(alias_id) for alias_id in alias_ids]
        return [self.outcome(reply) for reply in self.runner.send(*calls)] if calls else []
