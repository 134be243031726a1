"""Line-oriented I/O on one client socket: bounded lines, batched replies, STARTTLS.

Our own buffer rather than ``socket.makefile``: we must know exactly which bytes arrived before a
STARTTLS (they are discarded, RFC 3207 section 4.2, against command injection), and a line over
its limit is skipped to its end without ever being held whole in memory.

Replies are queued and sent when the server next has to wait for input (RFC 2920: a pipelining
client gets its replies in one segment), or when ``flush`` is called.
"""

from __future__ import annotations

import socket
import ssl
import time

from tempalias.netio import send_all

RECV_SIZE = 65536


class ClientGone(Exception):
    """The client closed the connection or it broke."""


class LineTooLong(Exception):
    """A line was longer than its limit; the whole line has been read and thrown away."""


class Connection:
    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.sock.settimeout(idle_timeout)
        self._buffer = bytearray()
        self._start = 0  # bytes before this offset are consumed
        self._pending: list[bytes] = []
        self.tls = False

    # --- output

    def queue(self, data: bytes) -> None:
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            try:
                send_all(self.sock, data)
            except socket.timeout:
                raise
            except OSError as exc:
                raise ClientGone(str(exc)) from None

    # --- input

    def has_buffered_input(self) -> bool:
        return len(self._buffer) > self._start

    def read_line(self, limit: int, deadline: float | None = None) -> bytes:
        """One line including its LF. Raises LineTooLong, ClientGone or socket.timeout.

        With a ``deadline`` (``time.monotonic()``), the whole line must have arrived by then, however
        slowly it trickles in; without one, each wait for input is bounded by the idle timeout.
        """
        discarding = False
        scan_from = self._start
        while True:
            buffer = self._buffer
            end = buffer.find(b"\n", scan_from)
            if end >= 0:
                end += 1
                too_long = discarding or end - self._start > limit
                line = b"" if too_long else bytes(buffer[self._start:end])
                self._consume(end)
                if too_long:
                    raise LineTooLong()
                return line
            if len(buffer) - self._start > limit:
                discarding = True  # drop what we have, keep looking for the line's end
                self._consume(len(buffer))
            scanned = len(buffer) - self._start
            self._fill(deadline)
            scan_from = self._start + scanned

    def read_message_block(self, limit: int) -> tuple[bytes, bool]:
        """The complete lines of a message that have arrived, as sent (still dot-stuffed), and
        whether the line "." that ends the message came with them (it is consumed, not returned).

        Lines are handed over in blocks, not one by one: a 2 KiB message is some 30 lines, and
        taking them one at a time cost more CPU than everything else a message needs. Waits for
        input only when no complete line is buffered; a line longer than ``limit`` that has not
        ended yet is read to its end and thrown away (LineTooLong).
        """
        while True:
            buffer, start = self._buffer, self._start
            if buffer.startswith(b".\r\n", start):
                self._consume(start + 3)
                return b"", True
            end = buffer.find(b"\r\n.\r\n", start)
            if end >= 0:
                block = bytes(buffer[start:end + 2])
                self._consume(end + 5)
                return block, True
            last = buffer.rfind(b"\n", start)
            if last >= 0:
                block = bytes(buffer[start:last + 1])
                self._consume(last + 1)
                return block, False
            if len(buffer) - start > limit:
                self.read_line(limit)  # drops the line to its end; raises LineTooLong
            self._fill()

    def _consume(self, upto: int) -> None:
        self._start = upto
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        elif self._start > RECV_SIZE:
            del self._buffer[:self._start]
            self._start = 0

    def _fill(self, deadline: float | None = None) -> None:
        self.flush()
        if deadline is None:
            self.sock.settimeout(self.idle_timeout)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline passed")
            self.sock.settimeout(left)
        try:
            data = self.sock.recv(RECV_SIZE)
        except socket.timeout:
            raise
        except OSError as exc:
            raise ClientGone(str(exc)) from None
        if not data:
            raise ClientGone("connection closed by the client")
        self._buffer += data

    # --- TLS

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Upgrade in place. Plaintext the client sent after STARTTLS is thrown away."""
        self.flush()
        self._buffer.clear()
        self._start = 0
        try:
            self.sock = context.wrap_socket(self.sock, server_side=True)
        except socket.timeout:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise ClientGone(f"TLS handshake failed: {exc}") from None
        self.tls = True

    def close(self) -> None:
        try:
            self.flush()
        except (ClientGone, OSError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
