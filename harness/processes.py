"""Child processes for the tests and the load test: started, waited for, stopped on every path.

A child writes its output to a log file in its own directory and, when it can, says it is ready
(and on which ports) through a ready file: the caller waits on that file with a deadline, never
on a sleep and never on the wording of a log line. A child is asked to die with its parent, so
nothing outlives an interrupted test run or benchmark.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tempalias.lifetime import die_with_parent

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# Ports the kernel picks, so that tests never collide with each other or with a `make run`.
FREE_PORTS = {"TEMPALIAS_HTTP_LISTEN": "127.0.0.1:0", "TEMPALIAS_SMTP_LISTEN": "127.0.0.1:0",
              "TEMPALIAS_METRICS_LISTEN": "127.0.0.1:0"}
# How tempalias is started: this interpreter's package, as the editable install provides it.
MODULE_COMMAND = (sys.executable, "-m", "tempalias")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TimedOut(AssertionError):
    """A condition did not come true within its deadline (an AssertionError, so that pytest
    reports it as a failed expectation)."""


class ChildFailed(AssertionError):
    """A child exited before it was ready, or ignored the signal that should stop it."""


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy (which is returned), or raise
    TimedOut after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def holder(pids, local_port: int) -> int | None:
    """Which of the processes ``pids`` holds the server side of our TCP connection from
    ``local_port`` (None: none does, e.g. it has closed it): what a server is doing, seen from
    outside, without reading its log."""
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.raddr and c.raddr.port == local_port for c in connections):
            return pid
    return None


def environment_without_tempalias(**extra: str) -> dict[str, str]:
    """This process's environment minus every ``TEMPALIAS_*`` setting, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TEMPALIAS_")}, **extra}


class Child:
    """``argv`` in ``workdir``, output in ``workdir/NAME.log``; ready once ``ready_file`` exists
    (it holds JSON), or at once when there is none."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None,
                 ready_file: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = Path(workdir)
        self.env = env
        self.ready_file = ready_file
        self.log_path = self.workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = READY_TIMEOUT) -> dict:
        """Start it and wait for its ready file; return what the file says ({} without one)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ready_file is not None and self.ready_file.exists():
            self.ready_file.unlink()
        with open(self.log_path, "ab") as log:
            # SIGTERM when we die, even by SIGKILL: no child outlives the run that started it.
            self.process = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            preexec_fn=die_with_parent)
        if self.ready_file is None:
            return {}

        def ready() -> bool:
            if self.process.poll() is not None:
                raise ChildFailed(f"{self.name} exited with {self.process.returncode}:\n"
                                  + self.log_text()[-4000:])
            return self.ready_file.exists()

        try:
            wait_for(ready, timeout, f"{self.name} to be ready")
        except BaseException:
            self.stop()
            raise
        return json.loads(self.ready_file.read_text())

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """What it wrote so far: for the tests whose subject is a log line, and for failures."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig`` and wait; its exit status (None if it was never started). One that
        ignores ``sig`` for ``timeout`` seconds is killed, and ChildFailed raised."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
                raise ChildFailed(f"{self.name} ignored signal {sig} for {timeout:.0f} s")
        return process.returncode


def python_child(name: str, module_args: list[str], workdir: Path, env: dict[str, str] | None = None,
                 ready_file: Path | None = None) -> Child:
    """``python -m MODULE ARGS`` with this interpreter, importing from this checkout."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return Child(name, [sys.executable, "-m", *module_args], workdir, env, ready_file)


class ServiceProcess(Child):
    """``[prefix] command [args] serve [serve_args]`` in ``workdir``, with no ``TEMPALIAS_*``
    variable of the caller's; it reports ``{"pid", "http", "smtp", "metrics"}`` through ``--ready-file``.

    ``test_settings`` adds what the tests run with (their data directory, domain, one worker);
    without it only ``FREE_PORTS`` and ``env`` are set, and the service runs on its defaults.
    ``prefix``: a command that runs the service's, e.g. ``NetNamespace.prefix``.
    """

    def __init__(self, workdir: Path, env: dict[str, str], args: tuple[str, ...] = (),
                 command: tuple[str, ...] = MODULE_COMMAND, test_settings: bool = True,
                 prefix: tuple[str, ...] = (), serve_args: tuple[str, ...] = (),
                 name: str = "service") -> None:
        workdir = Path(workdir)
        settings = {
            "TEMPALIAS_DATA_DIR": str(workdir / "data"),
            "TEMPALIAS_DOMAINS": "tempalias.test",
            "TEMPALIAS_WORKERS": "1",
            # Services sweep ended aliases only when a test asks, so store tests are not raced.
            "TEMPALIAS_PURGE_INTERVAL": "86400",
        } if test_settings else {}
        if command == MODULE_COMMAND and "PYTHONPATH" not in env:
            # This checkout's tempalias, not whichever the interpreter has installed (an editable
            # install points at one checkout; a git worktree beside it is another).
            settings["PYTHONPATH"] = str(PROJECT_ROOT)
        ready_file = workdir / f"{name}.ready"
        super().__init__(name, [*prefix, *command, *args, "serve", *serve_args,
                                "--ready-file", str(ready_file)],
                         workdir, environment_without_tempalias(**{**FREE_PORTS, **settings, **env}),
                         ready_file)
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = READY_TIMEOUT) -> "ServiceProcess":
        self.ports = super().start(timeout)
        return self

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp"]
