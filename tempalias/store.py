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
- ``ta:srs:{hash}``  how many delivery reports an SRS return address carried; expires with it.

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
import socket
import string
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tempalias.netio import send_all

ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_SHAPE = re.compile(r"^[a-z0-9]{1,64}$")
# Role mailboxes (RFC 2142, RFC 5321 4.5.1) are never handed out as alias ids.
RESERVED_IDS = frozenset({"postmaster", "abuse", "hostmaster", "webmaster", "mailer-daemon"})
IDLEN_KEY = "ta:idlen"
ENDS_KEY = "ta:ends"
MS_PER_DAY = 86_400_000
DEFAULT_BUDGET = 5.0  # seconds per operation, for a client built without a socket timeout

# KEYS[1] - the id's reservation key (ta:{id}:id)
# KEYS[2] - the alias hash (ta:{id}:alias)
# ARGV[1] - target address
# ARGV[2] - SHA-256 hex of the management token
# ARGV[3] - created, epoch ms
# ARGV[4] - expires, epoch ms (the key's PEXPIREAT, and the score the caller gives ta:ends)
# ARGV[5] - uses allowed, or '' for an alias limited by time only
# returns 1, or 0 when the id was ever taken before (nothing is written then)
CREATE_ALIAS = """
if not redis.call('SET', KEYS[1], '1', 'NX') then
    return 0
end
redis.call('HSET', KEYS[2], 'target', ARGV[1], 'token', ARGV[2],
           'created', ARGV[3], 'expires', ARGV[4], 'delivered', 0)
if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[2], 'uses', ARGV[5])
end
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
return 1
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


# KEYS[1] - the reports an SRS return address has carried (ta:srs:{hash})
# ARGV[1] - how many it may carry
# ARGV[2] - how long it is counted, ms (the address's lifetime)
# returns 1 when one more report may go (it is counted), 0 when ARGV[1] have gone
TAKE_REPORT = """
local sent = redis.call('INCR', KEYS[1])
if sent == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if sent > tonumber(ARGV[1]) then
    return 0
end
return 1
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
    """One store operation: every Redis connection-level failure becomes StoreUnavailable, and
    the whole operation, retries included, ends within the store's ``budget``.

    Each wait inside has its own timeout (the pool's checkout, connecting and its handshake,
    health-check PINGs, each command), redis-py retries with back-off, DirectConnections retries
    on a fresh connection, a script may need loading: against a hung Redis (socket open, nobody
    reading) these added up to ten times the setting. In the service one gevent timer bounds them
    all without reaching into redis-py's connections (about 2 µs an operation); it raises at the
    greenlet's next wait, where redis-py and DirectConnections close the connection in use, so no
    stray reply reaches the next caller. Without gevent's sockets (tests that use the store
    directly) each wait keeps only its own timeout."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        deadline = self._deadline(self.budget) if self._deadline is not None else None
        try:
            if deadline is not None:
                deadline.start()
            return method(self, *args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"redis unreachable: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            # OOM, READONLY, LOADING, MASTERDOWN...: Redis is there but cannot serve us now.
            raise StoreUnavailable(f"redis refused: {exc}") from None
        except BaseException as exc:
            if exc is deadline:  # not an outer operation's, nor the caller's own
                raise StoreUnavailable(
                    f"redis did not answer within {self.budget:g} s") from None
            raise
        finally:
            if deadline is not None:
                deadline.close()

    return wrapper


def _gevent_patched(module: str) -> bool:
    """True in the service and the CLI (``cli.py`` monkey-patches), False in a plain process."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    return gevent_monkey is not None and gevent_monkey.is_module_patched(module)


def _deadline_class():
    """gevent's Timeout where sockets yield to gevent, else None: see _unavailable_on_redis_errors."""
    if not _gevent_patched("socket"):
        return None
    from gevent import Timeout
    return Timeout


def _budget(client: redis.Redis) -> float:
    """The client's ``timeout`` (``connect``): the budget of one store operation."""
    return client.connection_pool.connection_kwargs.get("socket_timeout") or DEFAULT_BUDGET


def connect(url: str, timeout: float, max_connections: int = 64) -> redis.Redis:
    """A Redis client whose every wait is bounded and whose pool cannot grow without limit.

    ``timeout`` bounds each wait here, and the stores built on the client take it as the budget
    of a whole operation, retries included."""
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


def _bounded_semaphore(value: int):
    """gevent's own semaphore in the service (its threading is monkey-patched): the stdlib one is
    built from a Condition, whose ownership check yields to the hub on every acquire."""
    if _gevent_patched("threading"):
        from gevent.lock import BoundedSemaphore
        return BoundedSemaphore(value)
    return threading.BoundedSemaphore(value)


class DirectConnections:
    """Commands sent on pooled redis-py connections without redis-py's client and pool layers.

    For the hot paths only (an alias's creation and look-up, a message's reserve and commit):
    there, command dispatch, the retry wrapper and the pool's checkout (a readability probe, a
    system call, and metrics on every command) cost more CPU than the command itself
    (loadtest/bench/, py-spy). redis-py's ``Connection`` still connects, authenticates, parses
    and bounds every wait by the socket timeout. A connection is handed back only after every
    reply was read, so it never holds a stray reply; any failure closes it. A kept connection that
    fails (Redis restarted) is replaced and the commands sent once more, as redis-py's retry does.
    """

    def __init__(self, client: redis.Redis, max_connections: int, timeout: float) -> None:
        pool = client.connection_pool
        self._make = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._idle: list[redis.connection.AbstractConnection] = []
        self._slots = _bounded_semaphore(max_connections)
        self._timeout = timeout

    def execute(self, *commands: tuple) -> list:
        """Send ``commands`` in one write; their replies in order, an error reply as a
        ``ResponseError`` in its place. Raises ConnectionError or TimeoutError."""
        if not self._slots.acquire(timeout=self._timeout):
            raise redis.exceptions.ConnectionError("no Redis connection free")
        try:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else self._make()
            try:
                try:
                    replies = self._exchange(connection, commands)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    if not reused:
                        raise
                    connection.disconnect()
                    connection = self._make()
                    replies = self._exchange(connection, commands)
            except BaseException:
                connection.disconnect()  # whatever it holds unread must not reach the next caller
                raise
            self._idle.append(connection)
            return replies
        finally:
            self._slots.release()

    @staticmethod
    def _exchange(connection, commands: tuple) -> list:
        data = b"".join(connection.pack_commands(commands))
        if connection._sock is None:
            connection.connect()
        try:
            send_all(connection._sock, data)  # send_packed_command's, minus gevent's sendall tax
        except socket.timeout:
            connection.disconnect()
            raise redis.exceptions.TimeoutError("timeout writing to Redis") from None
        except OSError as exc:
            connection.disconnect()
            raise redis.exceptions.ConnectionError(f"error writing to Redis: {exc}") from None
        replies = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies

    def close(self) -> None:
        while self._idle:
            self._idle.pop().disconnect()


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


def report_key(return_hash: str) -> str:
    return f"ta:srs:{{{return_hash}}}"


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
        self._id_length_seen: int | None = None
        self.id_alphabet = id_alphabet
        self.reservation_ms = int(reservation_seconds * 1000)
        self._create = client.register_script(CREATE_ALIAS)
        self._raise_id_length = client.register_script(RAISE_ID_LENGTH)
        self._reserve = client.register_script(RESERVE_USE)
        self._commit = client.register_script(COMMIT_USE)
        self._take_report = client.register_script(TAKE_REPORT)
        self.budget = _budget(client)
        self._deadline = _deadline_class()
        self._direct = DirectConnections(
            client, getattr(client.connection_pool, "max_connections", 64), self.budget)

    def _run(self, script, keys: list[str], args: list) -> object:
        """EVALSHA on the direct path; loads the script first when Redis does not know it."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        [reply] = self._direct.execute(command)
        if isinstance(reply, redis.exceptions.NoScriptError):
            self.redis.script_load(script.script)  # Redis restarted or flushed its scripts
            [reply] = self._direct.execute(command)
        if isinstance(reply, Exception):
            raise reply
        return reply

    # --- creation

    @_unavailable_on_redis_errors
    def current_id_length(self) -> int:
        stored = self.redis.get(IDLEN_KEY)
        return max(int(stored), self.id_length) if stored else self.id_length

    @_unavailable_on_redis_errors
    def create(self, target: str, lifetime_ms: int, uses: int | None) -> NewAlias:
        """Store a new alias under a never-used id; raise the id length on every collision.

        One round trip: the script and the ``ta:ends`` entry travel in one pipeline. ``ZADD NX``
        cannot touch a live alias's entry on a collision (ids are never reused), and the id
        length is remembered per store and refreshed from Redis at each collision.
        """
        token = secrets.token_urlsafe(24)
        token_hash = hash_token(token)
        if self._id_length_seen is None:
            self._id_length_seen = self.current_id_length()
        length = self._id_length_seen
        while True:
            alias_id = random_id(self.id_alphabet, length)
            if alias_id in RESERVED_IDS:
                continue
            created_ms = int(time.time() * 1000)
            expires_ms = created_ms + lifetime_ms
            created, added = self._direct.execute(
                ("EVALSHA", self._create.sha, 2, _id_key(alias_id), _alias_key(alias_id), target,
                 token_hash, created_ms, expires_ms, "" if uses is None else uses),
                ("ZADD", ENDS_KEY, "NX", expires_ms, alias_id))
            if isinstance(created, redis.exceptions.NoScriptError):
                self.redis.script_load(CREATE_ALIAS)  # Redis restarted or flushed its scripts
                continue
            for reply in (created, added):
                if isinstance(reply, Exception):
                    raise reply
            if created:
                alias = Alias(alias_id, target, created_ms, expires_ms, uses, 0)
                return NewAlias(alias, token)
            length = int(self._raise_id_length(keys=[IDLEN_KEY], args=[length, self.id_length]))
            self._id_length_seen = length

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
        [flat] = self._direct.execute(("HGETALL", _alias_key(normal)))
        if isinstance(flat, Exception):
            raise flat
        if not flat:
            return None
        fields = dict(zip(flat[::2], flat[1::2]))
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
        result = self._run(self._reserve, keys=[_alias_key(normal), _held_key(normal)],
                           args=[reservation_id, self.reservation_ms])
        if result[0] == "exhausted":
            raise AliasExhausted(normal)
        if result[0] != "ok":
            raise AliasNotFound(normal)
        return Reservation(normal, result[1], reservation_id)

    @_unavailable_on_redis_errors
    def commit(self, reservation: Reservation) -> int | None:
        """Count the delivery; returns the uses left (None when unlimited, 0 when now erased)."""
        alias_id = reservation.alias_id
        result = self._run(self._commit, keys=[_alias_key(alias_id), _held_key(alias_id)],
                           args=[reservation.reservation_id])
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

    @_unavailable_on_redis_errors
    def take_report(self, return_hash: str, limit: int, lifetime_ms: int) -> bool:
        """Count one report through an SRS return address; False once it carried ``limit``."""
        return bool(self._run(self._take_report, keys=[report_key(return_hash)],
                              args=[limit, lifetime_ms]))

    # --- upkeep

    def purge(self, batch: int = 1000) -> int:
        """Erase every alias whose time is up; returns how many. Cost: the number that ended.

        Redis key expiry already hides and reclaims them; this bounds how long their bytes
        may linger in memory (Redis reclaims expired keys lazily and by sampling). Each batch is
        one operation with its own budget, so a long backlog is not cut off by the deadline.
        """
        removed = 0
        while True:
            erased = self._purge_batch(batch)
            if not erased:
                return removed
            removed += erased

    @_unavailable_on_redis_errors
    def _purge_batch(self, batch: int) -> int:
        now_ms = int(self._redis_time_ms())
        ended = self.redis.zrangebyscore(ENDS_KEY, "-inf", now_ms, start=0, num=batch)
        if not ended:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for alias_id in ended:
            pipe.unlink(_alias_key(alias_id), _held_key(alias_id))
        pipe.zrem(ENDS_KEY, *ended)
        pipe.execute()
        return len(ended)

    def _redis_time_ms(self) -> float:
        seconds, micros = self.redis.time()
        return seconds * 1000 + micros / 1000

    @_unavailable_on_redis_errors
    def ping(self) -> bool:
        return bool(self.redis.ping())

    def close(self) -> None:
        self._direct.close()
        self.redis.close()
        self.redis.connection_pool.disconnect()


# --- rate limits and connection budgets (used by tempalias/abuse.py)
#
# Keys: ``ta:rl:{SUBJECT}:LIMIT``, where SUBJECT is what is limited (``ip:192.0.2.7``,
# ``net:2001:db8:1:2::/64``, ``to:<sha256 of the target>``, ``alias:<id>``) and is the key's hash
# tag, so every script touches one Redis Cluster slot. Each expires by itself once it says nothing.
#
# The limits are token buckets, kept as GCRA (the generic cell rate algorithm): one key per bucket
# holding the "theoretical arrival time" (TAT), the moment the bucket would be full again. A Rate of
# N per P seconds lets N requests through at once and then one every P/N seconds; a refused request
# takes nothing, so a client that keeps knocking is not punished further, and the wait until the
# next token is exact, which is what Retry-After says.

# KEYS[1..n] - one bucket per limit, all sharing one hash tag
# ARGV[2i-1] - the emission interval of KEYS[i] in ms: the period divided by the count
# ARGV[2i]   - the burst tolerance of KEYS[i] in ms: the interval times (count - 1)
# returns {0, 0} when every bucket had a token (each then took one), or {ms to wait, i} for the
#         bucket that is empty for longest (then nothing is taken from any bucket)
TAKE_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait, worst = 0, 0
local tats = {}
for i, key in ipairs(KEYS) do
    local tat = math.max(tonumber(redis.call('GET', key) or now), now)
    local late = tat - tonumber(ARGV[2 * i]) - now
    if late > wait then
        wait, worst = late, i
    end
    tats[i] = tat
end
if worst > 0 then
    return {wait, worst}
end
for i, key in ipairs(KEYS) do
    local tat = tats[i] + tonumber(ARGV[2 * i - 1])
    redis.call('SET', key, tat, 'PX', tat - now)
end
return {0, 0}
"""

# KEYS[1] - sorted set of the subject's open connections (lease id -> moment the lease lapses)
# ARGV[1] - a fresh random lease id
# ARGV[2] - how many may be open at once
# ARGV[3] - how long a lease lasts if nobody gives it back (its holder died), ms
# returns 1 when the lease was granted, 0 when ARGV[2] are open already
OPEN_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:  # only for annotations: the store does not depend on the config
    from tempalias.config import Rate


@dataclass(frozen=True)
class Throttled:
    """A limit said no: ``limit`` names it, ``retry_after_ms`` is when it will say yes again."""

    limit: str
    retry_after_ms: int

    @property
    def retry_after_seconds(self) -> int:
        return max(1, -(-self.retry_after_ms // 1000))


def _limit_key(subject: str, limit: str) -> str:
    return f"ta:rl:{{{subject}}}:{limit}"


class RateLimiter:
    """Token buckets and connection leases in Redis, shared by every process on it."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.budget = _budget(client)
        self._deadline = _deadline_class()
        self._take = client.register_script(TAKE_TOKENS)
        self._open_lease = client.register_script(OPEN_LEASE)

    @_unavailable_on_redis_errors
    def take(self, subject: str, limits: dict[str, Rate]) -> Throttled | None:
        """Take one token from each named bucket of ``subject``, all or none; None means go."""
        if not limits:
            return None
        names = list(limits)
        args: list[int] = []
        for rate in limits.values():
            interval = max(1, int(rate.seconds * 1000 / rate.count))
            args += [interval, interval * (rate.count - 1)]
        wait, worst = self._take(keys=[_limit_key(subject, name) for name in names], args=args)
        if int(worst) == 0:
            return None
        return Throttled(names[int(worst) - 1], int(wait))

    @_unavailable_on_redis_errors
    def open_lease(self, subject: str, limit: int, lifetime_ms: int) -> str | None:
        """A lease id if fewer than ``limit`` of ``subject``'s are open; give it back when done."""
        lease_id = secrets.token_hex(8)
        granted = self._open_lease(keys=[_limit_key(subject, "open")],
                                   args=[lease_id, limit, lifetime_ms])
        return lease_id if int(granted) else None

    @_unavailable_on_redis_errors
    def close_lease(self, subject: str, lease_id: str) -> None:
        self.redis.zrem(_limit_key(subject, "open"), lease_id)
