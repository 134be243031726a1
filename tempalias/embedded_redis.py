"""A private redis-server child process: the embedded default and the tests' Redis.

``tempalias serve`` without ``TEMPALIAS_REDIS_URL`` runs one of these on a unix socket under the
data directory, with an append-only file there, so aliases survive a restart and nothing listens on
the network, and keeps it alive: when it dies (the OOM killer, a stray ``kill -9``) it comes back on
the same socket, and the store's connections find it again by themselves. The tests start one on a
free loopback port.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time

import gevent

from tempalias.lifetime import RestartBackoff, die_with_parent

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with: apt-get install redis-server (Debian/Ubuntu), or set TEMPALIAS_REDIS_URL"
WATCH_INTERVAL = 0.2  # seconds between looks at a kept-alive redis-server
START_TIMEOUT = 10.0  # seconds a redis-server has to answer its first PING


class EmbeddedRedisError(Exception):
    """The private redis-server could not be started."""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ping(unix_path: str | None, port: int | None, timeout: float = 0.5) -> bool:
    """A raw PING, so that this module works before and without redis-py's pool."""
    try:
        if unix_path is not None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: object = unix_path
        else:
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = ("127.0.0.1", port)
    except OSError:
        return False
    with conn:
        conn.settimeout(timeout)
        try:
            conn.connect(target)
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class RedisServer:
    """One redis-server child, listening either on a unix socket or on a loopback port."""

    def __init__(self, directory: str, port: int | None = None, persistent: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        self.port = port
        self.unix_path = None if port is not None else os.path.join(self.directory, "redis.sock")
        self.persistent = persistent
        self.process: subprocess.Popen | None = None
        self._owner = os.getpid()  # the process that started it: the only one to touch it
        self._lock = threading.Lock()  # one start or stop at a time
        self._stopping = threading.Event()
        self._keeper: gevent.Greenlet | None = None

    @property
    def url(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def is_answering(self) -> bool:
        return _ping(self.unix_path, self.port)

    def start(self, timeout: float = START_TIMEOUT) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedRedisError(f"redis-server was not found on PATH; {INSTALL_HINT}")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if self.unix_path is not None and self.is_answering():
            raise EmbeddedRedisError(
                f"a redis-server already answers on {self.unix_path}: "
                "is another tempalias running with this data directory?"
            )
        self._stopping.clear()
        with self._lock:
            self._launch(binary, timeout)
        return self

    def _launch(self, binary: str, timeout: float) -> None:
        """Start redis-server and wait for its PING; a failed start leaves ``process`` dead."""
        self._owner = os.getpid()
        if self.unix_path is not None and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)  # stale socket of a process that died
        args = [binary, "--dir", self.directory, "--daemonize", "no", "--save", "",
                "--logfile", os.path.join(self.directory, "redis.log")]
        if self.unix_path is not None:
            args += ["--port", "0", "--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        if self.persistent:
            # "no": redis-server writes the append-only file before it answers, so a killed
            # redis-server (what keep_alive recovers from) loses nothing it acknowledged; the
            # kernel writes it out within its dirty-page expiry (30 s by default), the window on
            # a machine crash. With "everysec" Redis postpones that write for up to 2 s while a
            # background fsync is slow, and answers anyway: under disk load 2 of 60 acknowledged
            # writes were gone after a kill -9.
            args += ["--appendonly", "yes", "--appendfsync", "no",
                     "--appenddirname", "appendonly"]
        else:
            args += ["--appendonly", "no"]
        self.process = process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent, close_fds=True,
        )
        deadline = time.monotonic() + timeout
        while not self.is_answering():
            if not self._ours():
                raise EmbeddedRedisError("forked while starting redis-server")  # see keep_alive
            if process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with status {process.returncode}; "
                    f"see {os.path.join(self.directory, 'redis.log')}"
                )
            if time.monotonic() > deadline:
                process.kill()
                process.wait(timeout)
                raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f} s")
            time.sleep(0.02)

    def _ours(self) -> bool:
        return os.getpid() == self._owner

    def keep_alive(self) -> None:
        """Restart redis-server whenever it dies, until ``stop()``; for ``tempalias serve``.

        It comes back on the same socket (or port) with its append-only file, so nothing
        acknowledged is lost, and the store's connections reconnect by themselves. The watcher is a
        greenlet on the service's hub; workers forked from this process copy it (gevent's fork
        keeps greenlets running) and their copy leaves at its next look, so only the process that
        started redis-server watches, restarts and stops it.
        """
        if self._keeper is None:
            self._keeper = gevent.spawn(self._watch)

    def _watch(self) -> None:
        backoff = RestartBackoff()
        binary = shutil.which("redis-server") or "redis-server"
        while not self._stopping.wait(WATCH_INTERVAL) and self._ours():
            process = self.process
            if process is None or process.poll() is None:
                continue
            delay = backoff.died()
            log.error("embedded redis-server (pid %d) exited with status %s; restarting in %.1f s",
                      process.pid, process.returncode, delay)
            if self._stopping.wait(delay) or not self._ours():
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._launch(binary, START_TIMEOUT)
                except (EmbeddedRedisError, OSError) as exc:
                    if not self._ours():
                        return
                    log.error("embedded redis-server did not start again: %s", exc)
                    continue  # it is seen dead at the next look, and tried again after a delay
            backoff.started()
            log.info("embedded redis-server restarted (pid %d)", self.process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes redis-server flush its append-only file and exit; then reap it."""
        self._stopping.set()
        keeper, self._keeper = self._keeper, None
        with self._lock:
            process, self.process = self.process, None
        if keeper is not None and keeper is not gevent.getcurrent():
            keeper.join(timeout)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
