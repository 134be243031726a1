"""The script runner: how every command of the store reaches Redis, and how its answer comes back.

- A Lua script is a named constant (a ``Script``) documented by a ``KEYS[..]/ARGV[..]/returns``
  header, as in redis-py's ``redis/lock.py``, and always called by its SHA-1 (EVALSHA). A Redis
  that does not know it (restarted, a replica just promoted, a Cluster node that never ran it)
  answers NOSCRIPT, which means it did not run: the runner sends that call again as EVAL, with
  its source, which also leaves the script known to that node.
- A script says no with an error reply whose first word is a code: ``ALIAS-UNKNOWN``,
  ``ALIAS-EXHAUSTED``, ``THROTTLED <ms> <bucket key>``, ``DOMAIN-UNKNOWN``, ``DOMAIN-TAKEN``,
  ``DOMAIN-SUSPENDED <since ms>``. The runner raises the domain exception
  for it (``errors.py``); the store's methods never look at raw replies for a refusal.
- Connection trouble, and every other error reply (OOM, READONLY, LOADING, MASTERDOWN...: Redis
  is there but cannot serve us now), becomes ``StoreUnavailable`` in ``operation``, which also
  ends each public method of a store within the store's budget (``TEMPALIAS_REDIS_TIMEOUT``),
  retries included.

Commands travel on ``DirectConnections`` (one Redis, or the primary Sentinel names now) or
``ClusterConnections`` (each to its slot's primary); several commands of one operation go in one
write per node. A write sent ``durable`` waits for replicas (``Durability``): fewer than asked
is ``NotReplicated``, raised once the replies are read, with them.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import redis

from tempalias import metrics
from tempalias.store import keys
from tempalias.store.connections import (ClusterConnections, DirectConnections, Durability,
                                         NotReplicated, budget_of, gevent_patched)
from tempalias.store.errors import (AliasExhausted, AliasNotFound, DomainNotFound, DomainSuspended,
                                    DomainTaken, RateLimited, StoreUnavailable, Throttled,
                                    UnknownDomain)

T = TypeVar("T")


def _throttled(subject: str | None, rest: str) -> RateLimited:
    """``THROTTLED <ms to wait> <key of the emptiest bucket>``."""
    wait, key = rest.split(" ", 1)
    return RateLimited(Throttled(keys.limit_name(key), int(float(wait))))


def _domain_of(subject: str | None) -> str | None:
    """The domain a refusal is about: the subject itself, or the domain of an alias id there."""
    return subject and (keys.split_id(subject)[1] or subject)


def _unknown_domain(subject: str | None, rest: str) -> DomainNotFound:
    """An unknown custom domain; when the call was about an alias there, the alias is unknown
    too (``UnknownDomain`` is both)."""
    if subject and keys.split_id(subject)[1]:
        return UnknownDomain(subject)
    return DomainNotFound(subject)


# the first word of a script's error reply -> the exception for it, given what the call was about
# and the rest of the reply
REFUSALS: dict[str, Callable[[str | None, str], Exception]] = {
    "ALIAS-UNKNOWN": lambda subject, rest: AliasNotFound(subject),
    "ALIAS-EXHAUSTED": lambda subject, rest: AliasExhausted(subject),
    "THROTTLED": _throttled,
    "DOMAIN-UNKNOWN": _unknown_domain,
    "DOMAIN-TAKEN": lambda subject, rest: DomainTaken(subject),
    "DOMAIN-SUSPENDED": lambda subject, rest: DomainSuspended(_domain_of(subject), int(rest)),
}

# Lua every script may use: the moment the caller gave (ms), or Redis's own clock when it gave ''.
NOW_LUA = """
local function now_ms(given)
    if given ~= '' then
        return tonumber(given)
    end
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""


class Script:
    """A Lua script known by its SHA-1, as Redis computes it (redis-py's ``register_script``)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Call:
    """One call of a script, to send alone (``ScriptRunner.call``) or with others (``send``)."""

    script: Script
    keys: Sequence[str]
    args: Sequence[str | int]

    def command(self) -> tuple:
        return ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)

    def with_source(self) -> tuple:
        return ("EVAL", self.script.source, len(self.keys), *self.keys, *self.args)


def clock_arg(clock: Callable[[], float] | None) -> str | int:
    """The ``now`` a script is given: ms from ``clock`` (seconds, as ``time.time``), or '' for
    Redis's own clock, one for every process and node on it (the service's default)."""
    return "" if clock is None else int(clock() * 1000)


def _deadline_class():
    """gevent's Timeout where sockets yield to gevent, else None: see ``operation``."""
    if not gevent_patched("socket"):
        return None
    from gevent import Timeout
    return Timeout


class ScriptRunner:
    """Sends the commands and script calls of the stores built on one client (a ``redis.Redis``,
    Sentinel-managed or not, or a ``redis.RedisCluster``); ``durability``: what a write sent
    ``durable`` waits for (None: nothing)."""

    def __init__(self, client, durability: Durability | None = None) -> None:
        self.budget = budget_of(client)
        self.deadline = _deadline_class()
        self.durability = durability
        if isinstance(client, redis.RedisCluster):
            self.direct = ClusterConnections(
                client, client.nodes_manager.connection_kwargs.get("max_connections", 64),
                self.budget)
        else:
            self.direct = DirectConnections(
                client, getattr(client.connection_pool, "max_connections", 64), self.budget)

    def call(self, script: Script, keys: Sequence[str], args: Sequence[str | int],
             subject: str | None = None, durable: bool = False) -> object:
        """One script call, one round trip; ``subject`` is what a refusal names (an alias id)."""
        [reply] = self.send(Call(script, keys, args), subject=subject, durable=durable)
        return reply

    def send(self, *commands: Call | tuple, subject: str | None = None,
             durable: bool = False) -> list:
        """Commands (tuples) and script calls in one write (per node); their replies in order. A
        script Redis did not know is sent again with its source (a NOSCRIPT reply means it did
        not run). The first error reply, in order, is raised once every reply was read.
        ``durable``: the write waits for the runner's Durability; NotReplicated, with the
        replies, when it was not met (a refusal is raised first: it wrote nothing)."""
        durability = self.durability if durable else None
        short: NotReplicated | None = None
        wire = [c.command() if isinstance(c, Call) else c for c in commands]
        try:
            replies = self.direct.execute(*wire, durability=durability)
        except NotReplicated as exc:
            replies, short = exc.replies, exc
        unknown = [i for i, reply in enumerate(replies)
                   if isinstance(reply, redis.exceptions.NoScriptError)]
        if unknown:
            try:
                again = self.direct.execute(*(commands[i].with_source() for i in unknown),
                                            durability=durability)
            except NotReplicated as exc:
                again, short = exc.replies, exc
            for i, reply in zip(unknown, again):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise _domain_error(reply, subject)
        if short is not None:
            short.replies = replies
            raise short
        return replies

    def close(self) -> None:
        self.direct.close()


def _domain_error(reply: redis.exceptions.ResponseError, subject: str | None) -> Exception:
    """The domain exception for a script's refusal; any other error reply stays what it is."""
    code, _, rest = str(reply).partition(" ")
    refusal = REFUSALS.get(code)
    return refusal(subject, rest) if refusal else reply


OPERATIONS: set[str] = set()  # every operation's name, for the metrics' series at zero


def operation(method: Callable[..., T]) -> Callable[..., T]:
    """One store operation: every Redis connection-level failure and unexpected error reply
    becomes StoreUnavailable, and the whole operation, retries included, ends within the
    runner's ``budget``.

    Each wait inside has its own timeout (the slot, connecting and its handshake, each command),
    DirectConnections retries on a fresh connection, a script may need loading: against a hung
    Redis (socket open, nobody reading) these added up to ten times the setting. In the service
    one gevent timer bounds them all without reaching into redis-py's connections (about 2 µs an
    operation); it raises at the greenlet's next wait, where DirectConnections closes the
    connection in use, so no stray reply reaches the next caller. Without gevent's sockets (tests
    that use the store directly) each wait keeps only its own timeout.

    Its time and whether it failed go to the metrics under the method's name (``AliasStore.
    reserve``): a bounded set, two clock reads and one histogram write an operation."""
    name = method.__qualname__
    OPERATIONS.add(name)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        runner: ScriptRunner = self.runner
        deadline = runner.deadline(runner.budget) if runner.deadline is not None else None
        started, failed = time.perf_counter(), True
        try:
            if deadline is not None:
                deadline.start()
            result = method(self, *args, **kwargs)
            failed = False
            return result
        except NotReplicated as exc:
            raise StoreUnavailable(f"redis did not replicate in time: {exc}") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"redis unreachable: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            raise StoreUnavailable(f"redis refused: {exc}") from None
        except BaseException as exc:
            if exc is deadline:  # not an outer operation's, nor the caller's own
                raise StoreUnavailable(
                    f"redis did not answer within {runner.budget:g} s") from None
            failed = False  # a script's refusal (an unknown alias...): Redis answered
            raise
        finally:
            if deadline is not None:
                deadline.close()
            metrics.redis_operation(name, time.perf_counter() - started, failed)

    return wrapper
