"""The benchmark's SMTP reference: the least a gevent relay can do per message.

No Redis, no alias, no checks, no log: it answers every command with 250, reads the message to its
final dot and hands it to the smarthost with MAIL, RCPT and DATA one at a time (what the reference
figures of issue 7 call "a minimal gevent SMTP relay"), either on a kept smarthost connection or
on a new one per message. ``--workers N`` forks N processes sharing the port through SO_REUSEPORT,
as ``tempalias serve --workers`` does. What tempalias costs on top of this is the price of its
rules; what this costs is the floor for any relay written on gevent on this machine.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402

from gevent.pool import Pool  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from loadtest.forked import block_stop_signals, run_forked  # noqa: E402

TIMEOUT = 30.0
KEPT = 16  # idle smarthost connections per process, as tempalias keeps


def read_reply(reader) -> bytes:
    """The last line of one (possibly multi-line) reply."""
    while True:
        line = reader.readline(4096)
        if not line:
            raise ConnectionError("the smarthost closed the connection")
        if line[3:4] != b"-":
            return line


class MiniRelay(StreamServer):
    def __init__(self, listener, smarthost: tuple[str, int], keep: bool) -> None:
        super().__init__(listener, spawn=Pool(10000))
        self.smarthost = smarthost
        self.keep = keep
        self.idle: list = []

    def _upstream(self):
        if self.keep and self.idle:
            return self.idle.pop()
        sock = socket.create_connection(self.smarthost, timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        read_reply(reader)
        sock.sendall(b"EHLO minirelay\r\n")
        read_reply(reader)
        return sock, reader

    def _forward(self, mail: bytes, rcpt: bytes, message: bytes) -> bytes:
        sock, reader = self._upstream()
        try:
            for command in (mail, rcpt, b"DATA\r\n"):
                sock.sendall(command)
                read_reply(reader)
            sock.sendall(message)
            verdict = read_reply(reader)
        except BaseException:
            reader.close()
            sock.close()
            raise
        if self.keep and len(self.idle) < KEPT:
            self.idle.append((sock, reader))
        else:
            sock.sendall(b"QUIT\r\n")
            reader.close()
            sock.close()
        return verdict[:3] + b" relayed\r\n"

    def handle(self, sock, address) -> None:
        sock.settimeout(TIMEOUT)
        reader = sock.makefile("rb")
        try:
            self._converse(sock, reader)
        except OSError:
            pass
        finally:
            reader.close()  # the server closes the socket itself

    def _converse(self, sock, reader) -> None:
        sock.sendall(b"220 minirelay ESMTP\r\n")
        mail = rcpt = b""
        while True:
            line = reader.readline(1024)
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"MAIL":
                mail = line
            elif verb == b"RCPT":
                rcpt = line
            elif verb == b"DATA":
                sock.sendall(b"354 go ahead\r\n")
                lines = []
                while True:
                    text = reader.readline(1024)
                    if not text:
                        return
                    lines.append(text)
                    if text == b".\r\n":
                        break
                sock.sendall(self._forward(mail, rcpt, b"".join(lines)))
                continue
            elif verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                return
            sock.sendall(b"250 OK\r\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smarthost", required=True, help="HOST:PORT")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep smarthost connections")
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    host, _, port = args.smarthost.rpartition(":")
    return run_forked(args.workers, args.ready_file, "smtp",
                      lambda listener: MiniRelay(listener, (host, int(port)), args.keep)
                      .serve_forever())


if __name__ == "__main__":
    block_stop_signals()
    raise SystemExit(main())
