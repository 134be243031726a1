"""Aliases: created, read, consumed and erased; see ``keys.py`` for what each key holds.

A delivery reserves a use (RESERVE_USE), then commits it once the message was accepted downstream
(COMMIT_USE) or releases it (ZREM). Uses left minus reservations held can never go below zero, so
with N uses left exactly N concurrent deliveries commit. An alias whose last use is committed is
deleted in the same script. The alias's own rate limits (messages per alias) are taken inside
RESERVE_USE, in the same round trip.

An alias at one of the operator's domains has an id like ``k3x9qa``, taken for good in the
retired-id bit set (``retired.py``) before its alias is stored, so that no id is handed out twice
and none costs a key of its own once its alias is gone; one at a custom domain has the id
``local@DOMAIN``, in the domain's own namespace, reserved by a key until the domain is erased: its
scripts also read the domain's record (only an active domain takes new aliases and mail; a
suspended one says since when) and keep the domain's set of live aliases right, in the same slot
(see ``keys.py``).

An alias made with ``replies`` lets its owner reply through it (``tempalias/reverse.py``): each
sender of a forwarded message gets a reverse address, kept in the alias's ``revs`` hash
(REVERSE_ADDRESSES), and a reply to one finds its sender, with a token from the alias's reply
bucket (REPLY_ROUTE). ``revs`` ends with the alias on every path: revoke, last use, purge, the
custom domain erased, and its own TTL.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import redis

from tempalias.reverse import RANDOM_SHAPE, new_random
from tempalias.store import keys
from tempalias.store.errors import AliasNotFound, AliasTaken
from tempalias.store.ratelimits import BUCKETS_LUA, bucket_args
from tempalias.store.connections import Durability, NotReplicated
from tempalias.store.retired import DEFAULT_ERROR, DEFAULT_IDS_PER_LAYER, TAKE_ID_LUA, RetiredIds
from tempalias.store.runner import NOW_LUA, Call, Script, ScriptRunner, clock_arg, operation

if TYPE_CHECKING:  # only for annotations: the store does not depend on the config
    from tempalias.config import Rate

log = logging.getLogger(__name__)

ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_SHAPE = re.compile(r"[a-z0-9]{1,64}")
# an id at a custom domain: a lower-case dot-atom (RFC 5321), @, the domain's A-label
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_SHAPE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_SHAPE = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
MAX_LOCAL = 64
MAX_DOMAIN = 253
# Role mailboxes (RFC 2142, RFC 5321 4.5.1) are never handed out as alias ids.
RESERVED_IDS = frozenset({"postmaster", "abuse", "hostmaster", "webmaster", "mailer-daemon"})
MS_PER_DAY = 86_400_000
REPLY_LIMIT = "reply"  # the name of an alias's bucket of replies (``keys.alias_limit_key``)
# When the id length grows: once the draws refused in a row at one length are unlikely to all
# be false positives of the retired-id bit set (store/retired.py), that is once the chance that
# they all were, the product of their shards' false-positive rates, is at most this. 1e-8 is four
# refusals at 1%, a full layer's rate (0.01^4): growing at every refusal, as when each id had
# its own key, would add a character about every hundredth creation. The rate rises by about 1%
# with each full layer, and more refusals are needed then, so the length never runs away; a
# refusal in a shard of few ids, nearly certain to be a real collision, weighs more.
CROWDED_LENGTH = 1e-8

# Lua of the scripts that read a custom domain's record (ta:dom:{DOMAIN}): nil when it is active,
# else the error reply for it: DOMAIN-UNKNOWN (never verified, or erased) or DOMAIN-SUSPENDED
# <since ms>.
DOMAIN_LUA = """
local function domain_refusal(key)
    local domain = redis.call('HMGET', key, 'status', 'suspended')
    if not domain[1] then
        return redis.error_reply('DOMAIN-UNKNOWN')
    end
    if domain[1] ~= 'active' then
        return redis.error_reply('DOMAIN-SUSPENDED ' .. (domain[2] or 0))
    end
    return nil
end

-- Where the buckets start in KEYS, and the refusal of the alias's custom domain: KEYS[at] is
-- that domain when flag (an ARGV) is '1', and the buckets follow it; else they start at it.
local function custom_domain(flag, at)
    if flag == '' then
        return at, nil
    end
    return at + 1, domain_refusal(KEYS[at])
end
"""

# Lua of the creation scripts: the alias hash (KEYS[at]) written from ARGV[1..6] (see below),
# with its end as the key's expiry.
STORE_ALIAS_LUA = """
local function store_alias(at)
    local fields = {'t', ARGV[1], 'h', ARGV[2], 'c', ARGV[3]}
    if ARGV[5] ~= '' then
        table.insert(fields, 'u')
        table.insert(fields, ARGV[5])
    end
    if ARGV[6] ~= '' then
        table.insert(fields, 'a')
        table.insert(fields, ARGV[6])
    end
    if ARGV[7] == '1' then
        table.insert(fields, 'r')
        table.insert(fields, '1')
    end
    redis.call('HSET', KEYS[at], unpack(fields))
    redis.call('PEXPIREAT', KEYS[at], ARGV[4])
end
"""

# An alias at the operator's domains: its id taken for good in the retired-id bit set and its
# hash stored, in one slot (the shard's, keys.py) and one round trip.
# KEYS[1]   - the id's shard of the retired-id bit set: its layers (ta:retired:{s:N})
# KEYS[2]   - and its bitmap (ta:retired:{s:N}:bits)
# KEYS[3]   - the alias hash (ta:{id}alias)
# ARGV[1]   - target address
# ARGV[2]   - the management token's hash (``alias_token_hash``)
# ARGV[3]   - created, epoch ms
# ARGV[4]   - expires, epoch ms: the key's PEXPIREAT, the one place the alias's end is kept
# ARGV[5]   - uses allowed, or '' for an alias limited by time only
# ARGV[6]   - the operator's domain in the alias's address, or '' (one made before several
#             domains answers at every configured one)
# ARGV[7]   - '1' when its owner may reply through it (tempalias/reverse.py), else ''
# ARGV[8..] - h1, h2, m, k, n of the id in the bit set (retired.py's take_id)
# returns 1 when the alias is stored; 0 when the bit set took the id but its hash exists (never
#         in schema 2: the id is burnt, nothing else is written); else, nothing written, the
#         shard's false-positive rate: the bit set says the id may have been taken
CREATE_ALIAS = Script(TAKE_ID_LUA + STORE_ALIAS_LUA + """
local taken = take_id(KEYS[1], KEYS[2], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12])
if taken ~= 1 then
    return taken
end
if redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
end
store_alias(3)
return 1
""")

# An alias at a custom domain, in the domain's slot.
# KEYS[1] - the id's reservation (ta:{DOMAIN}local:id), SET NX here, once in the domain's life
# KEYS[2] - the alias hash (ta:{DOMAIN}local:alias)
# KEYS[3] - the domain (ta:dom:{DOMAIN}), which must be active
# KEYS[4] - its live aliases (ta:dom:{DOMAIN}:aliases): local part -> end, which purge reads
# KEYS[5] - every local part of its life (ta:dom:{DOMAIN}:ids)
# ARGV[1..7] - as CREATE_ALIAS's (ARGV[6] is ''; the id carries the domain)
# ARGV[8] - the alias's local part
# returns 1, or 0 when the local part was ever taken in the domain's life (nothing is written
#         then); error DOMAIN-UNKNOWN or DOMAIN-SUSPENDED <since ms> when the domain is not active
CREATE_DOMAIN_ALIAS = Script(DOMAIN_LUA + STORE_ALIAS_LUA + """
local refusal = domain_refusal(KEYS[3])
if refusal then
    return refusal
end
if not redis.call('SET', KEYS[1], '1', 'NX') then
    return 0
end
store_alias(2)
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[8])
redis.call('SADD', KEYS[5], ARGV[8])
return 1
""")

# KEYS[1] - ta:idlen, or a custom domain's (ta:dom:{DOMAIN}:idlen)
# ARGV[1] - the length the caller collided at
# ARGV[2] - the configured starting length
# returns the length to use now: one more than ARGV[1] if nobody raised it meanwhile
RAISE_ID_LENGTH = Script("""
local current = tonumber(redis.call('GET', KEYS[1]) or ARGV[2])
if current <= tonumber(ARGV[1]) then
    current = tonumber(ARGV[1]) + 1
    redis.call('SET', KEYS[1], current)
end
return current
""")

# KEYS[1]   - the alias hash (ta:{id}alias)
# KEYS[2]   - its reservations (ta:{id}held)
# KEYS[3]   - its reverse addresses (ta:{id}revs), erased with an alias found ended
# KEYS[4]   - for an alias at a custom domain (ARGV[5] is '1'): the domain (ta:dom:{DOMAIN})
# KEYS[..]  - then the alias's buckets (ta:rl:{id}NAME): the use comes with a token from each
# ARGV[1]   - a fresh random reservation id
# ARGV[2]   - how long the reservation may be held, ms
# ARGV[3]   - now, ms, or '' for Redis's clock
# ARGV[4]   - the recipient's domain: an alias whose hash names another domain is unknown there;
#             '' or a hash that names none (made before several domains): any
# ARGV[5]   - '1' when KEYS[4] is the alias's custom domain, else ''
# ARGV[6..] - interval and burst tolerance of each bucket in turn, ms
# returns {target, '1' when its owner may reply through it else '', the operator's domain in its
#         address or ''}; error DOMAIN-UNKNOWN (the custom domain is neither active nor
#         suspended), DOMAIN-SUSPENDED <since ms>, ALIAS-UNKNOWN (never existed, revoked, expired, or made at
#         another domain), ALIAS-EXHAUSTED, or THROTTLED <ms> <key> (nothing is reserved nor
#         taken then)
RESERVE_USE = Script(BUCKETS_LUA + DOMAIN_LUA + """
local first, refusal = custom_domain(ARGV[5], 4)
if refusal then
    return refusal
end
local alias = redis.call('HMGET', KEYS[1], 't', 'u', 'a', 'r')
if not alias[1] or (alias[3] and ARGV[4] ~= '' and alias[3] ~= ARGV[4]) then
    return redis.error_reply('ALIAS-UNKNOWN')
end
local now = now_ms(ARGV[3])
local ends = redis.call('PEXPIRETIME', KEYS[1])
if ends <= now then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return redis.error_reply('ALIAS-UNKNOWN')
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if alias[2] and tonumber(alias[2]) - redis.call('ZCARD', KEYS[2]) <= 0 then
    return redis.error_reply('ALIAS-EXHAUSTED')
end
local wait, worst, tats = check_buckets(first, #KEYS, 6, now)
if worst then
    return throttled(wait, worst)
end
put_buckets(first, #KEYS, tats, now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ends)
return {alias[1], alias[4] or '', alias[3] or ''}
""")

# KEYS[1] - the alias hash (ta:{id}alias)
# KEYS[2] - its reservations (ta:{id}held)
# KEYS[3] - its reverse addresses (ta:{id}revs)
# KEYS[4] - for an alias at a custom domain: the domain's live aliases (ta:dom:{DOMAIN}:aliases)
# ARGV[1] - the reservation id RESERVE_USE was given
# ARGV[2] - the alias's local part at the custom domain (else unused)
# returns {'counted', uses_left or -1 when unlimited} | {'erased', 0} when that was the last use
#         (KEYS[1..3] are erased, and it leaves KEYS[4] too) | {'unknown'} when the alias ended
#         while the message was under way | {'settled'} when the reservation is not held:
#         counted before (a commit sent again after its answer was lost counts once) or lapsed
COMMIT_USE = Script("""
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
    return {'settled'}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'unknown'}
end
redis.call('HINCRBY', KEYS[1], 'd', 1)
local uses = redis.call('HGET', KEYS[1], 'u')
if not uses then
    return {'counted', -1}
end
local left = tonumber(uses) - 1
if left <= 0 then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    if KEYS[4] then
        redis.call('ZREM', KEYS[4], ARGV[2])
    end
    return {'erased', 0}
end
redis.call('HSET', KEYS[1], 'u', left)
return {'counted', left}
""")

# KEYS[1] - the alias hash (ta:{id}alias)
# KEYS[2] - its reservations (ta:{id}held)
# KEYS[3] - its reverse addresses (ta:{id}revs)
# KEYS[4] - for an alias at a custom domain: the domain's live aliases (ta:dom:{DOMAIN}:aliases)
# ARGV[1] - the hash of the management token offered (``alias_token_hash``), or '' for the
#           operator, who needs none
#           (hashes are compared, so the comparison's timing tells nothing about the token)
# ARGV[2] - the alias's local part at the custom domain (else unused)
# returns 1 once KEYS[1..3] are erased and the alias left KEYS[4]; error ALIAS-UNKNOWN when no
#         live alias has that id and token (nothing is erased then)
REVOKE_ALIAS = Script("""
local token = redis.call('HGET', KEYS[1], 'h')
if not token or (ARGV[1] ~= '' and token ~= ARGV[1]) then
    return redis.error_reply('ALIAS-UNKNOWN')
end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3])
if KEYS[4] then
    redis.call('ZREM', KEYS[4], ARGV[2])
end
return 1
""")

# KEYS[1] - a schedule: a custom domain's aliases (ta:dom:{DOMAIN}:aliases: local part -> end)
#           or ta:domains (domain -> next check), ms
# ARGV[1] - now, ms, or '' for Redis's clock
# ARGV[2] - at most this many
# returns the members whose time has come, soonest first; their entries stay until the caller
#         acted on them (for a domain's aliases: erased their keys)
DUE = Script(NOW_LUA + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(ARGV[1]), 'LIMIT', 0, ARGV[2])
""")

# KEYS[1] - the reports an SRS return address has carried (ta:srs:{hash})
# ARGV[1] - how many it may carry
# ARGV[2] - how long it is counted, ms (the address's lifetime)
# returns 1 when one more report may go (it is counted), 0 when ARGV[1] have gone
TAKE_REPORT = Script("""
local sent = redis.call('INCR', KEYS[1])
if sent == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if sent > tonumber(ARGV[1]) then
    return 0
end
return 1
""")

# KEYS[1]   - the alias hash (ta:{id}alias)
# KEYS[2]   - its reverse addresses (ta:{id}revs)
# ARGV[1]   - now, ms, or '' for Redis's clock
# ARGV[2..] - three per sender: the sender in lower case, the sender as written, and a fresh
#             RANDOM for it, used only when it has none yet
# returns each sender's RANDOM, in order (one made before is kept: a sender's reverse address is
#         stable for the alias's life); error ALIAS-UNKNOWN when the alias has ended or takes no
#         replies (nothing is written then)
REVERSE_ADDRESSES = Script(NOW_LUA + """
local ends = redis.call('PEXPIRETIME', KEYS[1])
if ends <= now_ms(ARGV[1]) or redis.call('HGET', KEYS[1], 'r') ~= '1' then
    return redis.error_reply('ALIAS-UNKNOWN')
end
local found = {}
for i = 2, #ARGV, 3 do
    local random = redis.call('HGET', KEYS[2], 's:' .. ARGV[i])
    if not random then
        random = ARGV[i + 2]
        redis.call('HSET', KEYS[2], 's:' .. ARGV[i], random, 'r:' .. random, ARGV[i + 1])
    end
    table.insert(found, random)
end
redis.call('PEXPIREAT', KEYS[2], ends)
return found
""")

# KEYS[1]   - the alias hash (ta:{id}alias)
# KEYS[2]   - its reverse addresses (ta:{id}revs)
# KEYS[3]   - for an alias at a custom domain (ARGV[3] is '1'): the domain (ta:dom:{DOMAIN})
# KEYS[..]  - then the alias's reply bucket (ta:rl:{id}reply), when replies are limited
# ARGV[1]   - the RANDOM of the reverse address
# ARGV[2]   - now, ms, or '' for Redis's clock
# ARGV[3]   - '1' when KEYS[3] is the alias's custom domain, else ''
# ARGV[4..] - interval and burst tolerance of the bucket, ms
# returns {target, the sender as first written, the operator's domain in the alias's address or
#         ''}; error
#         DOMAIN-UNKNOWN or DOMAIN-SUSPENDED <since ms> as RESERVE_USE, ALIAS-UNKNOWN (no such
#         reverse address, the alias ended, or it takes no replies), or THROTTLED <ms> <key>
#         (no token is taken then)
REPLY_ROUTE = Script(BUCKETS_LUA + DOMAIN_LUA + """
local first, refusal = custom_domain(ARGV[3], 3)
if refusal then
    return refusal
end
local alias = redis.call('HMGET', KEYS[1], 't', 'r', 'a')
local now = now_ms(ARGV[2])
if not alias[1] or redis.call('PEXPIRETIME', KEYS[1]) <= now or alias[2] ~= '1' then
    return redis.error_reply('ALIAS-UNKNOWN')
end
local sender = redis.call('HGET', KEYS[2], 'r:' .. ARGV[1])
if not sender then
    return redis.error_reply('ALIAS-UNKNOWN')
end
local wait, worst, tats = check_buckets(first, #KEYS, 4, now)
if worst then
    return throttled(wait, worst)
end
put_buckets(first, #KEYS, tats, now)
return {alias[1], sender, alias[3] or ''}
""")


def new_reservation_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Alias:
    id: str
    target: str
    created_ms: int
    expires_ms: int
    uses_left: int | None
    delivered: int
    # the domain in its address; None for an alias made before several domains (it answers at
    # each configured domain). A custom domain's alias has it in its id too (``local@DOMAIN``).
    domain: str | None = None
    replies: bool = False  # its owner may reply through it (``tempalias/reverse.py``)


@dataclass(frozen=True)
class NewAlias:
    alias: Alias
    token: str  # shown to the creator once; only its hash is stored


@dataclass(frozen=True)
class Reservation:
    alias_id: str
    target: str
    reservation_id: str
    replies: bool = False  # its owner may reply through it: the forward needs reverse addresses
    domain: str | None = None  # the domain in the alias's address, if stored


@dataclass(frozen=True)
class ReplyRoute:
    """Where the owner's reply to a reverse address goes: from ``alias_id`` (at ``domain``, the
    domain in its address, if stored) to ``sender``; ``target`` is the owner, who alone may send
    it."""

    alias_id: str
    target: str
    sender: str
    domain: str | None


def random_id(alphabet: str, length: int) -> str:
    """Uniform over ``alphabet``, unguessable, from one request for random bytes (not one per
    character, as ``secrets.choice`` makes). Bytes that would bias the modulo are skipped."""
    size = len(alphabet)
    if not 1 <= size <= 256:
        raise ValueError("the id alphabet needs 1 to 256 characters")
    cutoff = 256 - 256 % size
    chars: list[str] = []
    while len(chars) < length:
        chars += [alphabet[b % size] for b in secrets.token_bytes(2 * length) if b < cutoff]
    return "".join(chars[:length])


def hash_token(token: str) -> str:
    """SHA-256 hex of a token: a custom domain's token, as its record and registrations keep it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def alias_token_hash(token: str) -> str:
    """What an alias hash keeps of its management token: the first 128 bits of its SHA-256, in
    base64url (22 characters, not SHA-256 hex's 64). The token is 192 random bits: nobody finds
    one of 2^128 preimages of a hash, and the stored value is no help in guessing it."""
    return token_hash_of_hex(hashlib.sha256(token.encode("utf-8")).hexdigest())


def token_hash_of_hex(sha256_hex: str) -> str:
    """``alias_token_hash`` of the token whose SHA-256 hex is ``sha256_hex`` (as schema 1 kept
    it): the same value, so an alias's token keeps working through the migration."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)[:16]).rstrip(b"=").decode("ascii")


def normalise_id(alias_id: str) -> str | None:
    """Ids match case-insensitively; anything not shaped like an id matches nothing. An id is
    ``k3x9qa`` at a configured domain, or ``local@DOMAIN`` at a custom one (a dot-atom of at most
    64 characters, the domain's A-label)."""
    candidate = alias_id.strip().lower()
    local, domain = keys.split_id(candidate)
    if domain is None:
        return candidate if _ID_SHAPE.fullmatch(candidate) else None
    if (len(local) <= MAX_LOCAL and len(domain) <= MAX_DOMAIN and _LOCAL_SHAPE.fullmatch(local)
            and _DOMAIN_SHAPE.fullmatch(domain)):
        return candidate
    return None


def _domain_of(alias_id: str, stored: str | None) -> str | None:
    """The domain in an alias's address: a custom domain's is in the id, one of the operator's in
    the hash (None, or '' from a script, for an alias made before several domains)."""
    return keys.split_id(alias_id)[1] or stored or None


def _ending(alias_id: str) -> tuple[list[str], list[str]]:
    """The KEYS and ARGV of COMMIT_USE and REVOKE_ALIAS, which may end the alias: its own keys,
    and for an alias at a custom domain its domain's live aliases and its local part there."""
    own = [keys.alias_key(alias_id), keys.held_key(alias_id), keys.revs_key(alias_id)]
    local, domain = keys.split_id(alias_id)
    if domain is None:
        return own, []
    return [*own, keys.domain_aliases_key(domain)], [local]


@dataclass(frozen=True)
class _Order:
    """What ``create`` stores, whatever the id it finds free."""

    target: str
    token_hash: str
    lifetime_ms: int
    uses: int | None
    domain: str  # '' when the alias answers at every configured domain
    replies: bool
    custom: bool  # ``domain`` is a custom one, which the id carries: not stored again

    def call(self, alias_id: str, clock: Callable[[], float] | None,
             retired: RetiredIds) -> tuple[Alias, Call]:
        """The alias under ``alias_id``, created now, and the call that stores it: CREATE_ALIAS
        (its id taken in ``retired`` in the same script) or, at a custom domain,
        CREATE_DOMAIN_ALIAS."""
        created_ms = int((clock or time.time)() * 1000)
        expires_ms = created_ms + self.lifetime_ms
        alias = Alias(alias_id, self.target, created_ms, expires_ms, self.uses, 0,
                      self.domain or None, self.replies)
        args = [self.target, self.token_hash, created_ms, expires_ms,
                "" if self.uses is None else self.uses, "" if self.custom else self.domain,
                "1" if self.replies else ""]
        local, domain = keys.split_id(alias_id)
        if domain is None:
            shard, take = retired.keys_and_args(alias_id)
            return alias, Call(CREATE_ALIAS, [*shard, keys.alias_key(alias_id)], [*args, *take])
        return alias, Call(
            CREATE_DOMAIN_ALIAS,
            [keys.id_key(alias_id), keys.alias_key(alias_id), keys.domain_key(domain),
             keys.domain_aliases_key(domain), keys.domain_ids_key(domain)], [*args, local])


class AliasStore:
    """Creates, reads, consumes and erases aliases; see ``keys.py`` for the keys.

    ``clock`` (seconds, as ``time.time``) gives creation and the delivery scripts their moment;
    None: creation reads the host's clock and the scripts Redis's (the service's default).
    ``durability``: what creation, a reservation and a commit wait for before they count (see
    ``connections.Durability``): an alias is handed out, a use held or counted, only once a
    replica has it, so a failover of the primary cannot lose it."""

    def __init__(
        self,
        client: redis.Redis,
        id_length: int = 6,
        id_alphabet: str = ID_ALPHABET,
        reservation_seconds: float = 1800.0,
        clock: Callable[[], float] | None = None,
        durability: Durability | None = None,
        retired_ids_per_layer: int = DEFAULT_IDS_PER_LAYER,
        retired_ids_error: float = DEFAULT_ERROR,
    ) -> None:
        self.redis = client
        self.runner = ScriptRunner(client, durability)
        self.retired = RetiredIds(self.runner, retired_ids_per_layer, retired_ids_error)
        self.id_length = id_length
        self._id_length_seen: int | None = None
        self._schema_seen = False  # the keys are in schema 2 (``keys.SCHEMA``)
        self.id_alphabet = id_alphabet
        self.reservation_ms = int(reservation_seconds * 1000)
        self.clock = clock

    # --- creation

    @operation
    def current_id_length(self) -> int:
        [stored] = self.runner.send(("GET", keys.IDLEN_KEY))
        return max(int(stored), self.id_length) if stored else self.id_length

    @operation
    def create(self, target: str, lifetime_ms: int, uses: int | None, domain: str | None = None,
               custom: bool = False, local_part: str | None = None,
               replies: bool = False) -> NewAlias:
        """Store a new alias under a never-used id; raise the id length when it is crowded.

        ``domain``: the domain in the alias's address, stored with it (RESERVE answers only
        there); None: at every configured domain, as aliases made before several domains.
        ``custom``: ``domain`` is a custom domain (A-label, lower case), which must be active
        (else DomainNotFound, as ``UnknownDomain``, or DomainSuspended): the alias is
        ``local@domain`` in the domain's own namespace, its local part ``local_part`` when given
        (AliasTaken when it is, or ever was in the domain's life, an alias there), else random.
        ``replies``: its owner may reply through it (``reverse_addresses``, ``reply_route``).

        One round trip at a configured domain: one script takes the id in the retired-id bit
        set (``RetiredIds``: no id is ever handed out twice) and stores the alias, in the id's
        shard. A draw the bit set refuses costs one round trip; the id length is remembered per
        store and refreshed from Redis when it grows (``CROWDED_LENGTH``). Before the keys are
        in schema 2 (``migration.py``), a draw is first checked against schema 1's reservation.
        """
        if (custom or local_part is not None) and not domain:
            raise ValueError("an alias at a custom domain needs its domain")
        if local_part is not None and not custom:
            raise ValueError("a local part is chosen only at a custom domain")
        domain = (domain or "").lower()
        if custom and not (len(domain) <= MAX_DOMAIN and _DOMAIN_SHAPE.fullmatch(domain)):
            raise ValueError(f"{domain!r} is not a domain's A-label")
        token = secrets.token_urlsafe(24)
        order = _Order(target, alias_token_hash(token), lifetime_ms, uses, domain, replies, custom)
        if custom:
            return NewAlias(self._create_custom(order, local_part), token)
        if self._id_length_seen is None:
            self._id_length_seen = self.current_id_length()
        length = self._id_length_seen
        doubt = 1.0  # the chance that every refusal at this length so far was a false positive
        while True:
            alias_id = random_id(self.id_alphabet, length)
            if alias_id in RESERVED_IDS:
                continue
            if not self._schema_current() and self._schema1_reserved(alias_id):
                continue  # taken before schema 2: it tells nothing of this length
            alias, call = order.call(alias_id, self.clock, self.retired)
            try:
                [reply] = self.runner.send(call, durable=True)
            except NotReplicated as exc:
                # Stored on the primary alone: hand nothing out (the client tries again), and
                # take the alias back (best effort: the id stays taken, its hash would lapse).
                if exc.replies and exc.replies[0] == 1:
                    self.runner.send(("UNLINK", keys.alias_key(alias_id)))
                raise
            if reply == 1:
                return NewAlias(alias, token)
            if reply == 0:
                continue  # burnt: it tells nothing of this length
            doubt *= self.retired.outcome(reply).false_positive_rate
            if doubt <= CROWDED_LENGTH:
                length = int(self.runner.call(RAISE_ID_LENGTH, [keys.IDLEN_KEY],
                                              [length, self.id_length]))
                self._id_length_seen = length
                doubt = 1.0

    def _schema_current(self) -> bool:
        """Whether the keys are in schema 2 (``migration.py``); remembered once they are."""
        if not self._schema_seen:
            [schema] = self.runner.send(("GET", keys.SCHEMA_KEY))
            self._schema_seen = schema is not None and int(schema) >= keys.SCHEMA
        return self._schema_seen

    def _schema1_reserved(self, alias_id: str) -> bool:
        """An id schema 1 reserved that the migration has not folded in yet: folded in now, as
        the migration does (into the bit set, then its key deleted)."""
        old = keys.schema1_key(alias_id, "id")
        [reserved] = self.runner.send(("EXISTS", old))
        if reserved:
            self.runner.send(self.retired.call(alias_id))
            self.runner.send(("DEL", old))
        return bool(reserved)

    def _create_custom(self, order: _Order, local_part: str | None) -> Alias:
        """At a custom domain: the chosen local part, or random ones at the domain's own length
        until one is free."""
        domain = order.domain
        if local_part is not None:
            alias_id = normalise_id(f"{local_part}@{domain}")
            if alias_id is None:
                raise ValueError(f"{local_part}@{domain} is not shaped like an alias id")
            alias = self._store_custom(order, alias_id)
            if alias is None:
                raise AliasTaken(alias_id)
            return alias
        length_key = keys.domain_idlen_key(domain)
        [stored] = self.runner.send(("GET", length_key))
        length = max(int(stored), self.id_length) if stored else self.id_length
        while True:
            local = random_id(self.id_alphabet, length)
            if local in RESERVED_IDS:
                continue
            alias = self._store_custom(order, f"{local}@{domain}")
            if alias is not None:
                return alias
            length = int(self.runner.call(RAISE_ID_LENGTH, [length_key],
                                          [length, self.id_length]))

    def _store_custom(self, order: _Order, alias_id: str) -> Alias | None:
        alias, call = order.call(alias_id, self.clock, self.retired)
        if not self.runner.call(call.script, call.keys, call.args, subject=alias_id,
                                durable=True):
            return None
        return alias

    # --- reading and revoking, for the alias's owner

    @operation
    def get(self, alias_id: str, token: str) -> Alias:
        """The alias, if ``token`` is its management token; AliasNotFound otherwise."""
        found = self._load(alias_id)
        # Hash the offered token whether or not the alias exists, so timing tells nothing.
        offered = alias_token_hash(token)
        if found is None or not secrets.compare_digest(offered, found[1]):
            raise AliasNotFound(alias_id)
        return found[0]

    @operation
    def revoke(self, alias_id: str, token: str | None) -> None:
        """Erase the alias now. ``token=None`` is the operator's CLI, which needs none."""
        offered = alias_token_hash(token) if token is not None else ""
        normal = normalise_id(alias_id)
        if normal is None:
            raise AliasNotFound(alias_id)
        ending, local = _ending(normal)
        self.runner.call(REVOKE_ALIAS, ending, [offered, *local], subject=alias_id)

    @operation
    def lookup(self, alias_id: str) -> Alias:
        """The alias without a token check: for the operator's CLI only, never the API."""
        found = self._load(alias_id)
        if found is None:
            raise AliasNotFound(alias_id)
        return found[0]

    def _load(self, alias_id: str) -> tuple[Alias, str] | None:
        """The alias and its token's hash, from its hash and the key's expiry (its end)."""
        normal = normalise_id(alias_id)
        if normal is None:
            return None
        key = keys.alias_key(normal)
        flat, ends = self.runner.send(("HGETALL", key), ("PEXPIRETIME", key))
        if not flat or ends < 0:  # a hash without an end is none the store wrote
            return None
        fields = dict(zip(flat[::2], flat[1::2]))
        alias = Alias(
            id=normal,
            target=fields["t"],
            created_ms=int(fields["c"]),
            expires_ms=int(ends),
            uses_left=int(fields["u"]) if "u" in fields else None,
            delivered=int(fields.get("d", 0)),
            domain=_domain_of(normal, fields.get("a")),
            replies=fields.get("r") == "1",
        )
        return alias, fields["h"]

    # --- delivery: reserve, then commit or release

    @operation
    def reserve(self, alias_id: str, limits: dict[str, Rate] | None = None,
                domain: str | None = None, reservation_id: str | None = None) -> Reservation:
        """Hold one use for a delivery under way, with a token from each of the alias's
        ``limits`` (all or none): AliasNotFound or AliasExhausted if no use is left,
        RateLimited if a limit said no. One round trip.

        ``domain``: the recipient's domain; an alias made at another domain is AliasNotFound
        there (one made before several domains answers at any). An id ``local@DOMAIN`` is at a
        custom domain, whose record is read in the same script: UnknownDomain (an AliasNotFound
        and a DomainNotFound) when it is neither active nor suspended, DomainSuspended (with
        since when) when suspended. The Reservation says whether the alias takes replies, and
        the domain in its address, from the same script. ``reservation_id``: the caller's (see
        ``new_reservation_id``), so that after StoreUnavailable, when the reservation may or may
        not have been made, it can still be released."""
        normal = normalise_id(alias_id)
        if normal is None:
            raise AliasNotFound(alias_id)
        custom = keys.split_id(normal)[1]
        recipient = (domain or "").lower()
        if custom is not None and recipient and recipient != custom:
            raise AliasNotFound(alias_id)
        limits = limits or {}
        reservation_id = reservation_id or new_reservation_id()
        call = Call(RESERVE_USE,
                    [keys.alias_key(normal), keys.held_key(normal), keys.revs_key(normal),
                     *([] if custom is None else [keys.domain_key(custom)]),
                     *(keys.alias_limit_key(normal, name) for name in limits)],
                    [reservation_id, self.reservation_ms, clock_arg(self.clock), recipient,
                     "" if custom is None else "1", *bucket_args(limits)])
        try:
            [(target, replies, stored_domain)] = self.runner.send(call, subject=normal,
                                                                  durable=True)
        except NotReplicated:
            # Held on the primary alone: a failover could forget it and let one use go twice.
            # Give it back (best effort: it lapses by itself) and let the client retry.
            self.runner.send(("ZREM", keys.held_key(normal), reservation_id))
            raise
        return Reservation(normal, target, reservation_id, replies == "1",
                           _domain_of(normal, stored_domain))

    @operation
    def commit(self, reservation: Reservation) -> int | None:
        """Count the delivery; returns the uses left (None when unlimited, 0 when now erased)."""
        alias_id = reservation.alias_id
        ending, local = _ending(alias_id)
        try:
            result = self.runner.call(COMMIT_USE, ending, [reservation.reservation_id, *local],
                                      durable=True)
        except NotReplicated as exc:
            # Counted on the primary, not yet on a replica: the message went all the same, so
            # this is no failure of the delivery; a failover now could give this use back.
            log.warning("use of %s counted, but no replica acknowledged it in time", alias_id)
            [result] = exc.replies
        if result[0] == "erased":
            return 0
        if result[0] == "counted":
            left = int(result[1])
            return None if left < 0 else left
        return 0

    @operation
    def release(self, reservation: Reservation) -> None:
        """Give the held use back: the delivery did not happen."""
        self.runner.send(("ZREM", keys.held_key(reservation.alias_id), reservation.reservation_id))

    # --- replies through an alias (``tempalias/reverse.py``)

    @operation
    def reverse_addresses(self, alias_id: str, senders: list[str]) -> dict[str, str]:
        """The RANDOM of each sender's reverse address at the alias (sender in lower case ->
        RANDOM): the one it was given before, else a fresh one, kept until the alias ends. One
        round trip. AliasNotFound when the alias is gone or takes no replies."""
        normal = normalise_id(alias_id)
        if normal is None:
            raise AliasNotFound(alias_id)
        lowered = [sender.lower() for sender in senders]
        args = [value for sender, lower in zip(senders, lowered)
                for value in (lower, sender, new_random())]
        found = self.runner.call(REVERSE_ADDRESSES, [keys.alias_key(normal), keys.revs_key(normal)],
                                 [clock_arg(self.clock), *args], subject=normal)
        return dict(zip(lowered, found))

    @operation
    def reply_route(self, alias_id: str, random: str, limit: Rate | None) -> ReplyRoute:
        """Where the owner's reply to the reverse address ``random`` of ``alias_id`` goes, with a
        token from the alias's reply bucket (``limit``; None: unlimited). One round trip.
        AliasNotFound when there is no such reverse address, the alias ended or takes no
        replies; RateLimited when the bucket is empty; at a custom domain UnknownDomain and
        DomainSuspended as ``reserve``."""
        normal = normalise_id(alias_id)
        random = random.lower()
        if normal is None or not RANDOM_SHAPE.fullmatch(random):
            raise AliasNotFound(alias_id)
        custom = keys.split_id(normal)[1]
        limits = {} if limit is None else {REPLY_LIMIT: limit}
        target, sender, domain = self.runner.call(
            REPLY_ROUTE, [keys.alias_key(normal), keys.revs_key(normal),
                          *([] if custom is None else [keys.domain_key(custom)]),
                          *(keys.alias_limit_key(normal, name) for name in limits)],
            [random, clock_arg(self.clock), "" if custom is None else "1", *bucket_args(limits)],
            subject=normal)
        return ReplyRoute(normal, target, sender, _domain_of(normal, domain))

    @operation
    def take_report(self, return_hash: str, limit: int, lifetime_ms: int) -> bool:
        """Count one report through an SRS return address; False once it carried ``limit``."""
        return bool(self.runner.call(TAKE_REPORT, [keys.report_key(return_hash)],
                                     [limit, lifetime_ms]))

    # --- upkeep

    def purge(self, batch: int = 1000) -> int:
        """Erase every alias at a custom domain whose time is up; returns how many. Cost: the
        number that ended, and one look per custom domain.

        An alias at the operator's domains needs none: its keys expire with it, and Redis takes
        them back by itself. A custom domain's aliases are listed with their ends in the
        domain's ``:aliases`` (its slot), which must lose them too: ``purge`` walks every domain
        of ``ta:domains``; each batch, of one domain, is one operation with its own budget, so a
        long backlog is not cut off by the deadline.
        """
        removed = 0
        for domain in self._domains():
            while erased := self._purge_batch(domain, batch):
                removed += erased
        return removed

    @operation
    def _domains(self) -> list[str]:
        [found] = self.runner.send(("ZRANGE", keys.DOMAINS_KEY, 0, -1))
        return found

    @operation
    def _purge_batch(self, domain: str, batch: int) -> int:
        listed = keys.domain_aliases_key(domain)
        [ended] = self.runner.send(Call(DUE, [listed], [clock_arg(self.clock), batch]))
        if not ended:
            return 0
        gone = [f"{local}@{domain}" for local in ended]
        self.runner.send(*(("UNLINK", keys.alias_key(alias_id), keys.held_key(alias_id),
                            keys.revs_key(alias_id)) for alias_id in gone),
                         ("ZREM", listed, *ended))
        return len(ended)

    @operation
    def ping(self) -> bool:
        [pong] = self.runner.send(("PING",))
        return bool(pong)

    def close(self) -> None:
        self.runner.close()
        self.redis.close()
        if isinstance(self.redis, redis.Redis):
            self.redis.connection_pool.disconnect()
