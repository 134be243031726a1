"""The key schema: the only place a Redis key of tempalias is spelled.

Every key of one alias shares its hash tag, so each script that works on an alias touches one
Redis Cluster slot. An alias at one of the operator's domains has an id like ``k3x9qa`` and the
tag of its shard, ``{s:N}`` (``N = alias_shard(id)`` < ``ALIAS_SHARDS``, 128), shared with that
shard of the retired-id bit set, so that one script takes a new id for good and stores its alias
(one round trip, one slot); the 128 tags are 128 slots spread over the slot range. An alias at a
custom domain has the id ``local@DOMAIN`` and the tag ``{DOMAIN}``, shared with every key of that
domain, so one script can erase a domain with all its aliases. Below, ``{id}`` stands for
``{s:N}k3x9qa:`` or ``{DOMAIN}local:`` (DOMAIN: the A-label, lower case):

- ``ta:{id}id``      at a custom domain, the id's reservation, ``SET NX`` once and kept until the
                     domain is erased (its next owner starts afresh), in the domain's ``:ids``
                     set. An id at the operator's domains has none: the retired-id bit set
                     remembers it for good (``ta:retired:...`` below); schema 1 gave it one,
                     ``ta:{k3x9qa}:id``, which ``store/migration.py`` folds into the bit set and
                     deletes (and moves schema 1's ``ta:{k3x9qa}:alias``, ``:held`` and ``:revs``
                     under the shard's tag).
- ``ta:{id}alias``   hash, the alias, its fields one letter each (``ALIAS_FIELDS``), as the hash is
                     most of a live alias's bytes: ``t`` target, ``h`` its management token's
                     hash (base64url of the first 128 bits of its SHA-256, 22 characters), ``c``
                     created (epoch ms), ``d`` delivered (absent until the first delivery), ``u``
                     uses left when the alias is limited by count, ``a`` the operator's domain in
                     its address (absent at a custom domain, which its id carries, and in aliases
                     made before several domains, which answer at every configured domain), and
                     ``r`` (``1``) when its owner may reply through it. Its end is the key's own
                     expiry (PEXPIREAT, read back by PEXPIRETIME), kept nowhere else, so Redis
                     erases the alias by itself when its time is up (an expired key is gone for
                     every command at once; its memory is taken back by Redis's expiry cycle),
                     and no index of ends is kept for aliases at the operator's domains. Schema 1 spelled the fields
                     out (``target``, ``token`` as SHA-256 hex, ``expires``...): the migration
                     rewrites such a hash.
- ``ta:{id}held``    sorted set of in-flight delivery reservations, scored by the moment they
                     lapse, so a reservation whose holder died frees its use by itself.
- ``ta:{id}revs``    hash, the reverse addresses of an alias that takes replies
                     (``tempalias/reverse.py``): ``s:<sender, lower case>`` -> RANDOM and
                     ``r:<RANDOM>`` -> the sender as first written. Its PEXPIREAT is the alias's
                     expiry, and every path that erases the alias erases it too.
- ``ta:rl:{id}NAME`` the alias's rate-limit buckets (``alias-message``; ``reply``, the owner's
                     replies through it): the alias's hash tag too, so the delivery and reply
                     scripts take their tokens in the same slot; like every bucket
                     they expire by themselves, and hold a moment in time, nothing of the alias.

A custom domain (tag ``{DOMAIN}``, shared with its aliases above):

- ``ta:dom:{DOMAIN}``        hash, an active or suspended domain: status (``active`` or
                             ``suspended``), token (SHA-256 of the domain token), created (when it
                             was registered), verified, checked (the last check), suspended (since
                             when, while suspended), value (the TXT value that verified it); ms.
- ``ta:dom:{DOMAIN}:pending:TOKENHASH`` hash, one registration waiting for its DNS records:
                             created (ms). Its TTL (7 days) erases it unless verified.
- ``ta:dom:{DOMAIN}:registrations`` sorted set, the TOKENHASHes of its pending registrations ->
                             when each lapses (ms), so that the first verification, or an
                             erasure, reaches every one of them; its TTL is that of the latest.
- ``ta:dom:{DOMAIN}:aliases`` sorted set, the local parts of its aliases -> their expiry (ms): how
                             many are live (ZCOUNT from now), kept right by revoke, the last use
                             and purge.
- ``ta:dom:{DOMAIN}:ids``    set of every local part taken in the domain's life (its ``:id``
                             reservations), so that erasing the domain reaches them all.
- ``ta:dom:{DOMAIN}:idlen``  the length of the domain's random local parts; it only grows.

Keys of the whole service:

- ``ta:retired:{s:N}`` and ``ta:retired:{s:N}:bits``, ``N`` < ``ALIAS_SHARDS``: every id ever
                     handed out at the operator's domains, in a Bloom-style bit set
                     (``retired.py``), sharded as the aliases are: a hash of the shard's layers
                     (``layers``: each layer's offset, bits, positions and ids, ``offset,m,k,n;``
                     oldest first; ``count``: the ids in the newest) and the one bitmap that
                     holds them all.
- ``ta:schema``      the version of this schema the keys are in (``2``), written when
                     ``store/migration.py`` has moved everything of schema 1 over.
- ``ta:idlen``       the current id length; it only grows. One key: it is read once per process
                     and again only on a crowded length, and written a few times in the life of
                     the service, so its slot is never hot.
- ``ta:domains``     sorted set DOMAIN -> the next check of its DNS records (ms), for the janitor
                     alone (one look per process and interval), so one key is enough. ``purge``
                     walks it too: a custom domain's ``:aliases`` (local part -> end) says which
                     of its aliases have ended, their keys erased with their entries there.
- ``ta:ends``        schema 1's sorted set of every alias's end; schema 2 keeps none
                     (``OLD_ENDS_KEY``: the migration drops it).
- ``ta:srs:{hash}``  how many delivery reports an SRS return address carried; expires with it.
- ``ta:rl:{SUBJECT}:NAME`` a rate-limit bucket: SUBJECT is what is limited (``ip:192.0.2.7``,
                     ``net:2001:db8:1:2::/64``, ``to:<sha256 of the target>``, a custom domain, or
                     an alias id as above) and the key's hash tag, NAME the limit
                     (``smtp-connect``...); ``ta:rl:{SUBJECT}:open`` is the sorted set of the
                     subject's open SMTP connections (lease id -> lapse).
"""

from __future__ import annotations

import hashlib

# The fields of an alias hash (``alias_key``), by what each holds; schema 1 spelled them out as
# these names (and kept ``expires`` too, which is the key's expiry now).
ALIAS_FIELDS = {"target": "t", "token": "h", "created": "c", "delivered": "d", "uses": "u",
                "domain": "a", "replies": "r"}

IDLEN_KEY = "ta:idlen"
DOMAINS_KEY = "ta:domains"
ALIAS_SHARDS = 128
LEASES = "open"  # the limit name of a subject's open connections (its lease set)
_MARK = "\x00"  # stands for a local part in ``alias_key_templates`` (never in a key)


def split_id(alias_id: str) -> tuple[str, str | None]:
    """``local@DOMAIN`` -> (local, DOMAIN); an id at a configured domain -> (id, None)."""
    local, at, domain = alias_id.rpartition("@")
    return (local, domain) if at else (alias_id, None)


def id_digest(alias_id: str) -> bytes:
    """12 bytes of BLAKE2b of an id at the operator's domains: the first four pick its shard
    (``alias_shard``), the rest the bit set's positions (``retired.py``). The same in every
    process and release, unlike Python's ``hash``."""
    return hashlib.blake2b(alias_id.encode("utf-8"), digest_size=12,
                           person=b"tempalias-retire").digest()


def alias_shard(alias_id: str) -> int:
    return int.from_bytes(id_digest(alias_id)[0:4], "big") % ALIAS_SHARDS


def _shard_tag(shard: int) -> str:
    return f"{{s:{shard}}}"


def _alias_base(alias_id: str) -> str:
    """What every key of one alias starts with after its prefix: its hash tag (its shard's, or
    its custom domain's) and its local part."""
    local, domain = split_id(alias_id)
    if domain is None:
        return f"{_shard_tag(alias_shard(alias_id))}{alias_id}:"
    return f"{{{domain}}}{local}:"


def id_key(alias_id: str) -> str:
    return f"ta:{_alias_base(alias_id)}id"


def alias_key(alias_id: str) -> str:
    return f"ta:{_alias_base(alias_id)}alias"


def held_key(alias_id: str) -> str:
    return f"ta:{_alias_base(alias_id)}held"


def revs_key(alias_id: str) -> str:
    return f"ta:{_alias_base(alias_id)}revs"


def alias_pattern(alias_id: str) -> str:
    """A SCAN pattern for every key of one alias but its buckets (``ta:rl:...``)."""
    glob = "".join("\\" + c if c in "*?[]\\" else c for c in f"ta:{_alias_base(alias_id)}")
    return glob + "*"


OLD_ENDS_KEY = "ta:ends"  # schema 1's one sorted set of ends, dropped by store/migration.py


def schema1_key(alias_id: str, name: str) -> str:
    """A key schema 1 kept for an alias at the operator's domains (``id``, ``alias``, ``held``,
    ``revs``): ``ta:{k3x9qa}:NAME``, for the migration alone."""
    return f"ta:{{{alias_id}}}:{name}"


def retired_layers_key(shard: int) -> str:
    return f"ta:retired:{_shard_tag(shard)}"


def retired_bits_key(shard: int) -> str:
    return f"{retired_layers_key(shard)}:bits"


SCHEMA_KEY = "ta:schema"
SCHEMA = 2  # the version of this schema, which store/migration.py brings older keys to


# The service's own counts (store/stats.py), summed over every process of every node: one hash
# per hour, ``ta:stats:{h:<hours since the epoch>}`` (field -> count; TTL two days), and one hash
# of the days on which the aliases created end at the latest, ``ta:stats:{ends}`` (day since the
# epoch -> aliases created with that last day), from which the live aliases are estimated.
STATS_TTL_SECONDS = 2 * 86400
STATS_ENDS_KEY = "ta:stats:{ends}"


def stats_hour_key(hour: int) -> str:
    return f"ta:stats:{{h:{hour}}}"


def report_key(return_hash: str) -> str:
    return f"ta:srs:{{{return_hash}}}"


def limit_key(subject: str, limit: str) -> str:
    return f"ta:rl:{{{subject}}}:{limit}"


def alias_limit_key(alias_id: str, limit: str) -> str:
    """A bucket of one alias: it shares the alias's slot."""
    return f"ta:rl:{_alias_base(alias_id)}{limit}"


def lease_key(subject: str) -> str:
    return limit_key(subject, LEASES)


def limit_pattern(subject: str) -> str:
    """A SCAN pattern for every bucket and lease set of one subject."""
    return f"ta:rl:{{{subject}}}:*"


# A SCAN pattern for every bucket and lease set: of every subject, and of every alias.
LIMITS_PATTERN = "ta:rl:*"


def limit_name(key: str) -> str:
    """The limit a bucket key (``limit_key``) counts: names never contain a colon."""
    return key.rsplit(":", 1)[1]


# --- custom domains


def domain_key(domain: str) -> str:
    return f"ta:dom:{{{domain}}}"


def pending_key(domain: str, token_hash: str) -> str:
    return f"{domain_key(domain)}:pending:{token_hash}"


def registrations_key(domain: str) -> str:
    return f"{domain_key(domain)}:registrations"


def domain_aliases_key(domain: str) -> str:
    return f"{domain_key(domain)}:aliases"


def domain_ids_key(domain: str) -> str:
    return f"{domain_key(domain)}:ids"


def domain_idlen_key(domain: str) -> str:
    return f"{domain_key(domain)}:idlen"


def _template(key: str) -> list[str]:
    prefix, suffix = key.split(_MARK)
    return [prefix, suffix]


def pending_template(domain: str) -> list[str]:
    """[prefix, suffix]: ``pending_key(domain, H)`` is prefix .. H .. suffix, for a script that
    reaches the registrations it finds in ``registrations_key``."""
    return _template(pending_key(domain, _MARK))


def alias_key_templates(domain: str, limits: tuple[str, ...] = ()) -> list[str]:
    """[prefix, suffix, ...] of every key of an alias at ``domain`` (and of its buckets named in
    ``limits``): each key of local part L is prefix .. L .. suffix, for a script that erases the
    aliases it finds in ``domain_ids_key``."""
    alias_id = f"{_MARK}@{domain}"
    made = [id_key(alias_id), alias_key(alias_id), held_key(alias_id), revs_key(alias_id),
            *(alias_limit_key(alias_id, name) for name in limits)]
    return [part for key in made for part in _template(key)]
