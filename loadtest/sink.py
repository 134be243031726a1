"""A counting SMTP sink, the smarthost of the throwaway load-test stack.

Run as its own process (``python -m loadtest.sink --ready-file F --status-file S``) so that it does
not share a GIL with Locust. It accepts every message, keeps nothing but counts, writes its port to
the ready file once listening, and on SIGTERM or SIGINT writes ``{"messages", "connections"}`` to
the status file and exits: the load test compares that count with the messages Locust saw
accepted, so a lost or duplicated message shows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket

import gevent
import gevent.event
from gevent.server import StreamServer

IDLE_TIMEOUT = 60.0


class CountingSink(StreamServer):
    def __init__(self, listener) -> None:
        super().__init__(listener)
        self.messages = 0
        self.connections = 0

    def handle(self, sock, address) -> None:
        self.connections += 1
        sock.settimeout(IDLE_TIMEOUT)
        reader = sock.makefile("rb")
        try:
            sock.sendall(b"220 sink.loadtest ESMTP counting sink\r\n")
            self._converse(sock, reader)
        except OSError:
            pass
        finally:
            reader.close()
            sock.close()

    def _converse(self, sock, reader) -> None:
        while True:
            line = reader.readline(1024)
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                sock.sendall(b"250-sink.loadtest\r\n250-8BITMIME\r\n250-SIZE 1073741824\r\n"
                             b"250-SMTPUTF8\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                sock.sendall(b"354 go ahead\r\n")
                while True:
                    body_line = reader.readline(65536)
                    if not body_line:
                        return  # a hang-up mid-message: not counted, as a real MTA would not
                    if body_line == b".\r\n":
                        break
                self.messages += 1
                sock.sendall(b"250 2.0.0 Ok: queued as SINK%d\r\n" % self.messages)
            elif verb == b"QUIT":
                sock.sendall(b"221 2.0.0 bye\r\n")
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP: all fine
                sock.sendall(b"250 2.0.0 OK\r\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-file", required=True, help="write {pid, port} here once listening")
    parser.add_argument("--status-file", required=True, help="write the counts here on exit")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sink = CountingSink(("127.0.0.1", args.port))
    sink.backlog = 1024
    sink.start()  # a gevent socket: accepting must not block the hub
    sink.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted ones inherit it
    stopping = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopping.set)
    temporary = args.ready_file + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "port": sink.server_port}, handle)
    os.replace(temporary, args.ready_file)
    stopping.wait()
    sink.close()
    sink.stop(timeout=2)
    with open(args.status_file, "w", encoding="utf-8") as handle:
        json.dump({"messages": sink.messages, "connections": sink.connections}, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
