"""``tempalias serve --workers N``: several processes on one port, supervised and drained."""

from __future__ import annotations

import os
import signal
import socket

import requests

from harness.processes import wait_for


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


def test_workers_share_the_port_and_a_dead_one_is_replaced(service_factory):
    service = service_factory(env={"TEMPALIAS_WORKERS": "2"})
    workers = wait_for(lambda: (lambda w: w if len(w) == 2 else None)(worker_pids(service.pid)),
                       15, "two workers")
    for _ in range(20):
        answer = requests.post(f"{service.http_url}/api/v1/aliases", timeout=10,
                               json={"target": "w@example.org"})
        assert answer.status_code == 201

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)

    def replaced():
        now = worker_pids(service.pid)
        return now if len(now) == 2 and victim not in now else None

    wait_for(replaced, 15, "the dead worker to be replaced")
    wait_for(lambda: requests.get(f"{service.http_url}/healthz", timeout=10).status_code == 200,
             15, "the service to answer after the restart")
    assert "died (signal SIGKILL)" in service.log_text()


def test_sigterm_drains_every_worker_and_exits_zero(service_factory):
    service = service_factory(env={"TEMPALIAS_WORKERS": "3"})
    parent = service.pid
    wait_for(lambda: len(worker_pids(parent)) == 3, 15, "three workers")
    # a worker installs its signal handlers once it serves; before that SIGTERM just ends it
    wait_for(lambda: service.log_text().count("smtp listening") == 3, 15, "three serving workers")
    assert requests.get(f"{service.http_url}/healthz", timeout=10).status_code == 200
    assert service.stop(signal.SIGTERM) == 0
    assert worker_pids(parent) == set()
    assert service.log_text().count("received SIGTERM: draining for up to") == 3


def test_status_signal_reaches_the_workers_and_a_second_term_is_harmless(service_factory):
    service = service_factory(env={"TEMPALIAS_WORKERS": "2"})
    wait_for(lambda: service.log_text().count("smtp listening") == 2, 15, "two serving workers")
    os.kill(service.pid, signal.SIGUSR1)
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
    workers = wait_for(lambda: (lambda w: w if len(w) == 2 else None)(worker_pids(parent)),
                       15, "two workers")
    wait_for(lambda: service.log_text().count("smtp listening") == 2, 15, "two serving workers")
    os.kill(parent, signal.SIGKILL)
    wait_for(lambda: not any(running(pid) for pid in workers), 15, "the workers to leave")
    with socket.socket() as probe:
        probe.settimeout(5)
        assert probe.connect_ex(("127.0.0.1", service.smtp_port)) != 0
