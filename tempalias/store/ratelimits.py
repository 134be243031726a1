"""Rate limits and connection leases (used by tempalias/abuse.py), kept in Redis for every process.

Keys: ``keys.limit_key(subject, limit)``; SUBJECT is the key's hash tag, so every script touches
one Redis Cluster slot, and each key expires by itself once it says nothing.

The limits are token buckets, kept as GCRA (the generic cell rate algorithm): one key per bucket
holding the "theoretical arrival time" (TAT), the moment the bucket would be full again. A Rate of
N per P seconds lets N requests through at once and then one every P/N seconds; a refused request
takes nothing, so a client that keeps knocking is not punished further, and the wait until the
next token is exact, which is what Retry-After says.

The SMTP door's checks ride on scripts that run anyway: one script when a client connects
(``admit``: connection rate, open connections, and the token of its first message paid in
advance), one when it leaves (``leave``, for several connections at once), and the per-alias
buckets inside the alias store's RESERVE (``bucket_args`` gives their ARGV). Every script takes
the moment from the limiter's ``clock`` when one is given (tests drive time with it), else from
Redis's own clock.
"""

from __future__ import annotations

import collections
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import redis

from tempalias.store import keys
from tempalias.store.errors import RateLimited, Throttled
from tempalias.store.runner import NOW_LUA, Call, Script, ScriptRunner, clock_arg, operation

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

# KEYS[1]        - the subject's open connections (lease id -> the moment the lease lapses)
# KEYS[2..n+1]   - the connection's buckets, taken all or none
# KEYS[n+2..]    - buckets the connection's first message pays in advance: taken all or none
#                  when the client is let in and they have a token, else left alone
# ARGV[1]        - now, ms, or '' for Redis's clock
# ARGV[2]        - a fresh random lease id, or '' when open connections are not limited
# ARGV[3]        - how many may be open at once
# ARGV[4]        - how long a lease lasts if nobody gives it back (its holder died), ms
# ARGV[5]        - what a client turned away by ARGV[3] is told to wait, ms
# ARGV[6]        - n
# ARGV[7..]      - interval and burst tolerance of each bucket of KEYS[2..] in turn, ms
# returns {1 when the advance buckets were taken, else 0; how many of the subject's connections
#         are open now, this one included (0 when ARGV[2] is '')}; error THROTTLED <ms> <key>
#         when the client is turned away (then nothing is taken, no lease opened)
ADMIT = Script(BUCKETS_LUA + """
local now = now_ms(ARGV[1])
local n = tonumber(ARGV[6])
local wait, worst, tats = check_buckets(2, n + 1, 7, now)
if worst then
    return throttled(wait, worst)
end
local open = 0
if ARGV[2] ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    open = redis.call('ZCARD', KEYS[1]) + 1
    if open > tonumber(ARGV[3]) then
        return throttled(ARGV[5], KEYS[1])
    end
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
put_buckets(2, n + 1, tats, now)
if #KEYS == n + 1 then
    return {0, open}
end
wait, worst, tats = check_buckets(n + 2, #KEYS, 7 + 2 * n, now)
if worst then
    return {0, open}
end
put_buckets(n + 2, #KEYS, tats, now)
return {1, open}
""")

# KEYS[1]      - the subject's open connections
# KEYS[2..]     - buckets paid in advance (ADMIT) and not used: each gets its tokens back
# ARGV[1]       - now, ms, or '' for Redis's clock
# ARGV[2]       - n: how many lease ids follow
# ARGV[3..n+2]  - the lease ids to give back
# ARGV[n+3..]   - what the unused tokens of each bucket of KEYS[2..] are worth in turn, ms (the
#                 bucket's interval times their number)
# returns 1
LEAVE = Script(NOW_LUA + """
local now = now_ms(ARGV[1])
local n = tonumber(ARGV[2])
for first = 3, n + 2, 1000 do  -- unpack's stack has room for a few thousand
    redis.call('ZREM', KEYS[1], unpack(ARGV, first, math.min(first + 999, n + 2)))
end
for i = 2, #KEYS do
    local tat = tonumber(redis.call('GET', KEYS[i]))
    if tat then
        tat = tat - tonumber(ARGV[n + i + 1])
        if tat > now then
            redis.call('SET', KEYS[i], tat, 'PX', tat - now)
        else
            redis.call('DEL', KEYS[i])
        end
    end
end
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


@dataclass
class Lease:
    """What ``admit`` let a connection hold, for ``leave`` to give back: its slot among the
    subject's open connections, and the tokens of its first message, paid in advance until
    ``spend_advance`` says they were used."""

    subject: str
    lease_id: str | None
    advance: dict[str, Rate]
    open: int = 0  # how many of the subject's connections were open with this one

    def spend_advance(self) -> bool:
        """True once: the advance tokens count for the message starting now."""
        paid, self.advance = bool(self.advance), {}
        return paid


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
    def admit(self, subject: str, limits: dict[str, Rate], open_limit: int, lease_ms: int,
              full_retry_ms: int, advance: dict[str, Rate] | None = None,
              leaving: Sequence[Lease] = ()) -> Lease | Throttled:
        """A connection of ``subject``: one token from each of ``limits`` and, when
        ``open_limit``, one of that many slots (a lease that lapses after ``lease_ms`` unless
        given back); and the tokens of ``advance`` when they have some, paid for its first
        message. Throttled when turned away (nothing is taken then). What the closed connections
        ``leaving`` held is given back first, in the same write: one round trip."""
        advance = advance or {}
        lease_id = secrets.token_hex(8) if open_limit else ""
        admission = Call(
            ADMIT, [keys.lease_key(subject), *(keys.limit_key(subject, name) for name in limits),
                    *(keys.limit_key(subject, name) for name in advance)],
            [clock_arg(self.clock), lease_id, open_limit, lease_ms, full_retry_ms, len(limits),
             *bucket_args(limits), *bucket_args(advance)])
        try:
            *_, (paid, open_now) = self.runner.send(*self._leave_calls(leaving), admission)
        except RateLimited as refused:
            return refused.throttled
        return Lease(subject, lease_id or None, advance if int(paid) else {}, int(open_now))

    @operation
    def leave(self, *leases: Lease) -> None:
        """Give back what ``admit`` let connections hold and they did not use: one script per
        subject, all in one write."""
        calls = self._leave_calls(leases)
        if calls:
            self.runner.send(*calls)

    def _leave_calls(self, leases: Sequence[Lease]) -> list[Call]:
        by_subject: dict[str, list[Lease]] = collections.defaultdict(list)
        for lease in leases:
            if lease.lease_id is not None or lease.advance:
                by_subject[lease.subject].append(lease)
        calls = []
        for subject, held in by_subject.items():
            ids = [lease.lease_id for lease in held if lease.lease_id is not None]
            unused: collections.Counter = collections.Counter()
            for lease in held:
                unused.update({name: interval_ms(rate) for name, rate in lease.advance.items()})
            calls.append(Call(LEAVE, [keys.lease_key(subject),
                                      *(keys.limit_key(subject, name) for name in unused)],
                              [clock_arg(self.clock), len(ids), *ids, *unused.values()]))
        for lease in leases:  # sent or lost, never twice: a lost lease lapses by itself
            lease.lease_id, lease.advance = None, {}
        return calls

    def close(self) -> None:
        if self._own_runner:
            self.runner.close()
