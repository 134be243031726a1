"""A private redis-server child process: the embedded default and the tests' Redis.

``tempalias serve`` without ``TEMPALIAS_REDIS_URL`` runs one of these on a unix socket under the
data directory, with an append-only file there, so aliases survive a restart and nothing listens on
the network. The tests start one on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from tempalias.lifetime import die_with_parent

INSTALL_HINT = "install it with: apt-get install redis-server (Debian/Ubuntu), or set TEMPALIAS_REDIS_URL"


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

    @property
    def url(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def is_answering(self) -> bool:
        return _ping(self.unix_path, self.port)

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedRedisError(f"redis-server was not found on PATH; {INSTALL_HINT}")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if self.unix_path is not None:
            if self.is_answering():
                raise EmbeddedRedisError(
                    f"a redis-server already answers on {self.unix_path}: "
                    "is another tempalias running with this data directory?"
                )
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)  # stale socket of a process that died
        args = [binary, "--dir", self.directory, "--daemonize", "no", "--save", "",
                "--logfile", os.path.join(self.directory, "redis.log")]
        if self.unix_path is not None:
            args += ["--port", "0", "--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec",
                     "--appenddirname", "appendonly"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent, close_fds=True,
        )
        deadline = time.monotonic() + timeout
        while not self.is_answering():
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with status {self.process.returncode}; "
                    f"see {os.path.join(self.directory, 'redis.log')}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes redis-server flush its append-only file and exit; then reap it."""
        process, self.process = self.process, None
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
