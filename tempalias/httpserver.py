"""The HTTP server: gevent's pywsgi with the timeouts and the drain that a public service needs.

- Slow clients are cut off: the request line and headers must arrive within one deadline
  (slowloris sends them a byte at a time), and every later read or write has it as its timeout.
- On drain, idle keep-alive connections are closed at once instead of holding the drain for its
  whole bound; requests in flight finish, then their connections close.
"""

from __future__ import annotations

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


_TIMEOUT_BODY = b'{"error": "request-timeout", "description": "the request came too slowly"}'
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


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
        if isinstance(ex, _SlowHeaders):
            log.info("http: %s too slow sending the request headers", self.client_address[0])
            return ("408", _REQUEST_TIMEOUT)
        return super()._handle_client_error(ex)

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
