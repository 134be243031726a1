"""Socket writes without the tax of gevent's ``sendall``.

gevent's ``socket.sendall`` asks the kernel for SO_SNDBUF on every call: one extra system call per
SMTP reply, smarthost command, Redis command and HTTP response, a measurable share of each
(loadtest/bench/ with py-spy and strace). A small write nearly always goes out in one ``send``;
what does not is finished by ``sendall``, so the result and the errors are the same.
"""

from __future__ import annotations

import socket


def send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of ``data``; raises as ``sock.sendall`` does (OSError, socket.timeout)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])
