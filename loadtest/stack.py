"""A throwaway tempalias stack on loopback: embedded Redis, ``tempalias serve``, an SMTP sink.

Used by ``make loadtest`` (loadtest/run.py), the smoke test and the benchmark. Every abuse limit is
switched off (each is a setting, ``0`` disables it) so that the load measures the service, not its
defences; the SMTP connection bound is raised. Nothing is left behind: ``Stack`` is a context
manager that stops, on every path, every process it started.

``python -m loadtest.stack`` starts one and keeps it up until Ctrl-C, for pointing Locust's web UI
at it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tempalias.lifetime import die_with_parent

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
DOMAIN = "tempalias.test"

# Every abuse limit off (see tempalias/config.py SETTINGS); loopback is a trusted network anyway.
LIMITS_OFF = {
    "TEMPALIAS_CREATE_RATE_PER_IP": "0",
    "TEMPALIAS_CREATE_DAILY_PER_IP": "0",
    "TEMPALIAS_CREATE_DAILY_PER_TARGET": "0",
    "TEMPALIAS_SMTP_CONNECTIONS_PER_IP": "0",
    "TEMPALIAS_SMTP_MESSAGES_PER_IP": "0",
    "TEMPALIAS_SMTP_CONCURRENT_PER_IP": "0",
    "TEMPALIAS_ALIAS_MESSAGE_RATE": "0",
    "TEMPALIAS_RBL_ZONES": "",
}
SMTP_MAX_CONNECTIONS = 50_000


class StackError(Exception):
    """A part of the stack did not come up."""


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Child:
    """One child process with its output in a log file; it reports readiness through a file."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None,
                 ready_file: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.env = env
        self.ready_file = ready_file
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = READY_TIMEOUT) -> dict:
        """Start it; wait for its ready file (if any) and return what it says."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ready_file is not None and self.ready_file.exists():
            self.ready_file.unlink()
        with open(self.log_path, "ab") as log:
            # SIGTERM when we die, even by SIGKILL: no child outlives the stack that started it.
            self.process = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            preexec_fn=die_with_parent)
        if self.ready_file is None:
            return {}

        def ready() -> bool:
            if self.process.poll() is not None:
                raise StackError(f"{self.name} exited with {self.process.returncode}:\n"
                                 + self.log_text()[-4000:])
            return self.ready_file.exists()

        try:
            wait_until(ready, timeout, f"{self.name} to be ready")
        except BaseException:
            self.stop()
            raise
        return json.loads(self.ready_file.read_text())

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
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
        return process.returncode


def python_child(name: str, module_args: list[str], workdir: Path, env: dict[str, str] | None = None,
                 ready_file: Path | None = None) -> Child:
    return Child(name, [sys.executable, "-m", *module_args], workdir, env, ready_file)


class SinkProcess:
    """loadtest/sink.py as a child: its port, and its message count once stopped."""

    def __init__(self, workdir: Path) -> None:
        self.ready_file = workdir / "sink.ready"
        self.status_file = workdir / "sink.status"
        self.child = python_child("sink", ["loadtest.sink", "--ready-file", str(self.ready_file),
                                           "--status-file", str(self.status_file)],
                                  workdir, env={**os.environ, "PYTHONPATH": _project_path()},
                                  ready_file=self.ready_file)
        self.port = 0

    def start(self) -> "SinkProcess":
        self.port = self.child.start()["port"]
        return self

    def stop(self) -> dict:
        """Stop it; return ``{"messages", "connections"}`` it counted."""
        self.child.stop()
        if not self.status_file.exists():
            raise StackError("the SMTP sink exited without writing its counts:\n"
                             + self.child.log_text()[-2000:])
        return json.loads(self.status_file.read_text())


def _project_path() -> str:
    """The checkout's root, so that ``-m loadtest.sink`` and ``-m tempalias`` import from it."""
    return str(Path(__file__).resolve().parent.parent)


def tempalias_env(data_dir: Path, smarthost: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The service's environment: loopback on free ports, embedded Redis, every limit off."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TEMPALIAS_")}
    env.update({
        "PYTHONPATH": _project_path(),
        "TEMPALIAS_HTTP_LISTEN": "127.0.0.1:0",
        "TEMPALIAS_SMTP_LISTEN": "127.0.0.1:0",
        "TEMPALIAS_DATA_DIR": str(data_dir),  # TEMPALIAS_REDIS_URL unset: embedded Redis there
        "TEMPALIAS_DOMAINS": DOMAIN,
        "TEMPALIAS_SMARTHOST": smarthost,
        "TEMPALIAS_SRS_SECRET": "loadtest-srs-secret",
        "TEMPALIAS_SMTP_MAX_CONNECTIONS": str(SMTP_MAX_CONNECTIONS),
        **LIMITS_OFF,
    })
    env.update(extra or {})
    return env


class Stack:
    """Sink (ours, unless ``smarthost`` names another) + tempalias with ``workers`` processes."""

    def __init__(self, workdir: Path | None = None, workers: int = 1, smarthost: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self._own_dir = tempfile.TemporaryDirectory(prefix="tempalias-stack-") if workdir is None else None
        self.workdir = Path(self._own_dir.name) if self._own_dir else Path(workdir)
        self.workers = workers
        self.external_smarthost = smarthost
        self.extra_env = env or {}
        self.sink: SinkProcess | None = None
        self.service: Child | None = None
        self.ports: dict[str, int] = {}
        self.sink_counts: dict | None = None

    def start(self) -> "Stack":
        try:
            smarthost = self.external_smarthost
            if smarthost is None:
                self.sink = SinkProcess(self.workdir).start()
                smarthost = f"127.0.0.1:{self.sink.port}"
            ready_file = self.workdir / "tempalias.ready"
            self.service = python_child(
                "tempalias", ["tempalias", "serve", "--workers", str(self.workers),
                              "--ready-file", str(ready_file)],
                self.workdir, tempalias_env(self.workdir / "data", smarthost, self.extra_env),
                ready_file)
            self.ports = self.service.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp"]

    @property
    def service_pid(self) -> int:
        return self.ports["pid"]

    def stop(self) -> None:
        """Stop tempalias first (it drains into the sink), then the sink; remove our directory."""
        try:
            if self.service is not None:
                self.service.stop()
        finally:
            if self.sink is not None:
                sink, self.sink = self.sink, None
                self.sink_counts = sink.stop()

    def cleanup(self) -> None:
        if self._own_dir is not None:
            self._own_dir.cleanup()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a throwaway tempalias stack until Ctrl-C.")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with Stack(workers=args.workers) as stack:
        print(f"http: {stack.http_url}\nsmtp: 127.0.0.1:{stack.smtp_port}\n"
              f"logs: {stack.workdir}\nevery abuse limit is off. Ctrl-C stops it all.", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


def interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every ``finally`` stops what it started."""
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


if __name__ == "__main__":
    interrupt_on_sigterm()
    raise SystemExit(main())
