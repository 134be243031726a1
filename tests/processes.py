"""Runs ``tempalias serve`` as a real child process, the way an operator would, for the tests.

Servers bind port 0 and report their ports through ``--ready-file``; the test waits on that file
with a deadline rather than sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT = 30.0
# How the tests start tempalias: this interpreter's package, as the editable install provides it.
MODULE_COMMAND = (sys.executable, "-m", "tempalias")
# Ports the kernel picks, so that tests never collide with each other or with a `make run`.
FREE_PORTS = {"TEMPALIAS_HTTP_LISTEN": "127.0.0.1:0", "TEMPALIAS_SMTP_LISTEN": "127.0.0.1:0"}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class ServiceProcess:
    """``[prefix] command [args] serve`` in ``workdir``, with no ``TEMPALIAS_*`` variable of the
    caller's.

    ``test_settings`` adds what the tests run with (their data directory, domain, one worker);
    without it only ``FREE_PORTS`` and ``env`` are set, and the service runs on its defaults.
    ``prefix``: a command that runs the service's, e.g. ``NetNamespace.prefix``.
    """

    def __init__(self, workdir: Path, env: dict[str, str], args: tuple[str, ...] = (),
                 command: tuple[str, ...] = MODULE_COMMAND, test_settings: bool = True,
                 prefix: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ready_file = workdir / "ready.json"
        self.log_path = workdir / "service.log"
        settings = {
            "TEMPALIAS_DATA_DIR": str(workdir / "data"),
            "TEMPALIAS_DOMAINS": "tempalias.test",
            "TEMPALIAS_WORKERS": "1",
            # Services sweep ended aliases only when a test asks, so store tests are not raced.
            "TEMPALIAS_PURGE_INTERVAL": "86400",
        } if test_settings else {}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TEMPALIAS_")},
            **FREE_PORTS,
            **settings,
            **env,
        }
        self.command = command
        self.args = args
        self.prefix = tuple(prefix)
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    def start(self) -> "ServiceProcess":
        if self.ready_file.exists():
            self.ready_file.unlink()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [*self.prefix, *self.command, *self.args, "serve",
                 "--ready-file", str(self.ready_file)],
                cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"tempalias exited with {self.process.returncode}:\n"
                                     + self.log_text())
            return self.ready_file.exists()

        wait_for(ready, READY_TIMEOUT, "tempalias to listen")
        self.ports = json.loads(self.ready_file.read_text())
        return self

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp"]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
                raise AssertionError(f"tempalias ignored signal {sig} for {timeout:.0f} s")
        return process.returncode
