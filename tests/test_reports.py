"""Delivery reports (tempalias/smtp/reports.py): what counts as one, and what we write instead."""

from __future__ import annotations

import email
import email.policy

import pytest

from tempalias.smtp.reports import NotAReport, Outcome, read_report, write_report
from test_smtp_bounces import crlf, downstream_bounce


def status_block(*recipients: tuple[str, str]) -> str:
    blocks = "\n".join(f"\nFinal-Recipient: rfc822; r{i}@target.example\nAction: {action}\n"
                       f"Status: {status}" for i, (action, status) in enumerate(recipients))
    return "Reporting-MTA: dns; mx.target.example\n" + blocks


def report(status_part: str, part_type: str = "message/delivery-status") -> bytes:
    return crlf(f"""
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

failed.

--b
Content-Type: {part_type}

{status_part}

--b--
""")


def test_a_postfix_bounce_is_a_failure_of_class_5():
    assert read_report(downstream_bounce("x@tempalias.test")) == Outcome("failed", 5)


def test_the_worst_outcome_of_several_recipients_counts():
    assert read_report(report(status_block(("delivered", "2.0.0"), ("delayed", "4.4.1"),
                                           ("failed", "5.1.1")))) == Outcome("failed", 5)
    assert read_report(report(status_block(("relayed", "2.0.0")))) == Outcome("delivered", 2)


def test_a_global_report_for_utf8_mail_counts_too():
    # RFC 6533: message/global-delivery-status stays text to the parser
    got = read_report(report(status_block(("delayed", "4.4.7")),
                             "message/global-delivery-status"))
    assert got == Outcome("delayed", 4)


@pytest.mark.parametrize("message", [
    crlf("Subject: hi\n\nplain text"),
    crlf('Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n--b--'),
    report(status_block(("failed", "5.1.1"))).replace(b"delivery-status;", b"disposition-notification;", 1),
    report(status_block(("failed", "5.1.1")), "text/plain"),
    report(status_block(("exploded", "5.1.1"))),
    report(status_block(("failed", "none"))),
    report("Reporting-MTA: dns; mx.target.example"),
])
def test_anything_else_is_not_a_report(message):
    with pytest.raises(NotAReport):
        read_report(message)


def test_our_report_names_the_alias_and_the_class_only():
    raw = write_report(Outcome("failed", 5), "k3x9qa@tempalias.test", "alice@sender.example",
                       "tempalias.test")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF lines only
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["To"].addresses[0].addr_spec == "alice@sender.example"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert read_report(raw) == Outcome("failed", 5)  # a valid report itself
    [status] = [p for p in parsed.walk() if p.get_content_type() == "message/delivery-status"]
    recipient = status.get_payload()[1]
    assert recipient["Final-Recipient"] == "rfc822; k3x9qa@tempalias.test"
    assert recipient["Status"] == "5.0.0"
