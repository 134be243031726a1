"""No leak: thousands of sessions, many cut off at random points, leave the process as it was.

Counted from outside the real process: its file descriptors through /proc (connections to Redis
are counted apart, since its client keeps a bounded pool of them), its open SMTP sessions as the
client connections it holds (psutil), and its live greenlets through the status line it logs on
SIGUSR1: that line is the only interface that counts greenlets.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from harness.processes import wait_for
from tempalias.smtp.relay import IDLE_CONNECTIONS
from tempalias.store import keys
from test_smtp_forwarding import DAY_MS, alias_address, uses_left

SESSIONS = 2000
WORKERS = 8
_STATUS = re.compile(r"status: smtp_sessions=(\d+) greenlets=(\d+)")


def open_sessions(service) -> int:
    """The SMTP client connections the service still holds."""
    return sum(1 for c in psutil.Process(service.pid).net_connections(kind="tcp")
               if c.raddr and c.laddr.port == service.smtp_port)


def greenlets(service) -> int:
    """Live greenlets, from a fresh SIGUSR1 status line."""
    before = len(_STATUS.findall(service.log_text()))
    os.kill(service.pid, signal.SIGUSR1)
    found = wait_for(lambda: (lines := _STATUS.findall(service.log_text())) and
                     len(lines) > before and lines[-1], 10, "the status line")
    return int(found[1])


def descriptors(service, pooled_ports: tuple[int, ...]) -> tuple[int, int]:
    """(descriptors that are not pooled connections, pooled connections) of the service.

    Connections to Redis and idle ones to the smarthost are kept in bounded pools on purpose;
    they are counted apart, and checked against their bounds.
    """
    process = psutil.Process(service.pid)
    pooled = sum(1 for c in process.net_connections(kind="inet")
                 if c.raddr and c.raddr.port in pooled_ports)
    return len(os.listdir(f"/proc/{service.pid}/fd")) - pooled, pooled


def one_session(port: int, recipient: str, stop_at: str, rng: random.Random) -> None:
    steps = [b"EHLO leak.example\r\n", b"MAIL FROM:<a@sender.example>\r\n",
             f"RCPT TO:<{recipient}>\r\n".encode(), b"DATA\r\n"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        if stop_at == "connect":
            return _hang_up(sock, rng)
        reader.readline()
        names = ["ehlo", "mail", "rcpt", "data"]
        for name, step in zip(names, steps):
            sock.sendall(step)
            while (line := reader.readline())[3:4] == b"-":
                pass
            if stop_at == name:
                return _hang_up(sock, rng)
        sock.sendall(b"Subject: leak\r\n\r\n" + b"line of the message\r\n" * rng.randint(1, 50))
        if stop_at == "mid-data":
            return _hang_up(sock, rng)
        sock.sendall(b".\r\nQUIT\r\n")
        assert reader.readline()[:3] == b"250"
        reader.readline()


def _hang_up(sock: socket.socket, rng: random.Random) -> None:
    if rng.random() < 0.5:  # half of them with a reset instead of a clean close
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.slow
def test_no_descriptor_or_greenlet_leaks(service_factory, smtp_sink, store, redis_server):
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink.address})
    new = store.create("owner@target.example", DAY_MS, 100_000)
    recipient = alias_address(new)
    redis_port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    rng = random.Random(20261130)
    plan = [rng.choice(["connect", "ehlo", "mail", "rcpt", "data", "mid-data", "complete"])
            for _ in range(SESSIONS)]
    seeds = [rng.random() for _ in range(SESSIONS)]

    def run(indexes) -> None:
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda i: one_session(service.smtp_port, recipient, plan[i],
                                                random.Random(seeds[i])), indexes))

    run(range(50))  # warm up: Redis pool, imports, first-use allocations
    wait_for(lambda: open_sessions(service) == 0, 20, "the warm-up sessions to end")
    pooled_ports = (redis_port, smtp_sink.port)
    fds_before, _ = descriptors(service, pooled_ports)
    greenlets_before = greenlets(service)

    run(range(SESSIONS))

    wait_for(lambda: open_sessions(service) == 0, 30, "all sessions to end")
    wait_for(lambda: greenlets(service) == greenlets_before, 30,
             f"{greenlets_before} greenlets to remain")
    fds_after, pooled = descriptors(service, pooled_ports)
    assert fds_after == fds_before
    assert pooled <= 64 + IDLE_CONNECTIONS  # the store's pool and the idle smarthost connections
    delivered = plan.count("complete") + plan[:50].count("complete")
    assert len(smtp_sink.messages) == delivered
    assert uses_left(store, new.alias.id) == 100_000 - delivered
    assert store.redis.zcard(keys.held_key(new.alias.id)) == 0  # no reservation left behind
    assert "Traceback" not in service.log_text()
    service.stop()
