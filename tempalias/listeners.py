"""Listening sockets built by hand, because gevent's servers cannot set these options themselves.

TCP_NODELAY matters: pywsgi writes headers and body in two sends, and without it every
keep-alive response waits ~40 ms for Nagle and delayed ACK (docs/performance-notes.md). Accepted
sockets inherit it on Linux.

An IPv6 listener also takes IPv4 (IPV6_V6ONLY off), whatever the host's default
(net.ipv6.bindv6only), so that ``[::]:25`` means every address, as ``0.0.0.0`` does for IPv4 alone.
IPv4 clients then arrive as ``::ffff:a.b.c.d``; ``abuse.parse_ip`` turns those back.
"""

from __future__ import annotations

import socket

from tempalias.config import Listen

BACKLOG = 1024


def make_listener(listen: Listen, reuse_port: bool = False) -> socket.socket:
    infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bound_port(sock: socket.socket) -> int:
    return sock.getsockname()[1]
