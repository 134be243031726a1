"""``tempalias serve --workers N``: several processes on one port, supervised and drained.

Which worker served a connection is seen from outside: the worker process that holds the server
side of it (psutil), while it is still open.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket

import psutil

from harness.processes import holder, wait_for
from harness.smtp_peer import RawClient


def worker_pids(parent: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:
            continue
        if int(fields[1]) == parent and b"tempalias" in command and fields[0] != "Z":
            children.add(int(entry))
    return children


def created_by(service, workers: set[int]) -> int | None:
    """Create an alias on a new connection; the worker that answered it 201."""
    connection = http.client.HTTPConnection("127.0.0.1", service.ports["http"], timeout=10)
    try:
        connection.request("POST", "/api/v1/aliases", json.dumps({"target": "w@example.org"}),
                           {"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 201
        return holder(workers, connection.sock.getsockname()[1])  # kept alive: still held
    finally:
        connection.close()


def every_worker_serves(service, workers: set[int], door: str = "smtp") -> None:
    """Connect until each worker answered one connection: a 220 greeting, or an alias made.

    A worker answers only once it serves, and it installs its SIGTERM handler before that."""
    served: set[int] = set()

    def one_more() -> bool:
        if door == "http":
            served.add(created_by(service, workers))
        else:
            with RawClient(service.smtp_port) as client:
                assert client.reply()[0] == 220
                served.add(holder(workers, client.local_port))
        return served >= workers

    wait_for(one_more, 20, f"each of the workers {sorted(workers)} to answer on {door}")


def two_workers(service) -> set[int]:
    return wait_for(lambda: (lambda w: w if len(w) == 2 else None)(worker_pids(service.pid)),
                    15, "two workers")


def test_workers_share_the_port_and_a_dead_one_is_replaced(service_factory):
    service = service_factory(env={"TEMPALIAS_WORKERS": "2"})
    workers = two_workers(service)
    every_worker_serves(service, workers, "http")

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)

    def replaced():
        now = worker_pids(service.pid)
        return now if len(now) == 2 and victim not in now else None

    every_worker_serves(service, wait_for(replaced, 15, "the dead worker to be replaced"), "http")


def test_the_log_says_why_a_worker_died(service_factory):
    service = service_factory(env={"TEMPALIAS_WORKERS": "2"})
    victim = min(two_workers(service))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in worker_pids(service.pid) and len(worker_pids(service.pid)) == 2,
             15, "the dead worker to be replaced")
    assert f"(pid {victim}) died (signal SIGKILL)" in service.log_text()


def test_a_worker_that_keeps_crashing_is_restarted_ever_more_slowly(service_factory, tmp_path):
    # Every worker dies as it starts: its SRS secret is a directory. The parent restarts each
    # slot after 0.2 s, then 0.4, 0.8, 1.6, 3.2 (capped at 5 s), so that a crash loop does not
    # spin. Each slot starts at most k times before the sum of its first k delays has passed, so
    # with 2 slots the 11th start of all comes at least 0.2+0.4+0.8+1.6+3.2 s after the first.
    (tmp_path / "data" / "srs_secret").mkdir(parents=True)
    service = service_factory(env={"TEMPALIAS_WORKERS": "2"}, workdir=tmp_path)
    parent = psutil.Process(service.pid)
    starts: dict[int, float] = {}

    def note_starts() -> bool:
        for child in parent.children():  # a dead worker stays a zombie until the parent reaps it
            try:
                starts.setdefault(child.pid, child.create_time())
            except psutil.NoSuchProcess:
                pass
        return len(starts) >= 11

    wait_for(note_starts, 60, "eleven starts of crashing workers", interval=0.01)
    assert sorted(starts.values())[10] - parent.create_time() >= 0.2 + 0.4 + 0.8 + 1.6 + 3.2
    assert service.stop() == 0  # it still stops cleanly


def test_sigterm_drains_every_worker_and_exits_zero(service_factory):
    service = service_factory(env={"TEMPALIAS_WORKERS": "3"})
    parent = service.pid
    workers = wait_for(lambda: (lambda w: w if len(w) == 3 else None)(worker_pids(parent)),
                       15, "three workers")
    # a worker installs its signal handlers once it serves; before that SIGTERM just ends it
    every_worker_serves(service, workers)
    assert service.stop(signal.SIGTERM) == 0
    assert worker_pids(parent) == set()
    # The parent exits 0 even after killing a worker that did not drain in time: only the log
    # tells a drained worker from a killed one.
    assert service.log_text().count("received SIGTERM: draining for up to") == 3
    assert "did not drain in time" not in service.log_text()


def test_status_signal_reaches_the_workers_and_a_second_term_is_harmless(service_factory):
    service = service_factory(env={"TEMPALIAS_WORKERS": "2"})
    every_worker_serves(service, two_workers(service))
    os.kill(service.pid, signal.SIGUSR1)
    # The status line is what SIGUSR1 is for: the log is its only interface.
    wait_for(lambda: service.log_text().count("status: smtp_sessions=") == 2, 15,
             "both workers to log their status")
    os.kill(service.pid, signal.SIGTERM)
    os.kill(service.pid, signal.SIGTERM)
    assert service.stop() == 0


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_leave_when_their_parent_is_killed(service_factory):
    # The OOM killer or a supervisor's last resort: the parent gets no chance to stop its workers,
    # which must not go on serving its ports with nobody to stop them.
    service = service_factory(env={"TEMPALIAS_WORKERS": "2"})
    parent = service.pid
    workers = two_workers(service)
    every_worker_serves(service, workers)
    os.kill(parent, signal.SIGKILL)
    wait_for(lambda: not any(running(pid) for pid in workers), 15, "the workers to leave")
    with socket.socket() as probe:
        probe.settimeout(5)
        assert probe.connect_ex(("127.0.0.1", service.smtp_port)) != 0
