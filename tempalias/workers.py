"""Several worker processes on one HTTP and one SMTP port, supervised by their parent.

The parent binds every listening socket itself (``SO_REUSEPORT``, so the kernel spreads new
connections over the workers; gevent's servers have no such option), forks the workers, restarts a
worker that dies, and on SIGTERM or SIGINT passes the signal on, waits for every worker to drain,
and exits 0. Each worker is a full gevent server: its own Service, store connections and hub.

Each worker gets sockets of its own in the reuse-port group. When a worker dies, its sockets die
with it (the parent keeps no copy, or the kernel would keep routing connections to a socket that
nobody accepts on); its replacement gets new ones bound to the same ports.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable

import gevent
import gevent.event

from tempalias.config import Listen
from tempalias.lifetime import RestartBackoff, die_with_parent, parent_is
from tempalias.listeners import bound_port, make_listener

log = logging.getLogger(__name__)


@dataclass
class WorkerSockets:
    http: socket.socket
    smtp: socket.socket

    def close(self) -> None:
        self.http.close()
        self.smtp.close()


# Runs in the child with its sockets; returns the exit status. The CLI passes one that builds the
# store and a Service on the sockets and serves until signalled.
WorkerMain = Callable[[WorkerSockets], int]


class WorkerSupervisor:
    def __init__(self, http_listen: Listen, smtp_listen: Listen, drain_seconds: float, count: int,
                 worker_main: WorkerMain, on_exit: Callable[[int], None] | None = None) -> None:
        """``drain_seconds``: what each worker's Service takes to drain (the service setting);
        ``on_exit(pid)``: told of each worker reaped (the metrics forget its live values)."""
        self.http_host, self.http_port = http_listen.host, http_listen.port
        self.smtp_host, self.smtp_port = smtp_listen.host, smtp_listen.port
        self.drain_seconds = drain_seconds
        self.count = count
        self.worker_main = worker_main
        self.on_exit = on_exit
        self.workers: dict[int, int] = {}  # pid -> slot
        self._stopping = gevent.event.Event()
        self._backoff: dict[int, RestartBackoff] = {}  # slot -> its restart delays
        self._handlers: list = []

    def bind(self) -> WorkerSockets:
        """A fresh socket pair in the reuse-port group; the first one fixes the ports (port 0)."""
        http = make_listener(Listen(self.http_host, self.http_port), reuse_port=True)
        try:
            smtp = make_listener(Listen(self.smtp_host, self.smtp_port), reuse_port=True)
        except BaseException:
            http.close()
            raise
        self.http_port, self.smtp_port = bound_port(http), bound_port(smtp)
        return WorkerSockets(http, smtp)

    def ports(self) -> dict[str, int]:
        return {"http": self.http_port, "smtp": self.smtp_port}

    def spawn(self, slot: int, sockets: WorkerSockets | None = None) -> int:
        sockets = sockets or self.bind()
        parent = os.getpid()
        pid = gevent.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                # A parent killed outright must not leave its workers serving its ports: they
                # get SIGTERM (and drain) when it goes, or leave now if it went before this.
                die_with_parent(signal.SIGTERM)
                if not parent_is(parent):
                    os._exit(0)
                # The parent's signal watchers and worker table were copied by fork: a worker
                # must neither act on them nor signal its siblings.
                for handler in self._handlers:
                    handler.cancel()
                self._handlers, self.workers = [], {}
                status = self.worker_main(sockets)
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(status)
        sockets.close()  # the worker holds the only reference now
        self.workers[pid] = slot
        self._backoff.setdefault(slot, RestartBackoff()).started()
        log.info("worker %d started (pid %d)", slot, pid)
        return pid

    def start(self) -> None:
        first = self.bind()  # binds port 0 once, so every worker shares the same ports
        self.spawn(0, first)
        for slot in range(1, self.count):
            self.spawn(slot)

    def forward_signal(self, signum: int) -> None:
        """SIGUSR1 (status line) is for the workers: pass it on rather than die of it."""
        for pid in list(self.workers):
            _signal(pid, signum)

    def request_stop(self, signum: int) -> None:
        if self._stopping.is_set():
            return
        log.info("received %s: draining %d workers", signal.Signals(signum).name, len(self.workers))
        self._stopping.set()
        for pid in list(self.workers):
            _signal(pid, signal.SIGTERM)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; then wait for the workers' drain and return 0."""
        self._handlers = [gevent.signal_handler(sig, self.request_stop, sig)
                          for sig in (signal.SIGTERM, signal.SIGINT)]
        self._handlers.append(gevent.signal_handler(signal.SIGUSR1, self.forward_signal,
                                                    signal.SIGUSR1))
        try:
            while not self._stopping.is_set():
                self._reap_and_restart()
                self._stopping.wait(0.2)
            return self._wait_for_drain()
        finally:
            for handler in self._handlers:
                handler.cancel()
            self._handlers = []

    def _reap_and_restart(self) -> None:
        for pid, slot in list(self.workers.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
            del self.workers[pid]
            self._exited(pid)
            if self._stopping.is_set():
                continue
            delay = self._backoff[slot].died()
            log.error("worker %d (pid %d) died (%s); restarting in %.1f s",
                      slot, pid, _describe(status), delay)
            if delay:
                gevent.spawn_later(delay, self._restart, slot)
            else:
                self._restart(slot)

    def _exited(self, pid: int) -> None:
        if self.on_exit is not None:
            self.on_exit(pid)

    def _restart(self, slot: int) -> None:
        if not self._stopping.is_set():
            self.spawn(slot)

    def _wait_for_drain(self) -> int:
        deadline = time.monotonic() + self.drain_seconds + 5.0
        while self.workers and time.monotonic() < deadline:
            for pid in list(self.workers):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    del self.workers[pid]
                    self._exited(pid)
            gevent.sleep(0.05)
        for pid in list(self.workers):
            log.error("worker pid %d did not drain in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.workers.clear()
        log.info("all workers stopped")
        return 0


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def default_worker_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

