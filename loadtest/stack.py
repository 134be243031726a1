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
import signal
import tempfile
from pathlib import Path

from harness.dns_server import TestDnsServer
from harness.processes import PROJECT_ROOT, ChildFailed, ServiceProcess, python_child

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


class SinkProcess:
    """The harness's SMTP peer as a counting sink in a process of its own (so that it does not
    share a GIL with Locust): its port, and once stopped, what it counted."""

    def __init__(self, workdir: Path) -> None:
        self.ready_file = workdir / "sink.ready"
        self.status_file = workdir / "sink.status"
        self.child = python_child("sink", ["harness.smtp_peer", "--ready-file", str(self.ready_file),
                                           "--status-file", str(self.status_file)],
                                  workdir, ready_file=self.ready_file)
        self.port = 0

    def start(self) -> "SinkProcess":
        self.port = self.child.start()["port"]
        return self

    def stop(self) -> dict:
        """Stop it; return ``{"messages", "connections"}`` it counted."""
        self.child.stop()
        if not self.status_file.exists():
            raise ChildFailed("the SMTP sink exited without writing its counts:\n"
                              + self.child.log_text()[-2000:])
        return json.loads(self.status_file.read_text())


def tempalias_env(data_dir: Path, smarthost: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The service's settings: embedded Redis in ``data_dir``, every limit off."""
    return {
        "PYTHONPATH": str(PROJECT_ROOT),  # the checkout's tempalias, whatever is installed
        "TEMPALIAS_DATA_DIR": str(data_dir),  # TEMPALIAS_REDIS_URL unset: embedded Redis there
        "TEMPALIAS_DOMAINS": DOMAIN,
        "TEMPALIAS_SMARTHOST": smarthost,
        "TEMPALIAS_SRS_SECRET": "loadtest-srs-secret",
        "TEMPALIAS_SMTP_MAX_CONNECTIONS": str(SMTP_MAX_CONNECTIONS),
        **LIMITS_OFF,
        **(extra or {}),
    }


class ThrowawayStack:
    """What every throwaway stack shares: its directory (a temporary one, removed afterwards,
    unless ``workdir`` is given), its smarthost (our counting sink unless ``smarthost`` names
    another) and its DNS server, and a ``with`` block that stops everything on every path.
    Subclasses start their services in ``_start`` (after ``_start_peers``) and stop them before
    ``_stop_peers``."""

    def __init__(self, workdir: Path | None, smarthost: str | None, env: dict[str, str] | None,
                 prefix: str) -> None:
        self._own_dir = tempfile.TemporaryDirectory(prefix=prefix) if workdir is None else None
        self.workdir = Path(self._own_dir.name) if self._own_dir else Path(workdir)
        self.external_smarthost = smarthost
        self.extra_env = env or {}
        self.sink: SinkProcess | None = None
        self.sink_counts: dict | None = None
        # Every DNS look-up (the checks of mail received, ARC) stays on loopback: a DNS server of
        # the stack's own, answering for no sender domain, as for mail from a domain that
        # publishes nothing.
        self.dns: TestDnsServer | None = None

    def start(self):
        """Start everything; what had started is stopped if anything fails."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def services(self) -> list[ServiceProcess]:
        """Every ``tempalias serve`` of the stack (the load test scrapes each one's /metrics)."""
        raise NotImplementedError

    def _service(self, workdir: Path, name: str, workers: int, smarthost: str,
                 env: dict[str, str]) -> ServiceProcess:
        """``tempalias serve`` in ``workdir``, as the stacks run it (``tempalias_env``), started."""
        return ServiceProcess(workdir, tempalias_env(workdir / "data", smarthost, env),
                              test_settings=False, serve_args=("--workers", str(workers)),
                              name=name).start()

    def _start_peers(self) -> str:
        """Start the sink (unless there is a smarthost) and the DNS server; the smarthost."""
        smarthost = self.external_smarthost
        if smarthost is None:
            self.sink = SinkProcess(self.workdir).start()
            smarthost = f"127.0.0.1:{self.sink.port}"
        self.dns = TestDnsServer().start()
        return smarthost

    def _stop_peers(self) -> None:
        """Stop the sink, keeping what it counted, and the DNS server."""
        try:
            if self.sink is not None:
                sink, self.sink = self.sink, None
                self.sink_counts = sink.stop()
        finally:
            if self.dns is not None:
                dns, self.dns = self.dns, None
                dns.stop()

    def cleanup(self) -> None:
        if self._own_dir is not None:
            self._own_dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


class Stack(ThrowawayStack):
    """Sink (ours, unless ``smarthost`` names another) + tempalias with ``workers`` processes."""

    def __init__(self, workdir: Path | None = None, workers: int = 1, smarthost: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, smarthost, env, "tempalias-stack-")
        self.workers = workers
        self.service: ServiceProcess | None = None

    def _start(self) -> None:
        smarthost = self._start_peers()
        self.service = self._service(self.workdir, "tempalias", self.workers, smarthost,
                                     {"TEMPALIAS_DNS_SERVERS": self.dns.address, **self.extra_env})

    @property
    def http_url(self) -> str:
        return self.service.http_url

    @property
    def smtp_port(self) -> int:
        return self.service.smtp_port

    @property
    def smtp_ports(self) -> list[int]:
        return [self.service.smtp_port]

    @property
    def services(self) -> list[ServiceProcess]:
        return [self.service]

    @property
    def service_pid(self) -> int:
        return self.service.ports["pid"]

    def stop(self) -> None:
        """Stop tempalias first (it drains into the sink), then the sink; remove our directory."""
        try:
            if self.service is not None:
                self.service.stop()
        finally:
            self._stop_peers()


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
