"""Mailbox syntax (tempalias/addresses.py): IDNA 2008 domains, and the one key of a mailbox's
spellings; then a target with such a domain, created through the API, receiving mail."""

from __future__ import annotations

import smtplib

import pytest
import requests

from harness.processes import wait_for
from tempalias.addresses import InvalidAddress, parse_address


@pytest.mark.parametrize("text, domain", [
    ("jörg@zielß.example", "xn--ziel-yna.example"),  # IDNA 2003 made it zielss.example
    ("a@ZIELß.Example", "xn--ziel-yna.example"),  # UTS 46 maps case
    ("a@ｅｘａｍｐｌｅ.com", "example.com"),  # and width
    ("a@bücher。example", "xn--bcher-kva.example"),  # and the ideographic full stop
    ("a@XN--BCHER-KVA.Example", "xn--bcher-kva.example"),  # an ASCII name is only lower-cased
    ("a@\u0644\u0627.example", "xn--mgb1d.example"),  # right-to-left on its own is fine
])
def test_domains_follow_idna_2008_with_uts_46(text, domain):
    assert parse_address(text).domain == domain


@pytest.mark.parametrize("text", [
    "a@i❤.example",  # a symbol: IDNA 2008 has none
    "a@ab\u0627.example",  # a left-to-right label with a right-to-left letter
    "a@a\u200db.example",  # a zero-width joiner out of context (IDNA 2003 dropped it)
    "a@ü-.example",  # a label ending in a hyphen
    "a@" + "ü" * 64 + ".example",  # a label longer than 63 octets once encoded
])
def test_names_idna_2008_refuses_are_invalid_and_say_so(text):
    with pytest.raises(InvalidAddress, match="IDNA 2008"):
        parse_address(text)


@pytest.mark.parametrize("text", ["a@\ud800.example", "\udfffa@example.com"])
def test_a_lone_surrogate_is_an_invalid_address_not_a_crash(text):
    with pytest.raises(InvalidAddress, match="surrogate"):
        parse_address(text)


def test_every_spelling_of_a_mailbox_has_one_canonical_form():
    spellings = ["victim@example.com", '"victim"@example.com', '"victim+x"@example.com',
                 "victim+a+b@example.com", "Victim@EXAMPLE.COM", "VICTIM@ｅｘａｍｐｌｅ.com",
                 '"vic\\tim"@example.com']
    assert {parse_address(text).canonical for text in spellings} == {"victim@example.com"}
    assert parse_address("Jörg+x@Zielß.example").canonical == "jörg@xn--ziel-yna.example"
    assert parse_address('"john doe"@example.com').canonical == "john doe@example.com"
    assert parse_address("+only@example.com").canonical == "+only@example.com"


def test_the_address_keeps_its_spelling_apart_from_the_domain():
    """Only the limit's key is canonical: mail goes to the mailbox as it was given."""
    assert str(parse_address('"Victim+x"@Zielß.example')) == '"Victim+x"@xn--ziel-yna.example'


def test_mail_to_an_alias_for_an_idn_target_reaches_that_domain(smtp_service, smtp_sink):
    answer = requests.post(f"{smtp_service.http_url}/api/v1/aliases", timeout=10,
                           json={"target": "joerg@zielß.example", "uses": 1})
    assert answer.status_code == 201, answer.text
    with smtplib.SMTP("127.0.0.1", smtp_service.smtp_port, timeout=30) as client:
        client.sendmail("alice@sender.example", [answer.json()["address"]],
                        b"Subject: hello\r\n\r\nHello.\r\n")
    wait_for(lambda: smtp_sink.messages, 10, "the message to reach the smarthost")
    assert [message.rcpt_tos for message in smtp_sink.messages] == [
        ["joerg@xn--ziel-yna.example"]]
