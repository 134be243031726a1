"""Rate limits and connection leases (used by tempalias/abuse.py), kept in Redis for every process.

Keys: ``keys.limit_key(subject, limit)``; SUBJECT is the key's hash tag, so every script touches
one Redis Cluster slot, and each key expires by itself once it says nothing.

The limits are token buckets, kept as GCRA (the generic cell rate algorithm): one key per bucket
holding the "theoretical arrival time" (TAT), the moment the bucket would be full again. A Rate of
N per P seconds lets N requests through at once and then one every P/N seconds; a refused request
takes nothing, so a client that keeps knocking is not punished further, and the wait until the
next token is exact, which is what Retry-After says.

Every script takes the moment from the limiter's ``clock`` when one is given (tests drive time
with it), else from Redis's own clock.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Callable

import redis

from tempalias.store import keys
from tempalias.store.errors import RateLimited, Throttled
from tempalias.store.runner import NOW_LUA, Script, ScriptRunner, clock_arg, operation

if TYPE_CHECKING:  # only for annotations: the store does not depend on the config
    from tempalias.config import Rate

# Lua shared by the scripts that take tokens. KEYS[first..last] are buckets; ARGV[at + 2k] and
# ARGV[at + 2k + 1] are the emission interval (the period divided by the count) and the burst
# tolerance (the interval times count - 1) of KEYS[first + k], in ms.
BUCKETS_LUA = NOW_LUA + """
-- Whether every bucket has a token: 0, nil and their TATs after one token each; or the ms until
-- the emptiest has one, and its key. Writes nothing.
local function check_buckets(first, last, at, now)
    local wait, worst, tats = 0, nil, {}
    for i = first, last do
        local j = at + 2 * (i - first)
        local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or now), now)
        local late = tat - tonumber(ARGV[j + 1]) - now
        if late > wait then
            wait, worst = late, KEYS[i]
        end
        tats[i] = tat + tonumber(ARGV[j])
    end
    return wait, worst, tats
end

local function put_buckets(first, last, tats, now)
    for i = first, last do
        redis.call('SET', KEYS[i], tats[i], 'PX', tats[i] - now)
    end
end

local function throttled(wait, key)
    return redis.error_reply('THROTTLED ' .. wait .. ' ' .. key)
end
"""

# KEYS[1..n] - one bucket per limit, all sharing one hash tag
# ARGV[1]    - now, ms, or '' for Redis's clock
# ARGV[2..]  - interval and burst tolerance of each bucket in turn, ms
# returns 1 when every bucket had a token (each took one); error THROTTLED <ms> <key> for the
#         bucket that is empty for longest (then nothing is taken from any bucket)
TAKE_TOKENS = Script(BUCKETS_LUA + """
local now = now_ms(ARGV[1])
local wait, worst, tats = check_buckets(1, #KEYS, 2, now)
if worst then
    return throttled(wait, worst)
end
put_buckets(1, #KEYS, tats, now)
return 1
""")

# KEYS[1] - sorted set of the subject's open connections (lease id -> moment the lease lapses)
# ARGV[1] - now, ms, or '' for Redis's clock
# ARGV[2] - a fresh random lease id
# ARGV[3] - how many may be open at once
# ARGV[4] - how long a lease lasts if nobody gives it back (its holder died), ms
# returns 1 when the lease was granted, 0 when ARGV[3] are open already
OPEN_LEASE = Script(NOW_LUA + """
local now = now_ms(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
""")


def interval_ms(rate: Rate) -> int:
    return max(1, int(rate.seconds * 1000 / rate.count))


def bucket_args(limits: dict[str, Rate]) -> list[int]:
    """The ARGV of ``limits``' buckets, in order: interval and burst tolerance of each, ms."""
    args: list[int] = []
    for rate in limits.values():
        interval = interval_ms(rate)
        args += [interval, interval * (rate.count - 1)]
    return args


class RateLimiter:
    """Token buckets and connection leases in Redis, shared by every process on it.

    ``clock`` (seconds, as ``time.time``) gives the scripts their moment; None: Redis's clock.
    ``runner``: the alias store's (``AliasStore.runner``), so both share their connections."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] | None = None,
                 runner: ScriptRunner | None = None) -> None:
        self.redis = client
        self.clock = clock
        self._own_runner = runner is None
        self.runner = runner or ScriptRunner(client)

    @operation
    def take(self, subject: str, limits: dict[str, Rate]) -> Throttled | None:
        """Take one token from each named bucket of ``subject``, all or none; None means go."""
        if not limits:
            return None
        try:
            self.runner.call(TAKE_TOKENS, [keys.limit_key(subject, name) for name in limits],
                             [clock_arg(self.clock), *bucket_args(limits)])
        except RateLimited as refused:
            return refused.throttled
        return None

    @operation
    def open_lease(self, subject: str, limit: int, lifetime_ms: int) -> str | None:
        """A lease id if fewer than ``limit`` of ``subject``'s are open; give it back when done."""
        lease_id = secrets.token_hex(8)
        granted = self.runner.call(OPEN_LEASE, [keys.lease_key(subject)],
                                   [clock_arg(self.clock), lease_id, limit, lifetime_ms])
        return lease_id if int(granted) else None

    @operation
    def close_lease(self, subject: str, lease_id: str) -> None:
        self.runner.send(("ZREM", keys.lease_key(subject), lease_id))

    def close(self) -> None:
        if self._own_runner:
            self.runner.close()
