"""The HTTP server: gevent's pywsgi with the limits, timeouts and drain a public service needs.

- Open connections are capped when they are accepted, before a byte is read: in total
  (``http_max_connections``) and per client (``http_concurrent_per_ip``, by the abuse policy's
  rules, the ``connection_subject`` handed in: trusted networks are exempt, a trusted proxy
  counts against the total alone). A
  connection over a cap is answered at once (503 or 429, JSON) and closed without taking a
  greenlet. Like SMTPServer, the server never stops accepting: otherwise a flood from one address
  fills the pool and everyone else waits in the listen backlog behind it (issue 11).
- Slow clients are cut off: the request line and headers must arrive within
  ``http_header_timeout`` however they trickle in (slowloris sends them a byte at a time), an idle
  keep-alive connection is closed after it, and every later socket read or write (the body, the
  answer) has ``http_client_timeout`` as its timeout.
- A request that is not HTTP is answered 400 in JSON and logged in one line at INFO naming the
  fault, never the request: pywsgi's own messages quote it, and a request line can hold a target.
- On drain, idle keep-alive connections are closed at once instead of holding the drain for its
  whole bound; requests in flight finish, then their connections close.
- A keep-alive connection yields to the others before each request after its first. A greenlet
  waits for the hub only when a read finds nothing: if the client (or Redis) answers before the
  greenlet reads again, as on a busy machine where they run on the other core, or if it pipelines,
  one connection is served request after request while every other waits. Measured under
  ``wrk -c50`` with ``--workers 2`` (creation): p99 185-198 ms without the yield, 53-64 ms with
  it, at equal or higher throughput (docs/performance-notes.md).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Callable

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from tempalias.config import HttpSettings
from tempalias.netio import send_all

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1  # slots free as connections end, any moment
QUIET_LOG_INTERVAL = 60.0  # per client (or for all): one line a minute, however many connections
QUIET_LOG_KEYS = 10_000
DRAIN_BYTES = 16384


class _ErrorLog:
    """pywsgi's error_log wants a file-like object; route it into logging."""

    def write(self, text: str) -> None:
        text = text.strip()
        if text:
            log.error("http: %s", text)

    def flush(self) -> None:
        pass


class _ClientTooSlow(Exception):
    """The request head did not arrive within ``http_header_timeout``."""


class _SlowHeaders(ValueError):
    """pywsgi turns a ValueError from ``read_request`` into a client error: ours is a timeout."""


def _json_answer(status: str, error: str, description: str, *headers: str) -> bytes:
    """A whole HTTP answer with the API's JSON error body, that closes the connection."""
    body = json.dumps({"error": error, "description": description}).encode()
    head = (f"HTTP/1.1 {status}", "Connection: close", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers)
    return "\r\n".join(head).encode("ascii") + b"\r\n\r\n" + body


_REQUEST_TIMEOUT = _json_answer("408 Request Timeout", "request-timeout",
                                "the request came too slowly")
_BAD_REQUEST = _json_answer("400 Bad Request", "bad-request",
                            "the request is not valid HTTP/1.1")
_CLIENT_BUSY = _json_answer("429 Too Many Requests", "too-many-connections",
                            "your address holds as many open connections as it may; "
                            "close one or try again shortly", f"Retry-After: {RETRY_AFTER_SECONDS}")
_SERVER_BUSY = _json_answer("503 Service Unavailable", "too-many-connections",
                            "the server holds as many open connections as it can; "
                            "try again shortly", f"Retry-After: {RETRY_AFTER_SECONDS}")


def _answer_and_close(sock, answer: bytes) -> None:
    """Runs in the accept loop, so it must not wait: a fresh socket's send buffer takes a short
    answer in one non-blocking send. What the client sent already is read first, because closing
    a socket with unread input sends RST, which can discard the answer before the client reads it.
    """
    try:
        sock.setblocking(False)
        sock.recv(DRAIN_BYTES)
    except OSError:
        pass  # nothing sent yet (EAGAIN)
    try:
        sock.send(answer)
    except OSError:
        pass
    finally:
        sock.close()


class _QuietLog:
    """At most one line per key per ``QUIET_LOG_INTERVAL``, saying how many were held back: a flood
    of connections must not become a flood of log lines. It remembers at most ``QUIET_LOG_KEYS``
    keys, forgotten once their interval is over (checked once an interval, or when full)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}  # key -> (logged at, held back since)
        self._pruned_at = time.monotonic()

    def log(self, level: int, key: str, message: str) -> None:
        now = time.monotonic()
        logged_at, held_back = self._last.get(key, (None, 0))
        if logged_at is not None and now - logged_at < QUIET_LOG_INTERVAL:
            self._last[key] = (logged_at, held_back + 1)
            return
        if now - self._pruned_at >= QUIET_LOG_INTERVAL or len(self._last) >= QUIET_LOG_KEYS:
            self._last = {other: value for other, value in self._last.items()
                          if now - value[0] < QUIET_LOG_INTERVAL}
            self._pruned_at = now
            if len(self._last) >= QUIET_LOG_KEYS:
                self._last.clear()  # a crowd: forget who was logged rather than grow
        self._last[key] = (now, 0)
        log.log(level, "http: %s%s", message,
                f" ({held_back} more like it since the last line)" if held_back else "")


class _TimedHandler(WSGIHandler):
    """Slow HTTP clients are cut off: the request line and headers must arrive within one
    deadline (slowloris sends them a byte at a time), an idle keep-alive connection is closed after
    it, and every later socket read or write (the body) has the client timeout.
    """

    def __init__(self, sock, address, server, rfile=None):
        sock.settimeout(server.client_timeout)
        super().__init__(sock, address, server, rfile)
        self._deadline: gevent.Timeout | None = None
        self._requests = 0

    def read_requestline(self):
        if self._requests:
            gevent.sleep(0)  # the other connections' turn first (see the module's docstring)
        if self.server.closed:
            return ""  # draining: no further request on this connection
        self._requests += 1
        self._deadline = gevent.Timeout.start_new(self.server.header_timeout, _ClientTooSlow)
        idle = self.server.idle_handlers
        current = gevent.getcurrent()
        idle.add(current)
        try:
            return super().read_requestline()
        except _ClientTooSlow:
            raise TimeoutError("no request line in time") from None  # pywsgi closes quietly
        finally:
            idle.discard(current)

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        except _ClientTooSlow:
            self.close_connection = True
            raise _SlowHeaders() from None
        finally:
            if self._deadline is not None:
                self._deadline.close()

    def _handle_client_error(self, ex):
        """Answers, in pywsgi's place, every request it cannot take. pywsgi's own logs the request
        line or the offending bytes at ERROR and answers in plain text; this logs one line at INFO
        naming the fault by the exception's type, never its text, and answers in JSON."""
        self.close_connection = True
        client = self.client_address[0]
        if isinstance(ex, (_SlowHeaders, TimeoutError)):  # our deadline, or one slow read
            self.server.quiet_log.log(logging.INFO, client,
                                      f"{client} too slow sending the request headers")
            return ("408", _REQUEST_TIMEOUT)
        log.info("http: %s sent a request that is not valid HTTP/1.1 (%s)",
                 client, type(ex).__name__)
        return ("400", _BAD_REQUEST)

    def handle_one_request(self):
        try:
            return super().handle_one_request()
        finally:
            if self._deadline is not None:
                self._deadline.close()

    def _sendall(self, data):
        # pywsgi's own, but without gevent's sendall tax (tempalias/netio.py).
        try:
            send_all(self.socket, data)
        except OSError as ex:
            self.status = f"socket error: {ex}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)


class HTTPServer(WSGIServer):
    def __init__(self, listener, application, settings: HttpSettings,
                 connection_subject: Callable[[str], str | None]) -> None:
        """``settings``: the http section of the Config; ``connection_subject``: what a new
        connection from a peer address counts against in the per-client cap, None for no cap
        (``AbusePolicy.connection_subject``)."""
        super().__init__(listener, application, log=None, error_log=_ErrorLog(),
                         spawn=Pool(settings.http_max_connections), handler_class=_TimedHandler)
        self.full = lambda: False  # never stop accepting: over the caps we answer at once instead
        self.client_timeout = settings.http_client_timeout
        self.header_timeout = settings.http_header_timeout
        self.per_client = settings.http_concurrent_per_ip
        # Counted here, not in Redis: it is asked for every connection, in the accept loop. With
        # --workers N each worker counts its own (the kernel spreads a client over the workers).
        self._subject = functools.lru_cache(maxsize=4096)(connection_subject)
        self._open: dict[str, int] = {}  # per-client subject -> open connections
        self.quiet_log = _QuietLog()
        self.idle_handlers: set = set()  # greenlets waiting for a keep-alive client's next request

    def do_handle(self, sock, address) -> None:
        """Each new connection, in the accept loop: take it, or answer and close it at once."""
        if self.pool.full():
            self.quiet_log.log(logging.WARNING, "*", f"refused a connection: all {self.pool.size} "
                                                     "connections of this process are open")
            _answer_and_close(sock, _SERVER_BUSY)
            return
        subject = self._subject(address[0]) if self.per_client else None
        if subject is not None:
            held = self._open.get(subject, 0)
            if held >= self.per_client:
                self.quiet_log.log(logging.INFO, subject, f"refused a connection from {subject}: "
                                                          f"open connections at the cap ({held})")
                _answer_and_close(sock, _CLIENT_BUSY)
                return
            self._open[subject] = held + 1
        super().do_handle(sock, address)

    def do_close(self, sock, address) -> None:
        """After the connection's greenlet (or instead of it, if it could not start)."""
        super().do_close(sock, address)
        subject = self._subject(address[0]) if self.per_client else None
        if subject is not None:
            held = self._open.pop(subject) - 1
            if held:
                self._open[subject] = held

    def drain(self, timeout: float) -> None:
        """Stop accepting, close idle keep-alive connections, give requests ``timeout`` to end."""
        self.close()
        for idle in list(self.idle_handlers):
            idle.kill(block=False)
        self.stop(timeout=timeout)
