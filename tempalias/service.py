"""Wires config, store and servers into one running process: start, serve, drain, stop.

Dependencies go one way: the CLI builds a Service from a Config and a store; the Service builds
the listeners and servers and owns their lifetime. SIGTERM or SIGINT closes the listeners at once,
lets in-flight work finish for ``drain_seconds``, then stops whatever is left.
"""

from __future__ import annotations

import json
import logging
import os
import signal

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from tempalias.config import Config
from tempalias.listeners import bound_port, make_listener
from tempalias.store import AliasStore
from tempalias.web import create_app

log = logging.getLogger(__name__)

HTTP_CONCURRENCY = 1000


class _ErrorLog:
    """pywsgi's error_log wants a file-like object; route it into logging."""

    def write(self, text: str) -> None:
        text = text.strip()
        if text:
            log.error("http: %s", text)

    def flush(self) -> None:
        pass


class Service:
    def __init__(self, config: Config, store: AliasStore) -> None:
        self.config = config
        self.store = store
        self.http_socket = make_listener(config.http_listen)
        self.http = WSGIServer(self.http_socket, create_app(config, store), log=None,
                               error_log=_ErrorLog(), spawn=Pool(HTTP_CONCURRENCY))
        self._stopping = gevent.event.Event()

    @property
    def http_port(self) -> int:
        return bound_port(self.http_socket)

    def start(self) -> None:
        self.http.start()
        host = self.config.http_listen.host
        log.info("http listening on %s:%d", host, self.http_port)

    def ports(self) -> dict[str, int]:
        return {"http": self.http_port}

    def write_ready_file(self, path: str) -> None:
        """Atomically say where we listen, for supervisors and tests that bind port 0."""
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), **self.ports()}, handle)
        os.replace(temporary, path)

    def request_stop(self, signum: int | None = None) -> None:
        if signum is not None:
            log.info("received %s: draining for up to %.0f s",
                     signal.Signals(signum).name, self.config.drain_seconds)
        self._stopping.set()

    def serve_until_signalled(self) -> None:
        handlers = [gevent.signal_handler(sig, self.request_stop, sig)
                    for sig in (signal.SIGTERM, signal.SIGINT)]
        try:
            self._stopping.wait()
        finally:
            for handler in handlers:
                handler.cancel()
        self.stop()

    def stop(self) -> None:
        """Close the listeners first, then drain every server within one shared deadline."""
        self.http.close()
        self.http.stop(timeout=self.config.drain_seconds)
        log.info("stopped")
