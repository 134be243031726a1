"""The SMTP line buffer (tempalias/smtp/connection.py) over a real socket pair.

A message reaches the proxy in whatever pieces TCP makes of it. Whatever the pieces, the blocks
``read_message_block`` hands on must add up to exactly the message as sent, end at its final dot,
and leave what the client sent after it (the next command) in the buffer.

The client's side writes its next piece only when the buffer's side has read everything sent so
far, so each read gets exactly one piece (or ``RECV_SIZE`` of it), as a slow network would deliver
them: what the buffer does is then the one thing it must do with those reads.
"""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from tempalias.smtp.connection import RECV_SIZE, Connection, LineTooLong

LIMIT = 1001  # TEXT_LINE_LIMIT + 1, as the protocol reads messages

_line_text = st.binary(max_size=120).map(
    lambda data: data.replace(b"\r", b"").replace(b"\n", b""))
_lines = st.lists(st.one_of(_line_text, st.sampled_from([b"", b".", b"..", b".x", b"..."])),
                  max_size=40)


def stuffed(lines: list[bytes]) -> bytes:
    """The message as a client sends it (RFC 5321 4.5.2), without the final dot."""
    return b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines)


class PacedClient:
    """Our side of a socket pair, whose peer writes its next piece only once we have read all it
    sent; at the end it shuts its side, so a reader that wants more gets EOF, not a hang."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.pieces = list(pieces)
        self.sent = self.received = 0

    def recv(self, size: int) -> bytes:
        if self.received == self.sent:
            if self.pieces:
                piece = self.pieces.pop(0)
                self.theirs.sendall(piece)
                self.sent += len(piece)
            else:
                self.theirs.shutdown(socket.SHUT_WR)
        data = self.ours.recv(size)
        self.received += len(data)
        return data

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()

    def __getattr__(self, name: str):
        return getattr(self.ours, name)


def deliver(pieces: list[bytes]) -> Connection:
    return Connection(PacedClient(pieces), idle_timeout=10)


def read_ends(pieces: list[bytes]) -> list[int]:
    """Where in the stream each read of the buffer ends, pieces being delivered as above."""
    ends, at = [], 0
    for piece in pieces:
        for start in range(0, len(piece), RECV_SIZE):
            at += min(RECV_SIZE, len(piece) - start)
            ends.append(at)
    return ends


def read_message(connection: Connection) -> tuple[bytes, int]:
    """The blocks joined, and how many over-long lines were reported."""
    blocks, too_long = [], 0
    while True:
        try:
            block, ended = connection.read_message_block(LIMIT)
        except LineTooLong:
            too_long += 1
            continue
        blocks.append(block)
        if ended:
            return b"".join(blocks), too_long


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        pieces.append(data[at:at + size])
        at += size
    if at < len(data):
        pieces.append(data[at:])
    return pieces


@settings(max_examples=150, deadline=None)
@given(lines=_lines, sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=60))
def test_blocks_add_up_to_the_message_whatever_the_pieces(lines, sizes):
    body = stuffed(lines)
    connection = deliver(cut(body + b".\r\nQUIT\r\n", sizes))
    try:
        assert read_message(connection) == (body, 0)
        assert connection.read_line(512) == b"QUIT\r\n"
    finally:
        connection.close()


@settings(max_examples=60, deadline=None)
@given(long_at=st.integers(min_value=0, max_value=3), length=st.integers(1001, 70000),
       sizes=st.lists(st.integers(min_value=1, max_value=9000), max_size=20))
def test_an_over_long_line_is_dropped_exactly_when_the_buffer_passed_the_limit_before_its_end(
        long_at, length, sizes):
    """A line still without its end when the buffer holds more than the limit of it is read to
    its end, thrown away and reported once; one whose end came in the same read is handed on
    whole, for the protocol to measure. Either way the lines after it arrive, and the next
    command stays in the buffer."""
    lines = [b"before", b"after", b".dot"]
    lines.insert(long_at, b"z" * length)
    body = stuffed(lines)
    stream = body + b".\r\nQUIT\r\n"
    pieces = cut(stream, sizes)
    start = len(stuffed(lines[:long_at]))
    line_end = start + length + 1  # where its LF is
    dropped = any(start + LIMIT < end <= line_end for end in read_ends(pieces))
    connection = deliver(pieces)
    try:
        if dropped:
            assert read_message(connection) == (stuffed(lines[:long_at] + lines[long_at + 1:]), 1)
        else:
            assert read_message(connection) == (body, 0)
        assert connection.read_line(512) == b"QUIT\r\n"
    finally:
        connection.close()
