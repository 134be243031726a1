"""The HTTP server: gevent's pywsgi with the timeouts and the drain that a public service needs.

- Slow clients are cut off: the request line and headers must arrive within one deadline
  (slowloris sends them a byte at a time), and every later read or write has it as its timeout.
- A request that is not HTTP is answered 400 in JSON and logged in one line at INFO naming the
  fault, never the request: pywsgi's own messages quote it, and a request line can hold a target.
- On drain, idle keep-alive connections are closed at once instead of holding the drain for its
  whole bound; requests in flight finish, then their connections close.
"""

from __future__ import annotations

import json
import logging

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from tempalias.netio import send_all

log = logging.getLogger(__name__)


class _ErrorLog:
    """pywsgi's error_log wants a file-like object; route it into logging."""

    def write(self, text: str) -> None:
        text = text.strip()
        if text:
            log.error("http: %s", text)

    def flush(self) -> None:
        pass


class _ClientTooSlow(Exception):
    """The request head did not arrive within ``http_client_timeout``."""


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


class _TimedHandler(WSGIHandler):
    """Slow HTTP clients are cut off: the request line and headers must arrive within one
    deadline (slowloris sends them a byte at a time), an idle keep-alive connection is closed after
    it, and every later socket read or write (the body) has it as its timeout.
    """

    def __init__(self, sock, address, server, rfile=None):
        sock.settimeout(server.client_timeout)
        super().__init__(sock, address, server, rfile)
        self._deadline: gevent.Timeout | None = None

    def read_requestline(self):
        if self.server.closed:
            return ""  # draining: no further request on this connection
        self._deadline = gevent.Timeout.start_new(self.server.client_timeout, _ClientTooSlow)
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
            log.info("http: %s too slow sending the request headers", client)
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
    def __init__(self, listener, application, client_timeout: float, concurrency: int) -> None:
        super().__init__(listener, application, log=None, error_log=_ErrorLog(),
                         spawn=Pool(concurrency), handler_class=_TimedHandler)
        self.client_timeout = client_timeout
        self.idle_handlers: set = set()  # greenlets waiting for a keep-alive client's next request

    def drain(self, timeout: float) -> None:
        """Stop accepting, close idle keep-alive connections, give requests ``timeout`` to end."""
        self.close()
        for idle in list(self.idle_handlers):
            idle.kill(block=False)
        self.stop(timeout=timeout)
