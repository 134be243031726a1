"""The alias store: the only module that talks to Redis.

Keys (every key of one alias shares the hash tag ``{id}``, so each script touches one
Redis Cluster slot):

- ``ta:{id}:id``     the id's reservation, ``SET NX`` once and never deleted: ids are never reused.
- ``ta:{id}:alias``  hash: target, token (SHA-256 of the management token), created, expires
                     (epoch ms), delivered, and uses (left) when the alias is limited by count.
                     Its Redis TTL is the alias's lifetime, so expiry erases it by itself.
- ``ta:{id}:held``   sorted set of in-flight delivery reservations, scored by the moment they
                     lapse, so a reservation whose holder died frees its use by itself.
- ``ta:idlen``       the current id length; it only grows.
- ``ta:ends``        sorted set id -> expiry (ms): lets ``purge`` reach exactly the aliases whose
                     time is up, at a cost proportional to their number (no KEYS, no SCAN).

A delivery reserves a use (RESERVE), then commits it once the message was accepted downstream
(COMMIT) or releases it (ZREM). Uses left minus reservations held can never go below zero, so with
N uses left exactly N concurrent deliveries commit. An alias whose last use is committed is
deleted in the same script.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Callable, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_SHAPE = re.compile(r"^[a-z0-9]{1,64}$")
IDLEN_KEY = "ta:idlen"
ENDS_KEY = "ta:ends"
MS_PER_DAY = 86_400_000

# KEYS[1] - the id's reservation key (ta:{id}:id)
# KEYS[2] - the alias hash (ta:{id}:alias)
# ARGV[1] - target address
# ARGV[2] - SHA-256 hex of the management token
# ARGV[3] - lifetime in milliseconds
# ARGV[4] - uses allowed, or '' for an alias limited by time only
# returns {created_ms, expires_ms}, or 0 when the id was ever taken before
CREATE_ALIAS = """
if not redis.call('SET', KEYS[1], '1', 'NX') then
    return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'target', ARGV[1], 'token', ARGV[2],
           'created', now, 'expires', expires, 'delivered', 0)
if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[2], 'uses', ARGV[4])
end
redis.call('PEXPIREAT', KEYS[2], expires)
return {now, expires}
"""

# KEYS[1] - ta:idlen
# ARGV[1] - the length the caller collided at
# ARGV[2] - the configured starting length
# returns the length to use now: one more than ARGV[1] if nobody raised it meanwhile
RAISE_ID_LENGTH = """
local current = tonumber(redis.call('GET', KEYS[1]) or ARGV[2])
if current <= tonumber(ARGV[1]) then
    current = tonumber(ARGV[1]) + 1
    redis.call('SET', KEYS[1], current)
end
return current
"""

# KEYS[1] - the alias hash (ta:{id}:alias)
# KEYS[2] - its reservations (ta:{id}:held)
# ARGV[1] - a fresh random reservation id
# ARGV[2] - how long the reservation may be held, ms
# returns {'ok', target} | {'unknown'} (never existed, revoked, expired) | {'exhausted'}
RESERVE_USE = """
local alias = redis.call('HMGET', KEYS[1], 'target', 'expires', 'uses')
if not alias[1] then
    return {'unknown'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(alias[2]) <= now then
    redis.call('DEL', KEYS[1], KEYS[2])
    return {'unknown'}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if alias[3] and tonumber(alias[3]) - redis.call('ZCARD', KEYS[2]) <= 0 then
    return {'exhausted'}
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIREAT', KEYS[2], alias[2])
return {'ok', alias[1]}
"""

# KEYS[1] - the alias hash (ta:{id}:alias)
# KEYS[2] - its reservations (ta:{id}:held)
# ARGV[1] - the reservation id RESERVE_USE was given
# returns {'counted', uses_left or -1 when unlimited} | {'erased', 0} when that was the last use
#         | {'unknown'} when the alias ended while the message was under way
COMMIT_USE = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'unknown'}
end
redis.call('HINCRBY', KEYS[1], 'delivered', 1)
local uses = redis.call('HGET', KEYS[1], 'uses')
if not uses then
    return {'counted', -1}
end
local left = tonumber(uses) - 1
if left <= 0 then
    redis.call('DEL', KEYS[1], KEYS[2])
    return {'erased', 0}
end
redis.call('HSET', KEYS[1], 'uses', left)
return {'counted', left}
"""


class StoreError(Exception):
    """Base of everything the store raises."""


class StoreUnavailable(StoreError):
    """Redis could not be reached or did not answer in time: a transient condition."""


class AliasRefused(StoreError):
    """The alias cannot take a delivery."""


class AliasNotFound(AliasRefused):
    """No live alias by that id (never existed, revoked, expired, or wrong token)."""


class AliasExhausted(AliasRefused):
    """Every remaining use is taken or reserved."""


@dataclass(frozen=True)
class Alias:
    id: str
    target: str
    created_ms: int
    expires_ms: int
    uses_left: int | None
    delivered: int


@dataclass(frozen=True)
class NewAlias:
    alias: Alias
    token: str  # shown to the creator once; only its hash is stored


@dataclass(frozen=True)
class Reservation:
    alias_id: str
    target: str
    reservation_id: str


T = TypeVar("T")


def _unavailable_on_redis_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn every Redis connection-level failure into StoreUnavailable."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"redis unreachable: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            # OOM, READONLY, LOADING, MASTERDOWN...: Redis is there but cannot serve us now.
            raise StoreUnavailable(f"redis refused: {exc}") from None

    return wrapper


def connect(url: str, timeout: float, max_connections: int = 64) -> redis.Redis:
    """A Redis client whose every wait is bounded and whose pool cannot grow without limit."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
        protocol=2,  # RESP2 measured ~1.1x faster than redis-py 8's RESP3 default here
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )
    return redis.Redis(connection_pool=pool)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_id(alias_id: str) -> str | None:
    """Ids match case-insensitively; anything not shaped like an id matches nothing."""
    candidate = alias_id.strip().lower()
    return candidate if _ID_SHAPE.match(candidate) else None


def _alias_key(alias_id: str) -> str:
    return f"ta:{{{alias_id}}}:alias"


def _held_key(alias_id: str) -> str:
    return f"ta:{{{alias_id}}}:held"


def _id_key(alias_id: str) -> str:
    return f"ta:{{{alias_id}}}:id"


class AliasStore:
    """Creates, reads, consumes and erases aliases; see the module docstring for the keys."""

    def __init__(
        self,
        client: redis.Redis,
        id_length: int = 6,
        id_alphabet: str = ID_ALPHABET,
        reservation_seconds: float = 1800.0,
    ) -> None:
        self.redis = client
        self.id_length = id_length
        self.id_alphabet = id_alphabet
        self.reservation_ms = int(reservation_seconds * 1000)
        self._create = client.register_script(CREATE_ALIAS)
        self._raise_id_length = client.register_script(RAISE_ID_LENGTH)
        self._reserve = client.register_script(RESERVE_USE)
        self._commit = client.register_script(COMMIT_USE)

    # --- creation

    @_unavailable_on_redis_errors
    def current_id_length(self) -> int:
        stored = self.redis.get(IDLEN_KEY)
        return max(int(stored), self.id_length) if stored else self.id_length

    @_unavailable_on_redis_errors
    def create(self, target: str, lifetime_ms: int, uses: int | None) -> NewAlias:
        """Store a new alias under a never-used id; raise the id length on every collision."""
        token = secrets.token_urlsafe(24)
        length = self.current_id_length()
        while True:
            alias_id = "".join(secrets.choice(self.id_alphabet) for _ in range(length))
            created = self._create(
                keys=[_id_key(alias_id), _alias_key(alias_id)],
                args=[target, hash_token(token), lifetime_ms, "" if uses is None else uses],
            )
            if created:
                created_ms, expires_ms = int(created[0]), int(created[1])
                self.redis.zadd(ENDS_KEY, {alias_id: expires_ms})
                alias = Alias(alias_id, target, created_ms, expires_ms, uses, 0)
                return NewAlias(alias, token)
            length = int(self._raise_id_length(keys=[IDLEN_KEY], args=[length, self.id_length]))

    # --- reading and revoking, for the alias's owner

    @_unavailable_on_redis_errors
    def get(self, alias_id: str, token: str) -> Alias:
        """The alias, if ``token`` is its management token; AliasNotFound otherwise."""
        found = self._load(alias_id)
        # Hash the offered token whether or not the alias exists, so timing tells nothing.
        offered = hash_token(token)
        if found is None or not hmac.compare_digest(offered, found[1]):
            raise AliasNotFound(alias_id)
        return found[0]

    @_unavailable_on_redis_errors
    def revoke(self, alias_id: str, token: str | None) -> None:
        """Erase the alias now. ``token=None`` is the operator's CLI, which needs none."""
        if token is not None:
            alias = self.get(alias_id, token)
        else:
            found = self._load(alias_id)
            if found is None:
                raise AliasNotFound(alias_id)
            alias = found[0]
        self._erase(alias.id)

    @_unavailable_on_redis_errors
    def lookup(self, alias_id: str) -> Alias:
        """The alias without a token check: for the operator's CLI only, never the API."""
        found = self._load(alias_id)
        if found is None:
            raise AliasNotFound(alias_id)
        return found[0]

    def _load(self, alias_id: str) -> tuple[Alias, str] | None:
        normal = normalise_id(alias_id)
        if normal is None:
            return None
        fields = self.redis.hgetall(_alias_key(normal))
        if not fields:
            return None
        alias = Alias(
            id=normal,
            target=fields["target"],
            created_ms=int(fields["created"]),
            expires_ms=int(fields["expires"]),
            uses_left=int(fields["uses"]) if "uses" in fields else None,
            delivered=int(fields["delivered"]),
        )
        return alias, fields["token"]

    def _erase(self, alias_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.unlink(_alias_key(alias_id), _held_key(alias_id))
        pipe.zrem(ENDS_KEY, alias_id)
        pipe.execute()

    # --- delivery: reserve, then commit or release

    @_unavailable_on_redis_errors
    def reserve(self, alias_id: str) -> Reservation:
        """Hold one use for a delivery under way; AliasNotFound or AliasExhausted if none is left."""
        normal = normalise_id(alias_id)
        if normal is None:
            raise AliasNotFound(alias_id)
        reservation_id = secrets.token_hex(8)
        result = self._reserve(
            keys=[_alias_key(normal), _held_key(normal)], args=[reservation_id, self.reservation_ms]
        )
        if result[0] == "exhausted":
            raise AliasExhausted(normal)
        if result[0] != "ok":
            raise AliasNotFound(normal)
        return Reservation(normal, result[1], reservation_id)

    @_unavailable_on_redis_errors
    def commit(self, reservation: Reservation) -> int | None:
        """Count the delivery; returns the uses left (None when unlimited, 0 when now erased)."""
        alias_id = reservation.alias_id
        result = self._commit(
            keys=[_alias_key(alias_id), _held_key(alias_id)], args=[reservation.reservation_id]
        )
        if result[0] == "erased":
            self.redis.zrem(ENDS_KEY, alias_id)
            return 0
        if result[0] == "counted":
            left = int(result[1])
            return None if left < 0 else left
        return 0

    @_unavailable_on_redis_errors
    def release(self, reservation: Reservation) -> None:
        """Give the held use back: the delivery did not happen."""
        self.redis.zrem(_held_key(reservation.alias_id), reservation.reservation_id)

    # --- upkeep

    @_unavailable_on_redis_errors
    def purge(self, batch: int = 1000) -> int:
        """Erase every alias whose time is up; returns how many. Cost: the number that ended.

        Redis key expiry already hides and reclaims them; this bounds how long their bytes
        may linger in memory (Redis reclaims expired keys lazily and by sampling).
        """
        removed = 0
        while True:
            now_ms = int(self._redis_time_ms())
            ended = self.redis.zrangebyscore(ENDS_KEY, "-inf", now_ms, start=0, num=batch)
            if not ended:
                return removed
            pipe = self.redis.pipeline(transaction=False)
            for alias_id in ended:
                pipe.unlink(_alias_key(alias_id), _held_key(alias_id))
            pipe.zrem(ENDS_KEY, *ended)
            pipe.execute()
            removed += len(ended)

    def _redis_time_ms(self) -> float:
        seconds, micros = self.redis.time()
        return seconds * 1000 + micros / 1000

    @_unavailable_on_redis_errors
    def ping(self) -> bool:
        return bool(self.redis.ping())

    def close(self) -> None:
        self.redis.close()
        self.redis.connection_pool.disconnect()
