"""What the proxy hands a message to: the smarthost (``relay.py``) or a Maildir (``maildir.py``).

Both offer the same small interface, so the forwarding policy does not know which one it has.
A transaction is opened with the first recipient that resolved, takes more recipients one by one
(each with its own verdict), streams the message in chunks and then either the delivery
``finish``es it (the message is safely with the next hop) or it is ``abort``ed (nothing was
delivered).
"""

from __future__ import annotations

from typing import Protocol

from tempalias.smtp.replies import Reply


class DeliveryError(Exception):
    """The next hop did not take the message or recipient; ``reply`` is what the client gets."""

    def __init__(self, reply: Reply, detail: str = "", next_hop_code: int | None = None) -> None:
        super().__init__(detail or reply.text)
        self.reply = reply
        self.detail = detail
        self.next_hop_code = next_hop_code  # the next hop's own reply code, when it gave one


class Transaction(Protocol):
    def add_recipient(self, address: str) -> Reply | None:
        """None when accepted; otherwise the reply to give for this recipient."""

    def start_data(self, header: bytes) -> None:
        """Begin the message with ``header`` (our Received: line); raises DeliveryError."""

    def write(self, data: bytes) -> None:
        """Whole lines, each with its CRLF, still dot-stuffed as the client sent them."""

    def abort(self) -> None:
        """Drop the message; idempotent, never raises."""


class Delivery(Protocol):
    description: str  # for the start-up log line
    local: bool  # True: mail stays on this machine (a Maildir), so postmaster can be kept here

    def open(self, sender: str, recipient: str, smtputf8: bool, eight_bit: bool,
             size: int | None) -> tuple[Transaction, Reply | None]:
        """Start a transaction for ``sender`` (already SRS-rewritten) with its first recipient;
        returns it with that recipient's verdict (None: accepted). Raises DeliveryError."""

    def finish(self, transaction: Transaction) -> str:
        """End the message; returns the next hop's queue id. Raises DeliveryError."""

    def close(self) -> None:
        """Release what is kept between transactions (idle smarthost connections)."""


def dot_stuff(lines: bytes) -> bytes:
    """RFC 5321 4.5.2: a line that starts with a dot gets one more. ``lines`` starts at a line's
    start, so every line start follows a LF once one is put in front."""
    return (b"\n" + lines).replace(b"\n.", b"\n..")[1:]


def dot_unstuff(lines: bytes) -> bytes:
    """The inverse of ``dot_stuff``: the lines as the client meant them."""
    return (b"\n" + lines).replace(b"\n.", b"\n")[1:]
