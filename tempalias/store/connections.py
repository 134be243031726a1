"""Connections to Redis: which deployment a URL names, clients every wait of which is bounded,
and the direct paths the script runner sends on.

Three deployments (``TEMPALIAS_REDIS_URL``):

- one Redis (``redis://``, ``rediss://``, ``unix://``);
- a primary with replicas watched by Redis Sentinel,
  ``redis+sentinel://[:PASSWORD@]HOST:PORT,HOST:PORT,.../SERVICE[/DB]``: every new connection asks
  the sentinels where the primary is now (redis-py's ``SentinelManagedConnection``), and one that
  finds it demoted (``READONLY``) is dropped, so a failover is followed without a restart;
- a Redis Cluster, ``redis+cluster://[:PASSWORD@]HOST:PORT,HOST:PORT,...`` (seed nodes): redis-py's
  cluster client keeps the slot map, and ``ClusterConnections`` sends each command straight to the
  primary of its key's slot, following ``MOVED`` and ``ASK`` and refreshing the map when a node
  fails or moves.

Durability: Redis replicates asynchronously, so a write a primary acknowledged can be lost with
it. A write sent with a ``Durability`` is followed, on the same connection and in the same write,
by ``WAIT``: the primary answers how many replicas have it, and fewer than asked raises
``NotReplicated`` (carrying the replies: the write itself happened on the primary).

Only the script runner (``runner.py``) sends commands on these (and ``health.py`` its read-only
``CONFIG GET``).
"""

from __future__ import annotations

import functools
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import unquote

import redis
import redis.cluster
import redis.crc
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from tempalias.netio import send_all
from tempalias.store.errors import StoreUnavailable

DEFAULT_BUDGET = 5.0  # seconds per operation, for a client built without a socket timeout
SENTINEL_PORT = 26379
REDIS_PORT = 6379
REPLICAS_RECHECK = 10.0  # seconds a primary's count of connected replicas is trusted ("auto")
MAP_REFRESH_GAP = 0.25  # seconds between two refreshes of the Cluster's slot map
REDIRECTS = 3  # MOVED/ASK followed for one command before giving up (a map in flux)


class BadRedisUrl(ValueError):
    """``TEMPALIAS_REDIS_URL`` names no deployment we can reach; the text says why."""


class NotReplicated(redis.exceptions.ConnectionError):
    """A write reached its primary but not as many replicas as asked within the wait; ``replies``
    are the write's own replies (it did happen on the primary)."""

    def __init__(self, replies: list, acknowledged: int, wanted: int) -> None:
        super().__init__(f"{acknowledged} of {wanted} replicas acknowledged the write in time")
        self.replies = replies


@dataclass(frozen=True)
class RedisUrl:
    """What a ``TEMPALIAS_REDIS_URL`` names: ``kind`` is ``single``, ``sentinel`` or
    ``cluster``; ``nodes`` the sentinels or the Cluster's seeds."""

    kind: str
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None


def _host_ports(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """``HOST:PORT,[V6]:PORT,HOST`` -> ((host, port), ...)."""
    nodes = []
    for part in (part.strip() for part in netloc.split(",")):
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else rest
        else:
            host, colon, port = part.rpartition(":")
            if not colon:
                host, port = part, ""
        port = port or str(default_port)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadRedisUrl(f"{part or '(empty)'!r} is not HOST:PORT")
        nodes.append((host, int(port)))
    return tuple(nodes)


def parse_redis_url(url: str) -> RedisUrl:
    """The deployment ``url`` names; BadRedisUrl (with why) when it names none."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        try:
            redis.connection.parse_url(url)
        except ValueError as exc:
            raise BadRedisUrl(str(exc)) from None
        return RedisUrl("single", url)
    if scheme not in ("redis+sentinel", "redis+cluster"):
        raise BadRedisUrl("must start with redis://, rediss://, unix://, redis+sentinel:// or "
                          "redis+cluster://")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    if query:
        raise BadRedisUrl(f"takes no query options ({query!r})")
    auth, at, rest = rest.rpartition("@")
    netloc, _, path = rest.partition("/")
    username = password = None
    if at:
        user, colon, secret = auth.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    kind = scheme.split("+")[1]
    nodes = _host_ports(netloc, SENTINEL_PORT if kind == "sentinel" else REDIS_PORT)
    if kind == "cluster":
        if path.strip("/"):
            raise BadRedisUrl("a Cluster has one database: no /PATH after its nodes")
        return RedisUrl("cluster", url, nodes, username=username, password=password)
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise BadRedisUrl("names no service: redis+sentinel://HOST:PORT,.../SERVICE[/DB]")
    if db and not db.isdigit():
        raise BadRedisUrl(f"database {db!r} is not a number")
    return RedisUrl("sentinel", url, nodes, unquote(service), int(db or 0), username, password)


def gevent_patched(module: str) -> bool:
    """True in the service and the CLI (``cli.py`` monkey-patches), False in a plain process."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    return gevent_monkey is not None and gevent_monkey.is_module_patched(module)


def budget_of(client) -> float:
    """The client's ``timeout`` (``connect``): the budget of one store operation."""
    kwargs = (client.nodes_manager.connection_kwargs if isinstance(client, redis.RedisCluster)
              else client.connection_pool.connection_kwargs)
    return kwargs.get("socket_timeout") or DEFAULT_BUDGET


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 2)


def connect(url: str, timeout: float, max_connections: int = 64,
            password: str | None = None):
    """A client of the deployment ``url`` names (``redis.Redis``, on a Sentinel-managed pool for
    ``redis+sentinel://``, or ``redis.RedisCluster``) whose every wait is bounded and whose pools
    cannot grow without limit. BadRedisUrl for a URL that names none; a Cluster none of whose
    seeds answers now (the Cluster client learns the slot map at once) is StoreUnavailable.

    ``timeout`` bounds each wait here, and the stores built on the client take it as the budget
    of a whole operation, retries included. ``password``: used when the URL carries none (redis-py
    lets the URL's win)."""
    target = parse_redis_url(url)
    common = dict(socket_timeout=timeout, socket_connect_timeout=timeout,
                  decode_responses=True,
                  protocol=2)  # RESP2 measured ~1.1x faster than redis-py 8's RESP3 default here
    if target.kind == "single":
        pool = redis.BlockingConnectionPool.from_url(
            url, password=password, max_connections=max_connections, timeout=timeout,
            health_check_interval=30, retry=_retry(), **common)
        return redis.Redis(connection_pool=pool)
    secret = target.password if target.password is not None else password
    if target.kind == "sentinel":
        sentinels = redis.sentinel.Sentinel(
            list(target.nodes), min_other_sentinels=0,
            # a sentinel that does not answer is skipped for the next, not retried
            sentinel_kwargs=dict(socket_timeout=timeout, socket_connect_timeout=timeout,
                                 decode_responses=True, protocol=2, retry=Retry(NoBackoff(), 0)),
            username=target.username, password=secret, db=target.db, retry=_retry(),
            health_check_interval=30, max_connections=max_connections, **common)
        return sentinels.master_for(target.service, redis_class=redis.Redis)
    try:
        return redis.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in target.nodes],
            username=target.username, password=secret, max_connections=max_connections,
            retry=_retry(), require_full_coverage=False, **common)
    except (redis.exceptions.RedisClusterException, redis.exceptions.RedisError) as exc:
        raise StoreUnavailable(f"redis unreachable: no Cluster seed answered ({exc})") from None


@dataclass(frozen=True)
class Durability:
    """How many replicas a write must reach before it counts, and how long it may wait for them
    (``TEMPALIAS_REDIS_WAIT_REPLICAS``, ``TEMPALIAS_REDIS_WAIT_TIMEOUT``). ``replicas`` None is
    "auto": one when the primary has a replica connected (``ROLE``, asked again every
    ``REPLICAS_RECHECK`` seconds), else none, so a lone Redis pays nothing."""

    replicas: int | None = None
    timeout: float = 1.0


def _bounded_semaphore(value: int):
    """gevent's own semaphore in the service (its threading is monkey-patched): the stdlib one is
    built from a Condition, whose ownership check yields to the hub on every acquire."""
    if gevent_patched("threading"):
        from gevent.lock import BoundedSemaphore
        return BoundedSemaphore(value)
    return threading.BoundedSemaphore(value)


class DirectConnections:
    """Commands sent on pooled redis-py connections without redis-py's client and pool layers,
    to one Redis (or, for a Sentinel-managed client, to whichever node is the primary now).

    On the hot paths (an alias's creation and look-up, a message's reserve and commit) command
    dispatch, the retry wrapper and the pool's checkout (a readability probe, a system call, and
    metrics on every command) cost more CPU than the command itself (loadtest/bench/, py-spy).
    redis-py's ``Connection`` still connects, authenticates, parses and bounds every wait by the
    socket timeout. A connection is handed back only after every reply was read, so it never holds
    a stray reply; any failure closes it. A kept connection that fails (Redis restarted, a primary
    gone) is replaced and the commands sent once more, as redis-py's retry does.
    """

    def __init__(self, client: redis.Redis, max_connections: int, timeout: float) -> None:
        pool = client.connection_pool
        # No retries of redis-py's own inside a connect (its handshake and health check would
        # each be tried three times, a timeout each on a stalled Redis): the one retry is ours,
        # for a kept connection found broken, and the operation's budget bounds it.
        self._make = functools.partial(pool.connection_class, **{
            **pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), "health_check_interval": 0})
        self._idle: list[redis.connection.AbstractConnection] = []
        self._slots = _bounded_semaphore(max_connections)
        self._timeout = timeout
        self._replicas = 0  # the primary's connected replicas, for Durability "auto"
        self._replicas_checked = -REPLICAS_RECHECK

    def execute(self, *commands: tuple, durability: Durability | None = None) -> list:
        """Send ``commands`` in one write; their replies in order, an error reply as a
        ``ResponseError`` in its place. Raises ConnectionError or TimeoutError; with a
        ``durability`` that asks for replicas, NotReplicated when fewer acknowledged in time."""
        wanted = self._wanted(durability) if durability is not None else 0
        if not wanted:
            return self._execute(commands)
        replies = self._execute((*commands, ("WAIT", wanted, int(durability.timeout * 1000))))
        acknowledged = replies.pop()
        if isinstance(acknowledged, Exception) or int(acknowledged) < wanted:
            raise NotReplicated(replies, 0 if isinstance(acknowledged, Exception)
                                else int(acknowledged), wanted)
        return replies

    def _wanted(self, durability: Durability) -> int:
        if durability.replicas is not None:
            return durability.replicas
        now = time.monotonic()
        if now - self._replicas_checked >= REPLICAS_RECHECK:
            [role] = self._execute((("ROLE",),))
            connected = (len(role[2]) if not isinstance(role, Exception) and role[0] == "master"
                         else 0)
            self._replicas, self._replicas_checked = min(1, connected), now
        return self._replicas

    def _execute(self, commands: Sequence[tuple]) -> list:
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
    def _exchange(connection, commands: Sequence[tuple]) -> list:
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


# Commands with no key: each travels to the node of the keyed command before it (WAIT after a
# write, ASKING before one), else of the one after it, else to any primary (PING).
_KEYLESS = frozenset({"PING", "WAIT", "ROLE", "SCRIPT", "ASKING", "INFO", "TIME"})
_SCRIPT_CALLS = frozenset({"EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO"})


def first_key(command: tuple) -> str | None:
    """The key a command's Cluster slot is decided by (all its keys share it), or None."""
    name = str(command[0]).upper()
    if name in _SCRIPT_CALLS:
        return command[3] if int(command[2]) > 0 else None
    if name in _KEYLESS or len(command) < 2:
        return None
    return command[1]


def command_slots(commands: Sequence[tuple]) -> list[int | None]:
    """Each command's slot; a keyless one takes its neighbour's (before, else after)."""
    slots = [None if key is None else redis.crc.key_slot(str(key).encode())
             for key in map(first_key, commands)]
    before = None
    for i, slot in enumerate(slots):
        slots[i] = before = slot if slot is not None else before
    after = None
    for i in reversed(range(len(slots))):
        slots[i] = after = slots[i] if slots[i] is not None else after
    return slots


class ClusterConnections:
    """The direct path on a Redis Cluster: each command to the primary of its key's slot, on a
    ``DirectConnections`` per node, commands for one node in one write; replies in order.

    redis-py's ``RedisCluster`` keeps the slot map (its ``NodesManager``); this follows ``MOVED``
    (the slot has a new owner: the map learns it) and ``ASK`` (a slot being migrated: ``ASKING``
    then the command, at the node named), and when a node cannot be reached refreshes the map
    from the surviving nodes (at most every ``MAP_REFRESH_GAP`` seconds, so a dead primary under
    load costs one refresh, not one per command) and, if the map now names another node, sends
    the commands there once. While the Cluster has not yet promoted a replica, the slot's
    operations fail, as StoreUnavailable, and recover by themselves once it has.
    """

    def __init__(self, cluster: redis.RedisCluster, max_connections: int, timeout: float) -> None:
        self.nodes = cluster.nodes_manager
        self._max_connections = max_connections
        self._timeout = timeout
        self._direct: dict[str, DirectConnections] = {}
        self._refreshed = -MAP_REFRESH_GAP

    def execute(self, *commands: tuple, durability: Durability | None = None) -> list:
        replies: list = [None] * len(commands)
        groups: dict[str, tuple[redis.cluster.ClusterNode, list[int]]] = {}
        for i, slot in enumerate(command_slots(commands)):
            node = self._primary(slot)
            groups.setdefault(node.name, (node, []))[1].append(i)
        for node, indices in groups.values():
            sent = [commands[i] for i in indices]
            for i, reply in zip(indices, self._send(node, sent, durability)):
                replies[i] = reply
        return replies

    def _primary(self, slot: int | None) -> redis.cluster.ClusterNode:
        try:
            if slot is None:
                return self.nodes.default_node or self.nodes.get_nodes_by_server_type(
                    redis.cluster.PRIMARY)[0]
            return self.nodes.get_node_from_slot(slot)
        except (redis.exceptions.RedisClusterException, IndexError) as exc:
            self._refresh()
            raise redis.exceptions.ConnectionError(f"no Cluster node serves it: {exc}") from None

    def _connections(self, node: redis.cluster.ClusterNode) -> DirectConnections:
        direct = self._direct.get(node.name)
        if direct is None:
            if node.redis_connection is None:
                self.nodes.create_redis_connections([node])
            direct = self._direct[node.name] = DirectConnections(
                node.redis_connection, self._max_connections, self._timeout)
        return direct

    def _send(self, node: redis.cluster.ClusterNode, commands: list[tuple],
              durability: Durability | None) -> list:
        try:
            replies = self._connections(node).execute(*commands, durability=durability)
        except NotReplicated:
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self._refresh()
            slots = {slot for slot in command_slots(commands) if slot is not None}
            moved = {self._primary(slot).name for slot in slots} if slots else {node.name}
            if moved == {node.name} or len(moved) != 1:
                raise
            [now_at] = moved
            replies = self._connections(self.nodes.get_node(node_name=now_at)).execute(
                *commands, durability=durability)
        for i, reply in enumerate(replies):
            if isinstance(reply, (redis.exceptions.MovedError, redis.exceptions.AskError)):
                replies[i] = self._redirected(commands[i], reply, durability)
        return replies

    def _redirected(self, command: tuple, error, durability: Durability | None):
        """Follow MOVED and ASK for one command; after REDIRECTS the last error is its reply."""
        for _ in range(REDIRECTS):
            if isinstance(error, redis.exceptions.AskError):
                node = self._node_at(error.host, error.port)
                reply = self._connections(node).execute(("ASKING",), command,
                                                        durability=durability)[1]
            else:
                self.nodes.move_slot(error)
                reply = self._connections(self._primary(error.slot_id)).execute(
                    command, durability=durability)[0]
            if not isinstance(reply, (redis.exceptions.MovedError, redis.exceptions.AskError)):
                return reply
            error = reply
        return error

    def _node_at(self, host: str, port: int) -> redis.cluster.ClusterNode:
        node = self.nodes.get_node(host=host, port=port)
        if node is None:
            node = redis.cluster.ClusterNode(host, port, redis.cluster.PRIMARY)
            self.nodes.nodes_cache[node.name] = node
        return node

    def _refresh(self) -> None:
        """Learn the slot map again from the nodes that answer; at most every MAP_REFRESH_GAP."""
        now = time.monotonic()
        if now - self._refreshed < MAP_REFRESH_GAP:
            return
        self._refreshed = now
        try:
            self.nodes.initialize()
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError):
            pass  # every seed unreachable now: the next failure tries again

    def close(self) -> None:
        for direct in self._direct.values():
            direct.close()
