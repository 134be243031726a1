"""Delivery reports on the SRS return path: recognise one, and write our own in its place.

A bounce that comes back through one of our SRS addresses was written by the MTA that failed to
deliver to the alias's target: its recipient fields, diagnostic text, human-readable part and
returned headers all name the target, and an out-of-office reply is signed with the target's own
address. None of it may reach the original sender. So the return path carries delivery reports
only (RFC 3464 ``message/delivery-status`` inside RFC 6522 ``multipart/report``, or their RFC 6533
``global`` forms), and we read from one no more than what happened (the Action) and the class of
the Status (2, 4 or 5). The report the original sender gets is written here from those two facts,
the alias address and our own names, and not one byte of the downstream report is copied into it.
"""

from __future__ import annotations

import email
import email.policy
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime

REPORT_TYPES = frozenset(("delivery-status", "global-delivery-status"))
STATUS_TYPES = frozenset(("message/delivery-status", "message/global-delivery-status"))
_STATUS = re.compile(r"^\s*([245])\.\d{1,3}\.\d{1,3}\b")
# What happened, worst first: a report about several recipients is about its worst outcome.
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_REASONS = {
    "failed": ("Undelivered Mail Returned to Sender",
               "could not be delivered: the mailbox behind the alias refused it"),
    "delayed": ("Delayed Mail (still being retried)",
                "has not been delivered yet: the mail system behind the alias is still trying"),
    "delivered": ("Successful Mail Delivery Report",
                  "was delivered to the mailbox behind the alias"),
}
_REPLY_REASONS = {  # the same, for a reply an alias's owner sent through it
    "failed": "could not be delivered: its recipient's mail system refused it",
    "delayed": "has not been delivered yet: its recipient's mail system is still trying",
    "delivered": "was delivered",
}
_OUTCOMES = {"relayed": "delivered", "expanded": "delivered"}


class NotAReport(ValueError):
    """The message is not a delivery report; the text says what it is instead."""


@dataclass(frozen=True)
class Outcome:
    """All we take from a downstream delivery report."""

    action: str  # "failed", "delayed" or "delivered"
    status_class: int  # 5, 4 or 2


def read_report(message: bytes) -> Outcome:
    """The outcome a delivery report tells of; raises NotAReport for anything else."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    if parsed.get_content_type() != "multipart/report":
        raise NotAReport(f"a {parsed.get_content_type()} message, not a multipart/report")
    report_type = str(parsed.get_param("report-type", "") or "").lower()
    if report_type not in REPORT_TYPES:
        raise NotAReport(f"a report of type {report_type or 'none'!r}, not a delivery report")
    statuses = [part for part in parsed.get_payload() if not isinstance(part, str)
                and part.get_content_type() in STATUS_TYPES] if parsed.is_multipart() else []
    if not statuses:
        raise NotAReport("a multipart/report without a delivery-status part")
    found: list[Outcome] = []
    for block in _status_blocks(statuses[0])[1:]:  # the first block is about the message
        action = (block.get("Action") or "").strip().lower()
        status = _STATUS.match(block.get("Status") or "")
        if action in _ACTIONS and status:
            found.append(Outcome(_OUTCOMES.get(action, action), int(status.group(1))))
    if not found:
        raise NotAReport("a delivery-status part with no recipient's Action and Status")
    return min(found, key=lambda outcome: _ACTIONS.index(outcome.action))


def _status_blocks(part) -> list:
    """The header blocks of a delivery-status part. The parser splits ``message/delivery-status``
    into them; any other ``message/*`` (RFC 6533's global one) it reads as one message whose body
    is the other blocks, so that is put back together and split here."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return payload
    text = payload if isinstance(payload, str) else "".join(m.as_string() for m in payload)
    return [email.message_from_string(block)
            for block in re.split(r"\r?\n[ \t]*\r?\n", text.strip()) if block.strip()]


def write_report(outcome: Outcome, alias_address: str, recipient: str, reporting_host: str,
                 now: datetime | None = None, about_reply: bool = False) -> bytes:
    """Our own delivery report to ``recipient`` about the alias: CRLF lines, not dot-stuffed.
    ``about_reply``: the report goes to the alias's owner about a reply sent through it (whose
    recipient the owner knows; the bounce's own text is still not passed on)."""
    now = now or datetime.now(timezone.utc)
    subject, what = _REASONS[outcome.action]
    if about_reply:
        what = _REPLY_REASONS[outcome.action]
    boundary = f"report-{secrets.token_hex(12)}"
    status = f"{outcome.status_class}.0.0"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_host}>",
        f"To: <{recipient}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{secrets.token_hex(12)}@{reporting_host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a delivery report in MIME format.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at {reporting_host}.",
        "",
        *((f"Your reply sent through the alias <{alias_address}> {what}.",
           "",
           "The report of the server that refused it is not passed on: it could name you.")
          if about_reply else
          (f"Your message to <{alias_address}> {what}.",
           "",
           "The address is a temporary alias; the mailbox behind it is not disclosed.")),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_host}",
        f"Arrival-Date: {format_datetime(now)}",
        "",
        f"Final-Recipient: rfc822; {alias_address}",
        f"Action: {outcome.action}",
        f"Status: {status}",
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")
