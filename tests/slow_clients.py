"""A slowloris from one loopback address, as its own process: the attack of issue 11, point 2.

Holds COUNT connections to HOST:PORT from SOURCE; each sends half a request head and nothing more,
and is opened again as soon as the server answers or cuts it off. It runs apart from the test so
that its churn does not compete with the test's own measurements for the GIL. Every
``STATUS_EVERY`` seconds it writes ``{"connects": N}`` (connections made so far, reconnections
included) to STATUS_FILE, atomically, for the test to wait on. It runs until it is terminated.

    python tests/slow_clients.py HOST PORT SOURCE COUNT STATUS_FILE
"""

from __future__ import annotations

import errno
import json
import os
import resource
import selectors
import socket
import sys
import time

HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: slow.example\r\nX-Never-Ending: "
STATUS_EVERY = 0.1
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux; port at connect


def raise_open_files_limit(needed: int) -> None:
    """Lift the soft RLIMIT_NOFILE towards ``needed`` (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class SlowClients:
    def __init__(self, address: tuple[str, int], source: str, count: int) -> None:
        self.address = address
        self.source = source
        self.count = count
        self.selector = selectors.DefaultSelector()
        self.connects = 0

    def open_one(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((self.source, 0))
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(code, os.strerror(code))
        self.selector.register(sock, selectors.EVENT_WRITE, "connecting")

    def again(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        sock.close()
        self.open_one()

    def step(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            sock = key.fileobj
            if key.data == "connecting":
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.again(sock)
                    continue
                try:
                    sock.send(HALF_A_HEAD)
                except OSError:
                    self.again(sock)
                    continue
                self.connects += 1
                self.selector.modify(sock, selectors.EVENT_READ, "holding")
            else:
                self.again(sock)  # an answer (429, 408) or the close: cut off, so come back


def write_status(path: str, status: dict) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(status, handle)
    os.replace(temporary, path)


def main(host: str, port: str, source: str, count: str, status_file: str) -> None:
    clients = SlowClients((host, int(port)), source, int(count))
    raise_open_files_limit(clients.count + 100)
    for _ in range(clients.count):
        clients.open_one()
    next_status = 0.0
    while True:
        clients.step(STATUS_EVERY)
        if time.monotonic() >= next_status:
            write_status(status_file, {"connects": clients.connects})
            next_status = time.monotonic() + STATUS_EVERY


if __name__ == "__main__":
    main(*sys.argv[1:])
