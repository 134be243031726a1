"""The SRS return path end to end, tried as an attacker would: a real tempalias child, a real sink
as smarthost. A return address carries delivery reports from the null sender and nothing else; the
original sender gets a report that tempalias wrote, in which nothing names the alias's target.
"""

from __future__ import annotations

import email
import email.policy
import secrets
import smtplib
import time

import pytest

from harness.processes import wait_for
from test_smtp_forwarding import DAY_MS, alias_address, send, status_of, uses_left
from tempalias.smtp import replies
from tempalias.store import DomainStore, hash_token

TARGET = "owner@target.example"
TARGET_DOMAIN = "target.example"
MAX_BAD_RECIPIENTS = 3
MAX_REPORTS = 3


@pytest.fixture(scope="module")
def bounce_service(service_factory, smtp_sink_server):
    return service_factory(env={
        "TEMPALIAS_SMARTHOST": smtp_sink_server.address,
        "TEMPALIAS_SRS_SECRET": "test-srs-secret",
        "TEMPALIAS_SMTP_MAX_BAD_RECIPIENTS": str(MAX_BAD_RECIPIENTS),
        "TEMPALIAS_SMTP_BAD_RECIPIENT_DELAY": "0.05",
        "TEMPALIAS_SRS_MAX_REPORTS": str(MAX_REPORTS),
    })


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


def downstream_bounce(return_address: str, action: str = "failed", status: str = "5.2.2",
                      report_type: str = "delivery-status") -> bytes:
    """A bounce as Postfix writes it: every part of it names the target."""
    return crlf(f"""
From: MAILER-DAEMON@mx.{TARGET_DOMAIN} (Mail Delivery System)
To: {return_address}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type={report_type};
\tboundary="4F1A2.1796000000/mx.{TARGET_DOMAIN}"

This is a MIME-encapsulated message.

--4F1A2.1796000000/mx.{TARGET_DOMAIN}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

<{TARGET}>: host mx.{TARGET_DOMAIN}[192.0.2.25] said: 552 5.2.2 <{TARGET}>:
    mailbox full (in reply to RCPT TO command)

--4F1A2.1796000000/mx.{TARGET_DOMAIN}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.{TARGET_DOMAIN}
X-Postfix-Queue-ID: 4F1A2
Arrival-Date: Thu,  3 Dec 2026 11:45:46 +0000 (UTC)

Final-Recipient: rfc822; {TARGET}
Original-Recipient: rfc822;{TARGET}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.{TARGET_DOMAIN}
Diagnostic-Code: smtp; 552 5.2.2 <{TARGET}>: mailbox full

--4F1A2.1796000000/mx.{TARGET_DOMAIN}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Received: from tempalias.test by mx.{TARGET_DOMAIN} for <{TARGET}>; Thu, 3 Dec 2026
From: Alice <alice@sender.example>
To: someone@tempalias.test

--4F1A2.1796000000/mx.{TARGET_DOMAIN}--
""")


def out_of_office(return_address: str) -> bytes:
    return crlf(f"""
From: Owner <{TARGET}>
To: {return_address}
Subject: Out of office
Auto-Submitted: auto-replied

I am away until Monday; write to {TARGET} again then.
""")


def learn_return_address(port: int, sink, store, sender: str = "alice@sender.example",
                         target: str = TARGET) -> tuple[object, str]:
    """What an attacker does: an alias of their own, a message with the victim as sender, and the
    return address read off what arrives."""
    new = store.create(target, DAY_MS, 5)
    result = send(port, sender, [alias_address(new)])
    assert result["data"][0] == 250
    return_address = sink.messages[-1].mail_from
    sink.reset()
    return new, return_address


def every_text(raw: bytes) -> str:
    """The message as a reader could see it: raw, and every MIME part decoded."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    texts = [raw.decode("utf-8", "replace")]
    for part in parsed.walk():
        payload = part.get_payload(decode=True)
        if payload:
            texts.append(payload.decode("utf-8", "replace"))
        texts += [str(value) for value in part.values()]
    return "\n".join(texts)


def test_delivery_report_reaches_the_original_sender_once_and_names_only_the_alias(
        bounce_service, smtp_sink, store):
    new, return_address = learn_return_address(bounce_service.smtp_port, smtp_sink, store)
    result = send(bounce_service.smtp_port, "", [return_address], downstream_bounce(return_address))
    assert result["data"][0] == 250
    [report] = smtp_sink.messages
    assert report.rcpt_tos == ["alice@sender.example"]
    assert report.mail_from == "<>"  # the sink.s way of writing the null sender
    seen = every_text(report.content)
    assert TARGET not in seen and TARGET_DOMAIN not in seen and "192.0.2.25" not in seen
    parsed = email.message_from_bytes(report.content, policy=email.policy.default)
    assert parsed["From"].addresses[0].addr_spec == "MAILER-DAEMON@tempalias.test"
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    [status] = [p for p in parsed.walk() if p.get_content_type() == "message/delivery-status"]
    fields = "\n".join(str(block) for block in status.get_payload())
    assert f"Final-Recipient: rfc822; {alias_address(new)}" in fields
    assert "Action: failed" in fields and "Status: 5.0.0" in fields
    assert uses_left(store, new.alias.id) == 4  # a report uses nothing


def test_a_report_about_an_alias_at_a_custom_domain_names_its_address(bounce_service,
                                                                      smtp_sink, store):
    domain = f"d{secrets.token_hex(4)}.example.org"
    domains = DomainStore(store.redis, runner=store.runner)
    now = int(time.time() * 1000)
    domains.register(domain, hash_token("owner"), now)
    domains.activate(domain, hash_token("owner"), "tempalias-verify=x", now)
    store.create(TARGET, DAY_MS, 5, domain=domain, custom=True, local_part="shop.news")
    assert send(bounce_service.smtp_port, "alice@sender.example",
                [f"shop.news@{domain}"])["data"][0] == 250
    return_address = smtp_sink.messages[-1].mail_from
    smtp_sink.reset()
    result = send(bounce_service.smtp_port, "", [return_address], downstream_bounce(return_address))
    assert result["data"][0] == 250
    [report] = smtp_sink.messages
    assert report.rcpt_tos == ["alice@sender.example"]
    assert f"Final-Recipient: rfc822; shop.news@{domain}" in report.content.decode()
    assert TARGET not in every_text(report.content)


def test_a_delay_report_is_a_delay_report(bounce_service, smtp_sink, store):
    _, return_address = learn_return_address(bounce_service.smtp_port, smtp_sink, store)
    result = send(bounce_service.smtp_port, "", [return_address],
                  downstream_bounce(return_address, action="delayed", status="4.4.1"))
    assert result["data"][0] == 250
    [report] = smtp_sink.messages
    text = report.content.decode()
    assert "Action: delayed" in text and "Status: 4.0.0" in text and TARGET not in text


@pytest.mark.parametrize("kind", ["phishing", "out-of-office", "read-receipt", "no-recipient"])
def test_learned_return_address_refuses_anything_but_a_report(kind, bounce_service, smtp_sink,
                                                              store):
    _, return_address = learn_return_address(bounce_service.smtp_port, smtp_sink, store,
                                             sender="victim@bank.example")
    body = {
        "phishing": crlf("From: Your Bank <security@bank.example>\nSubject: verify your account"
                         "\n\nhttps://bank.example.evil/login"),
        "out-of-office": out_of_office(return_address),
        "read-receipt": downstream_bounce(return_address, report_type="disposition-notification"),
        "no-recipient": downstream_bounce(return_address).replace(b"Action: failed\r\n", b""),
    }[kind]
    result = send(bounce_service.smtp_port, "", [return_address], body)
    assert result["rcpt"][0][0] == 250
    assert status_of(result["data"]) == "550 5.7.1"
    assert smtp_sink.messages == []


def test_return_address_refuses_a_sender(bounce_service, smtp_sink, store):
    _, return_address = learn_return_address(bounce_service.smtp_port, smtp_sink, store,
                                             sender="victim@bank.example")
    result = send(bounce_service.smtp_port, "security@bank.example", [return_address])
    assert status_of(result["rcpt"][0]) == "550 5.7.1"
    assert smtp_sink.connections == 0


def test_a_bounce_goes_alone(bounce_service, smtp_sink, store):
    other = store.create("someone@example.org", DAY_MS, 5)
    _, return_address = learn_return_address(bounce_service.smtp_port, smtp_sink, store)
    _, second = learn_return_address(bounce_service.smtp_port, smtp_sink, store,
                                     sender="bob@sender.example")
    result = send(bounce_service.smtp_port, "", [return_address, second, alias_address(other)],
                  downstream_bounce(return_address))
    assert [status_of(r) for r in result["rcpt"]] == ["250 2.1.5", "452 4.5.3", "452 4.5.3"]
    assert result["data"][0] == 250
    [report] = smtp_sink.messages
    assert report.rcpt_tos == ["alice@sender.example"]
    result = send(bounce_service.smtp_port, "", [alias_address(other), return_address])
    assert [status_of(r) for r in result["rcpt"]] == ["250 2.1.5", "452 4.5.3"]


def test_a_return_address_carries_a_handful_of_reports(bounce_service, smtp_sink, store):
    _, return_address = learn_return_address(bounce_service.smtp_port, smtp_sink, store)
    bounce = downstream_bounce(return_address)
    for _ in range(MAX_REPORTS):
        assert send(bounce_service.smtp_port, "", [return_address], bounce)["data"][0] == 250
    result = send(bounce_service.smtp_port, "", [return_address.upper()], bounce)
    assert status_of(result["data"]) == "550 5.7.1"
    assert result["data"][1].decode().endswith(replies.REPORTS_USED_UP.text)
    assert len(smtp_sink.messages) == MAX_REPORTS


def test_forged_or_altered_return_addresses_are_refused(bounce_service, smtp_sink, store):
    _, genuine = learn_return_address(bounce_service.smtp_port, smtp_sink, store)
    given = genuine.split("=")[1]
    forged = [
        genuine.replace(given, "a" * len(given)),
        genuine.replace("=sender.example=", "=victim.example="),
        "SRS0=AAAA=AA=victim.example=bob@tempalias.test",  # the old short shape
    ]
    for address in forged:
        result = send(bounce_service.smtp_port, "", [address])
        assert status_of(result["rcpt"][0]) == "550 5.1.1", address
    assert smtp_sink.connections == 0


def test_guessing_return_addresses_is_cut_off_after_a_handful(bounce_service, smtp_sink):
    with smtplib.SMTP("127.0.0.1", bounce_service.smtp_port, timeout=30) as client:
        client.ehlo("guesser.example")
        client.mail("")
        answers = []
        for guess in range(50):
            try:
                answers.append(client.rcpt(f"SRS0=aaaaa{guess:05d}=AA=zz=victim.example=bob"
                                           "@tempalias.test"))
            except smtplib.SMTPServerDisconnected:
                break
    codes = [code for code, _ in answers]
    assert codes[:2 * MAX_BAD_RECIPIENTS - 1] == [550] * (2 * MAX_BAD_RECIPIENTS - 1)
    assert status_of(answers[2 * MAX_BAD_RECIPIENTS - 1]) == "421 4.7.0"
    assert len(answers) == 2 * MAX_BAD_RECIPIENTS  # and then the connection was closed
    assert smtp_sink.connections == 0


def test_bad_recipient_budget_is_per_connection_and_spares_good_clients(bounce_service,
                                                                        smtp_sink, store):
    new = store.create(TARGET, DAY_MS, 5)
    with smtplib.SMTP("127.0.0.1", bounce_service.smtp_port, timeout=30) as client:
        client.ehlo("typo.example")
        client.mail("alice@sender.example")
        for typo in range(MAX_BAD_RECIPIENTS + 1):  # a few typos are delayed, not cut off
            assert client.rcpt(f"nosuch{typo}@tempalias.test")[0] == 550
        assert client.rcpt(alias_address(new))[0] == 250
        assert client.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250
    wait_for(lambda: len(smtp_sink.messages) == 1, 10, "the message at the sink")


def test_a_return_address_longer_than_64_octets_before_the_at_takes_its_report(
        bounce_service, smtp_sink, store):
    """RFC 5321 4.5.3.1: SRS addresses outgrow 64 octets; refusing them would lose bounces."""
    sender = "a.rather.long.sender.name@mail.some-long-company-name.example"
    _, return_address = learn_return_address(bounce_service.smtp_port, smtp_sink, store,
                                             sender=sender)
    assert len(return_address.rpartition("@")[0]) > 64
    result = send(bounce_service.smtp_port, "", [return_address], downstream_bounce(return_address))
    assert result["data"][0] == 250
    assert [m.rcpt_tos for m in smtp_sink.messages] == [[sender]]
