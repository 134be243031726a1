"""Reading one message, from DATA's 354 to the final dot: the rules a message's lines must keep.

One reader object, so that the protocol only moves blocks on. Lines are handed over in blocks of
whole lines as they arrive, still dot-stuffed (RFC 5321 4.5.2: the next hop wants them so, and a
Maildir undoes it itself). A message that breaks a limit (a line over 1,000 octets with its CRLF,
RFC 5321 4.5.3.1.6, or the size) is still read to its end, so the connection stays usable, and
nothing more of it is handed over. A bare CR or LF ends the connection (as Postfix's
smtpd_forbid_bare_newline does): it is how a second message is smuggled past a next hop that
ends lines differently.
"""

from __future__ import annotations

from typing import Iterator

from tempalias.smtp import replies
from tempalias.smtp.connection import Connection, LineTooLong
from tempalias.smtp.replies import Reply

TEXT_LINE_LIMIT = 1000  # octets with CRLF, RFC 5321 section 4.5.3.1.6


class BareLineEnd(Exception):
    """A CR or LF that is not part of a CRLF: the connection must end."""


class MessageReader:
    def __init__(self, connection: Connection, max_size: int) -> None:
        self.connection = connection
        self.max_size = max_size
        self.size = 0  # octets of the message as the client meant it (dot-stuffing undone)
        self.problem: Reply | None = None  # why the message is refused, once it broke a limit

    def blocks(self) -> Iterator[bytes]:
        """The message's lines in blocks while it keeps the limits; raises BareLineEnd."""
        read_block = self.connection.read_message_block
        while True:
            try:
                block, ended = read_block(TEXT_LINE_LIMIT + 1)  # +1: the dot of dot-stuffing
            except LineTooLong:
                self.problem = self.problem or replies.TEXT_LINE_TOO_LONG
                continue
            if block and self._keeps_limits(block):
                yield block
            if ended:
                return

    def _keeps_limits(self, block: bytes) -> bool:
        line_ends = block.count(b"\r\n")
        if block.count(b"\n") != line_ends or block.count(b"\r") != line_ends:
            raise BareLineEnd()
        if self.problem is None and len(block) > TEXT_LINE_LIMIT and \
                max(map(len, block.split(b"\n"))) >= TEXT_LINE_LIMIT + 1:
            self.problem = replies.TEXT_LINE_TOO_LONG
        self.size += len(block) - block.count(b"\n.") - (block[:1] == b".")
        if self.problem is None and self.size > self.max_size:
            self.problem = replies.MESSAGE_TOO_BIG
        return self.problem is None
