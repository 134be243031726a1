"""Connections to Redis: the redis-py client every wait of which is bounded, and the direct path.

Only the script runner (``runner.py``) sends commands on them.
"""

from __future__ import annotations

import functools
import socket
import sys
import threading

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from tempalias.netio import send_all

DEFAULT_BUDGET = 5.0  # seconds per operation, for a client built without a socket timeout


def gevent_patched(module: str) -> bool:
    """True in the service and the CLI (``cli.py`` monkey-patches), False in a plain process."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    return gevent_monkey is not None and gevent_monkey.is_module_patched(module)


def budget_of(client: redis.Redis) -> float:
    """The client's ``timeout`` (``connect``): the budget of one store operation."""
    return client.connection_pool.connection_kwargs.get("socket_timeout") or DEFAULT_BUDGET


def connect(url: str, timeout: float, max_connections: int = 64,
            password: str | None = None) -> redis.Redis:
    """A Redis client whose every wait is bounded and whose pool cannot grow without limit.

    ``timeout`` bounds each wait here, and the stores built on the client take it as the budget
    of a whole operation, retries included. ``password``: used when the URL carries none (redis-py
    lets the URL's win)."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        password=password,
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
    if gevent_patched("threading"):
        from gevent.lock import BoundedSemaphore
        return BoundedSemaphore(value)
    return threading.BoundedSemaphore(value)


class DirectConnections:
    """Commands sent on pooled redis-py connections without redis-py's client and pool layers.

    On the hot paths (an alias's creation and look-up, a message's reserve and commit) command
    dispatch, the retry wrapper and the pool's checkout (a readability probe, a system call, and
    metrics on every command) cost more CPU than the command itself (loadtest/bench/, py-spy).
    redis-py's ``Connection`` still connects, authenticates, parses and bounds every wait by the
    socket timeout. A connection is handed back only after every reply was read, so it never holds
    a stray reply; any failure closes it. A kept connection that fails (Redis restarted) is
    replaced and the commands sent once more, as redis-py's retry does.
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
