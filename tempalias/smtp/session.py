"""The state of one SMTP connection (Session) and of one mail transaction in it (Envelope).

Kept apart from the protocol so that the forwarding policy sees plain data, as aiosmtpd does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tempalias.store import Reservation

if TYPE_CHECKING:
    from tempalias.abuse import SmtpClient


@dataclass
class Session:
    peer_ip: str
    peer_port: int
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    bad_commands: int = 0
    bad_recipients: int = 0  # RCPTs refused for good (5xx): guessing costs the guesser
    client: SmtpClient | None = None  # the abuse policy's handle of this connection


@dataclass
class Recipient:
    """One accepted RCPT: an alias with its held use, or a bounce going back through SRS."""

    label: str  # what the log may show: the alias id, or "srs" for a reversed bounce
    target: str
    reservation: Reservation | None = None


@dataclass
class Envelope:
    """What the client said in one transaction, and the recipients accepted; only the protocol
    writes it."""

    sender: str  # "" is the null sender
    smtputf8: bool = False
    eight_bit: bool = False
    declared_size: int | None = None
    recipients: list[Recipient] = field(default_factory=list)
    refused: int = 0  # RCPT commands answered with a refusal, whatever its reason
    accepted: int = 0  # RCPT commands answered 250, a repeated alias included
    hold_until: float | None = None  # time.monotonic() by which DATA must come: uses are held
    local_id: str | None = None  # our id for the message, in its Received: header and the log

    def has_alias(self, alias_id: str) -> bool:
        return any(r.reservation is not None and r.label == alias_id for r in self.recipients)

    def has_target(self, target: str) -> bool:
        """Targets are compared in any case: most providers fold it, and nobody wants a message
        twice because two aliases spell one mailbox differently."""
        folded = target.casefold()
        return any(r.target.casefold() == folded for r in self.recipients)
