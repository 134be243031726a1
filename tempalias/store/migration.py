"""Schema 2, from the keys an older tempalias wrote: run once, before the service serves.

Schema 1 kept a reservation key for each id at the operator's domains forever (``ta:{id}:id``),
spelled out an alias hash's fields (``target``, ``token`` as SHA-256 hex, ``expires``...) and
kept every alias's end in one ``ta:ends``; an alias's keys had the id as their hash tag. Schema 2
(``keys.py``) remembers ids in the retired-id bit set (``retired.py``), keeps an alias in
one-letter fields with its end as the key's own expiry and nowhere else, under the hash tag of
its id's shard. ``Migration.run``:

1. folds every reservation of an id at the operator's domains into the bit set, then deletes
   it (a custom domain's ``ta:{DOMAIN}local:id`` stays: its domain's erasure reaches it);
2. rewrites every alias hash in schema 1's field names, one script per alias (one slot), its
   token's hash shortened to what ``alias_token_hash`` makes of the same token, its expiry kept,
   and moves an operator's alias's keys (``alias``, ``held``, ``revs``) under its shard's tag
   (DUMP and RESTORE with their expiry, then DEL: between two slots, as on a Cluster);
3. drops ``ta:ends``: an alias at the operator's domains expires by itself, one at a custom
   domain is listed with its end in its domain's ``:aliases``, which purge walks;

then writes ``ta:schema`` (``keys.SCHEMA_KEY``) = 2, so that the next start finds nothing to do.

Each step can stop half way, run again, or run on several nodes at once, and loses nothing: a
reservation is deleted only once the bit set holds its id; an alias is rewritten by one script
that checks it is still in the old form, and moved only once it is in the new one.
Keys are found by SCAN (``scan_iter``, which in a cluster walks every primary), a thousand at a
time, each batch one operation within the store's budget.

Every node must run schema 2's code once the service serves again: an older one would neither
see the bit set nor read the compact hashes (stop the old nodes, then start the new).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import redis

from tempalias.store import keys
from tempalias.store.aliases import AliasStore, token_hash_of_hex
from tempalias.store.errors import StoreUnavailable
from tempalias.store.runner import Call, Script, operation

SCHEMA = keys.SCHEMA
BATCH = 1000
# schema 1's keys at the operator's domains; a custom domain's (ta:{DOMAIN}local:...) never match
_OLD_RESERVATION = re.compile(r"ta:\{([a-z0-9]{1,64})\}:id")
_OPERATORS_ALIAS = re.compile(r"ta:\{([a-z0-9]{1,64})\}:alias")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# KEYS[1]   - an alias hash (ta:{id}alias)
# ARGV[1]   - its token field as schema 1 wrote it (SHA-256 hex), as read just before
# ARGV[2]   - the same token's hash as schema 2 keeps it (alias_token_hash)
# ARGV[3]   - '1' when the alias is at a custom domain, whose id carries it: not kept again
# ARGV[4..] - pairs: a field's schema 1 name and its letter (keys.ALIAS_FIELDS)
# returns 1 when the hash was in schema 1's form and now is in schema 2's, with the same
#         expiry (its ``expires`` field's, should the key have none), a delivered count of 0
#         left out, and any field not named kept as it was; 0 when it is not in schema 1's form
#         (rewritten already, or gone): nothing is written then
COMPACT_ALIAS = Script("""
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
    return 0
end
local flat = redis.call('HGETALL', KEYS[1])
local old = {}
for i = 1, #flat, 2 do
    old[flat[i]] = flat[i + 1]
end
local ends = redis.call('PEXPIRETIME', KEYS[1])
if ends < 0 then
    ends = tonumber(old['expires'] or '-1')
end
old['expires'] = nil
old['token'] = ARGV[2]
if old['delivered'] == '0' then
    old['delivered'] = nil
end
if ARGV[3] == '1' then
    old['domain'] = nil
end
local new = {}
for i = 4, #ARGV, 2 do
    if old[ARGV[i]] then
        table.insert(new, ARGV[i + 1])
        table.insert(new, old[ARGV[i]])
        old[ARGV[i]] = nil
    end
end
for name, value in pairs(old) do
    table.insert(new, name)
    table.insert(new, value)
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(new))
if ends > 0 then
    redis.call('PEXPIREAT', KEYS[1], ends)
end
return 1
""")


@dataclass(frozen=True)
class Migrated:
    """What one run of the migration did."""

    folded: int  # reservations of ids folded into the bit set, and deleted
    compacted: int  # alias hashes rewritten in one-letter fields
    moved: int  # aliases at the operator's domains moved under their shard's tag

    def __str__(self) -> str:
        return (f"folded {self.folded} id reservations into the retired-id bit set, "
                f"compacted {self.compacted} alias hashes, moved {self.moved} aliases under "
                f"their shards' tags, dropped ta:ends; schema {SCHEMA}")


def _batches(found: Iterator[str]) -> Iterator[list[str]]:
    """``found`` a thousand at a time; Redis's failures while scanning as StoreUnavailable."""
    batch: list[str] = []
    try:
        for key in found:
            batch.append(key)
            if len(batch) == BATCH:
                yield batch
                batch = []
    except redis.exceptions.RedisError as exc:
        raise StoreUnavailable(f"redis unavailable while scanning: {exc}") from None
    if batch:
        yield batch


class Migration:
    """Brings the keys of an alias store's Redis to schema 2 (see the module's docstring)."""

    def __init__(self, store: AliasStore) -> None:
        self.redis = store.redis
        self.runner = store.runner
        self.retired = store.retired

    @operation
    def current(self) -> bool:
        """Whether the keys are in schema 2 already (a run finished and said so)."""
        [schema] = self.runner.send(("GET", keys.SCHEMA_KEY))
        return schema is not None and int(schema) >= SCHEMA

    def run(self) -> Migrated:
        """Every step, whatever ``ta:schema`` says, then ``ta:schema`` = 2."""
        folded = sum(self._fold(batch) for batch in self._found("ta:{*}:id", "string"))
        compacted = sum(self._compact(batch) for batch in self._found("ta:{*alias", "hash"))
        moved = sum(self._move(batch) for batch in self._found("ta:{*}:alias", "hash"))
        self._drop_ends()
        self._mark()
        return Migrated(folded, compacted, moved)

    def ensure(self) -> Migrated | None:
        """``run`` unless the keys are in schema 2 already (None then): what ``serve`` does."""
        return None if self.current() else self.run()

    def _found(self, pattern: str, kind: str) -> Iterator[list[str]]:
        return _batches(self.redis.scan_iter(match=pattern, count=BATCH, _type=kind))

    @operation
    def _fold(self, found: list[str]) -> int:
        matched = [(key, match.group(1)) for key in found
                   if (match := _OLD_RESERVATION.fullmatch(key))]
        if not matched:
            return 0
        self.runner.send(*(self.retired.call(alias_id) for _, alias_id in matched))
        self.runner.send(*(("DEL", key) for key, _ in matched))
        return len(matched)

    @operation
    def _compact(self, found: list[str]) -> int:
        tokens = self.runner.send(*(("HGET", key, "token") for key in found))
        names = [part for pair in keys.ALIAS_FIELDS.items() for part in pair]
        calls = [Call(COMPACT_ALIAS, [key],
                      [token, token_hash_of_hex(token),
                       "" if _OPERATORS_ALIAS.fullmatch(key) else "1", *names])
                 for key, token in zip(found, tokens)
                 if token is not None and _SHA256_HEX.fullmatch(token)]
        return sum(self.runner.send(*calls)) if calls else 0

    @operation
    def _move(self, found: list[str]) -> int:
        """Schema 1's keys of an operator's alias, its hash compacted, under its shard's tag:
        DUMP, RESTORE at its new name with the same expiry, then DEL, which works between two
        slots on a Cluster too (RENAME does not). A key another node moved meanwhile is gone
        (nothing to dump) or already there (BUSYKEY): no failure. redis-py's pipelines hand
        each reply back, error or not."""
        ids = [match.group(1) for key in found if (match := _OPERATORS_ALIAS.fullmatch(key))]
        compact = self.runner.send(*(("HEXISTS", keys.schema1_key(alias_id, "alias"), "h")
                                     for alias_id in ids)) if ids else []
        pairs = [(keys.schema1_key(alias_id, name), new(alias_id))
                 for alias_id, done in zip(ids, compact) if done
                 for name, new in (("alias", keys.alias_key), ("held", keys.held_key),
                                   ("revs", keys.revs_key))]
        if not pairs:
            return 0
        read = self.redis.pipeline(transaction=False)
        for old, _ in pairs:
            read.dump(old)
            read.pexpiretime(old)
        dumped = read.execute()
        write = self.redis.pipeline(transaction=False)
        moved = [(old, new) for (old, new), value in zip(pairs, dumped[::2]) if value is not None]
        for (old, new), value, ends in zip(pairs, dumped[::2], dumped[1::2]):
            if value is not None:
                write.restore(new, max(0, ends), value, absttl=ends > 0)
        restored = write.execute(raise_on_error=False) if moved else []
        for reply in restored:
            if isinstance(reply, redis.exceptions.ResponseError) and "BUSYKEY" not in str(reply):
                raise reply
        if moved:
            self.runner.send(*(("DEL", old) for old, _ in moved))
        return sum(reply is True or reply == "OK" for (old, _), reply in zip(moved, restored)
                   if old.endswith(":alias"))

    @operation
    def _drop_ends(self) -> None:
        self.runner.send(("UNLINK", keys.OLD_ENDS_KEY))

    @operation
    def _mark(self) -> None:
        self.runner.send(("SET", keys.SCHEMA_KEY, SCHEMA))
