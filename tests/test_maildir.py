"""Without a smarthost, deliveries become files in a Maildir under the data directory."""

from __future__ import annotations

import smtplib

from harness.processes import holder, wait_for
from harness.smtp_peer import RawClient
from test_smtp_forwarding import DAY_MS, alias_address, uses_left


def test_without_smarthost_mail_lands_in_the_maildir(service_factory, store):
    service = service_factory()
    maildir = service.workdir / "data" / "Maildir"
    new = store.create("owner@target.example", DAY_MS, 2)
    body = b"Subject: local\r\n\r\n.leading dot\r\nbye\r\n"
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.sendmail("a@sender.example", [alias_address(new)], body)
    [delivered] = list((maildir / "new").iterdir())
    content = delivered.read_bytes()
    assert content.startswith(b"Return-Path: <SRS0=")
    assert b"Delivered-To: owner@target.example\r\n" in content
    assert content.endswith(b"\r\n" + body)  # dot-stuffing undone, nothing else changed
    assert oct(delivered.stat().st_mode & 0o777) == oct(0o600)
    assert uses_left(store, new.alias.id) == 1

    # A message the client abandons leaves nothing behind in tmp/ or new/.
    with RawClient(service.smtp_port) as raw:
        raw.reply()
        raw.send(b"EHLO c.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<"
                 + alias_address(new).encode() + b">\r\nDATA\r\n")
        for _ in range(4):
            raw.reply()
        raw.send(b"Subject: abandoned\r\n\r\npartial\r\n")
        client_port = raw.local_port
    # The session ends (its message given up) before its connection is closed.
    wait_for(lambda: holder([service.pid], client_port) is None, 10,
             "tempalias to close the abandoned session")
    assert list((maildir / "tmp").iterdir()) == []
    assert len(list((maildir / "new").iterdir())) == 1
    assert uses_left(store, new.alias.id) == 1
    assert (service.workdir / "data" / "srs_secret").exists()
    assert (service.workdir / "data" / "srs_secret").read_text().strip() not in service.log_text()
    service.stop()


def test_postmaster_is_kept_in_the_maildir_when_nothing_is_configured(service_factory):
    service = service_factory()
    maildir = service.workdir / "data" / "Maildir"
    # what the operator reads at the start: where mail goes, and no warning about postmaster
    assert f"mail goes to Maildir {maildir} (no smarthost configured)" in service.log_text()
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.sendmail("", ["Postmaster"], b"Subject: your server\r\n\r\nhello\r\n")
    [delivered] = list((maildir / "new").iterdir())
    assert b"Delivered-To: postmaster@tempalias.test\r\n" in delivered.read_bytes()
    assert "TEMPALIAS_POSTMASTER is unset" not in service.log_text()
    service.stop()
