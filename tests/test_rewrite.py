"""Reply rewriting (tempalias/smtp/rewrite.py): the forward points at reverse addresses, and the
owner's reply, as real clients write it (tests/data/replies), reaches the sender without the
owner's address or domain.

The corpus uses placeholders the SMTP tests can substitute: owner@owner.example (the owner),
r=abcdefghijklmnop=k3x9qa@tempalias.test (the reverse address), k3x9qa@tempalias.test (the alias),
alice@sender.example (the original sender). What the sender would see is read back with the
standard library's parser, not with the module's own decoding.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tempalias.smtp.rewrite import (DisclosesOwner, Senders, rewrite_forward, sanitise_reply,
                                    senders)

CORPUS = sorted((Path(__file__).parent / "data" / "replies").glob("*.eml"))
OWNER = "owner@owner.example"
OWNER_DOMAIN = "owner.example"
REVERSE = "r=abcdefghijklmnop=k3x9qa@tempalias.test"
ALIAS = "k3x9qa@tempalias.test"
SENDER = "alice@sender.example"
REMOVED = ("Received", "Return-Path", "DKIM-Signature", "ARC-Seal", "ARC-Message-Signature",
           "ARC-Authentication-Results", "Authentication-Results", "Received-SPF", "Sender",
           "Reply-To", "X-Originating-IP", "X-Mailer", "User-Agent", "Disposition-Notification-To",
           "Return-Receipt-To", "Cc", "Bcc", "Autocrypt", "Organization", "Delivered-To",
           "Resent-From")


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def sanitise(message: bytes, **changes) -> bytes:
    given = dict(alias_address=ALIAS, original_sender=SENDER, reverse_address=REVERSE,
                 owner_address=OWNER, message_id_domain="tempalias.test")
    return sanitise_reply(message, **{**given, **changes})


def parse(message: bytes):
    return email.message_from_bytes(message, policy=email.policy.default)


def is_attachment(part) -> bool:
    return (part.get_content_type() not in ("text/plain", "text/html")
            or part.get_filename() is not None or part.get_content_disposition() == "attachment")


def text_parts(message: bytes) -> list[str]:
    """Each text part as a reader sees it: decoded, and with HTML references and %-escapes read."""
    return [unquote(html.unescape(part.get_content())).replace("\r\n", "\n")
            for part in parse(message).walk()
            if not part.is_multipart() and not is_attachment(part)]


def leaves(message: bytes) -> list:
    return [part for part in parse(message).walk() if not part.is_multipart()]


def field_lines(message: bytes) -> list[bytes]:
    head = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return re.findall(rb"[^\r\n]+\r\n(?:[ \t][^\r\n]*\r\n)*", head)


@pytest.fixture(params=CORPUS, ids=[path.stem for path in CORPUS])
def reply(request) -> bytes:
    return request.param.read_bytes()


# --- the corpus --------------------------------------------------------------------------------

def test_the_corpus_is_what_clients_send(reply):
    assert b"\n" not in reply.replace(b"\r\n", b"")  # CRLF line ends only
    assert OWNER.encode() in reply or b"owner=40" in reply.lower()  # each reply names its owner
    assert not [p for p in parse(reply).walk() if p.defects]


def test_neither_the_owners_address_nor_domain_reaches_the_sender(reply):
    out = sanitise(reply)
    message = parse(out)
    for name, value in message.items():
        assert OWNER_DOMAIN not in str(value).lower(), name
    for text in text_parts(out):
        assert OWNER_DOMAIN not in text.lower()
    # nor anywhere in the bytes, boundaries, preambles and Content-IDs included (attachments
    # are base64 here, so what they hold is not in plain sight)
    assert OWNER_DOMAIN.encode() not in out.lower()
    assert b"owner%40" not in out.lower()


def test_the_alias_stands_where_the_owner_or_the_reverse_address_was_quoted(reply):
    def named(text: str, *addresses: str) -> int:
        return sum(text.lower().count(address) for address in addresses)
    before, after = text_parts(reply), text_parts(sanitise(reply))
    assert len(before) == len(after)
    for old, new in zip(before, after):
        assert named(new, ALIAS) >= named(old, OWNER, ALIAS)  # the reverse address ends in it
        assert REVERSE not in new.lower()


def test_the_reply_comes_from_the_alias_to_the_sender_and_nothing_else_tells_of_the_owner(reply):
    out = sanitise(reply)
    lines = field_lines(out)
    assert lines[:2] == [f"From: <{ALIAS}>\r\n".encode(), f"To: <{SENDER}>\r\n".encode()]
    message = parse(out)
    assert re.fullmatch(r"<[0-9a-f]{32}@tempalias\.test>", message["Message-ID"])
    assert message["Message-ID"] != parse(reply)["Message-ID"]
    assert len(message.get_all("From")) == 1 and len(message.get_all("To")) == 1
    for name in REMOVED:
        assert name not in message, name
    assert not [name for name in message.keys() if name.lower().startswith("x-")]


def test_the_reply_is_valid_mime_of_the_same_shape(reply):
    before, after = parse(reply), parse(sanitise(reply))
    assert [p.get_content_type() for p in after.walk()] == \
        [p.get_content_type() for p in before.walk()]
    assert not [p for p in after.walk() if p.defects]
    for old, new in zip(leaves(reply), leaves(sanitise(reply))):  # own encoding, own charset
        assert new.get("Content-Transfer-Encoding") == old.get("Content-Transfer-Encoding")
        assert new.get_content_charset() == old.get_content_charset()


def test_attachments_keep_their_bytes(reply):
    for old, new in zip(leaves(reply), leaves(sanitise(reply))):
        if is_attachment(old):
            assert new.get_payload(decode=False) == old.get_payload(decode=False)
            assert new.get_payload(decode=True) == old.get_payload(decode=True)


def test_quote_lines_and_links_name_the_alias():
    path = {p.stem: p for p in CORPUS}
    thunderbird = text_parts(sanitise(path["thunderbird-plain"].read_bytes()))
    assert f"On 3/4/24 18:40, Owner Name <{ALIAS}> wrote:" in thunderbird[0]
    assert "\nOwner Name\ntempalias.test | +1 555 0100" in thunderbird[0]  # the bare domain

    plain, page = text_parts(sanitise(path["gmail-alternative"].read_bytes()))
    assert f"write to me at\n{ALIAS} or just reply here" in plain
    assert f"(alice at sender.example) <\n{ALIAS}> wrote:" in plain
    assert f'<a href="mailto:{ALIAS}">{ALIAS}</a> or just reply here' in page
    assert f'&lt;<a href="mailto:{ALIAS}">{ALIAS}</a>&gt; wrote:' in html.escape(page, False) \
        or f'<<a href="mailto:{ALIAS}">{ALIAS}</a>> wrote:' in page

    plain, page = text_parts(sanitise(path["outlook-html-qp"].read_bytes()))
    assert f"From: Owner Name <{ALIAS}>\nSent: Monday, March 4, 2024 6:40 PM" in plain
    assert f"From: Alice Example (alice at sender.example) <{ALIAS}>" in plain
    assert "I\u2019ll bring cash" in plain  # Windows-1252 still read as such
    assert f"<b>From:</b> Owner Name <{ALIAS}><br>" in page
    assert f'<a href="mailto:{ALIAS}">{ALIAS}</a>' in page

    plain, page = text_parts(sanitise(path["apple-mail-base64"].read_bytes()))
    assert f"Owner Name\n{ALIAS}\n" in plain and "Saturday! \U0001F6B2" in plain
    assert f'<a href="mailto:{ALIAS}">{ALIAS}</a>' in page


def test_a_non_ascii_reply_keeps_its_charsets_and_its_subject_is_rewritten():
    original = (Path(__file__).parent / "data" / "replies" / "non-ascii-latin1.eml").read_bytes()
    out = sanitise(original)
    message = parse(out)
    assert message["Subject"] == f"Re: Fahrrad \u2013 Kontakt \u00fcber {ALIAS}"
    assert all(ord(c) < 128 for c in out.split(b"\r\n\r\n")[0].decode())  # headers: RFC 2047
    utf8, latin1 = text_parts(out)
    assert "Grüße aus Köln – Jörg" in utf8 and f"Jörg Müller <{ALIAS}>" in utf8
    assert f'Straße am Mühlbach 3, Klingel "Müller". Bei Fragen an mich: <{ALIAS}>' in latin1
    assert "Grüße aus Köln".encode() in out  # the 8bit part is still 8bit UTF-8
    assert b"Stra=DFe am M=FChlbach" in out  # and the other quoted-printable ISO-8859-1


def test_inline_images_follow_their_new_content_ids():
    original = (Path(__file__).parent / "data" / "replies" / "inline-image-cid.eml").read_bytes()
    out = sanitise(original)
    image = [p for p in parse(out).walk() if p.get_content_type() == "image/png"][0]
    new_id = image["Content-ID"].strip("<>")
    assert new_id.endswith("@tempalias.test")
    page = [p for p in parse(out).walk() if p.get_content_type() == "text/html"][0].get_content()
    assert page.count(f'"cid:{new_id}"') == 2  # as written and percent-encoded in upper case
    assert f"<cid:{new_id}>" in text_parts(out)[0]


def test_the_places_an_attacker_would_look_are_rewritten():
    original = (Path(__file__).parent / "data" / "replies" / "hostile-placements.eml").read_bytes()
    out = sanitise(original)
    message = parse(out)
    assert message["Subject"] == "Re: Bike (see www.tempalias.test)"  # base64 encoded-word
    assert message["References"] == "<CAM7x+ab12cd34@mail.sender.example>"
    assert message.get_boundary() != parse(original).get_boundary()
    plain, page = text_parts(out)
    assert f"Write to me: {ALIAS}, or the reply address {ALIAS}." in plain
    assert "colleague: bob@mail.tempalias.test" in plain
    assert f"mailto:{ALIAS}?subject=Bike" in plain
    assert f'href="MAILTO:{ALIAS}?subject=Bike"' in page
    assert f'<a href="mailto:{ALIAS}">{ALIAS}</a>' in page
    logo = [p for p in message.walk() if p.get_content_type() == "image/gif"][0]
    assert f'src="cid:{logo["Content-ID"].strip("<>")}"' in page
    card = [p for p in message.walk() if p.get_content_type() == "text/vcard"][0]
    assert card.get_filename() == f"{ALIAS}.vcf"  # the whole address, not only its domain
    assert card.get_param("name") == f"{ALIAS}.vcf"  # also where written as an encoded-word
    assert card.get_payload(decode=True) == [p for p in parse(original).walk()
                                             if p.get_content_type() == "text/vcard"][0] \
        .get_payload(decode=True)


def test_fields_and_parts_without_the_owner_keep_their_bytes():
    original = (Path(__file__).parent / "data" / "replies" / "gmail-alternative.eml").read_bytes()
    out = sanitise(original)
    for name in (b"Date:", b"Subject:", b"References:", b"In-Reply-To:", b"Content-Type:"):
        line = [f for f in field_lines(original) if f.startswith(name)][0]
        assert line in field_lines(out)
    quiet = crlf(f"From: Owner <{OWNER}>\nTo: <{REVERSE}>\nSubject: ok\n"
                 "Content-Type: text/plain; charset=utf-8\n"
                 "Content-Transfer-Encoding: quoted-printable\n\n"
                 "Fine by me =E2=80=93 see you.=\n\n")
    assert sanitise(quiet).split(b"\r\n\r\n", 1)[1] == quiet.split(b"\r\n\r\n", 1)[1]


def test_a_charset_that_cannot_hold_the_alias_becomes_utf8():
    message = crlf("From: owner@owner.example\nTo: r=abcdefghijklmnop=k3x9qa@tempalias.test\n"
                   "Content-Type: text/plain; charset=iso-8859-1\n"
                   "Content-Transfer-Encoding: quoted-printable\n\n"
                   "Gr=FC=DFe, owner@owner.example\n")
    out = sanitise(message, alias_address="k3x9qa@пример.test")
    part = parse(out)
    assert part.get_content_charset() == "utf-8"
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert text_parts(out) == ["Grüße, k3x9qa@пример.test\n"]
    seven_bit = message.replace(b"quoted-printable", b"7bit").replace(b"Gr=FC=DFe", b"Hi")
    part = parse(sanitise(seven_bit, alias_address="k3x9qa@пример.test"))
    assert part["Content-Transfer-Encoding"] == "quoted-printable"  # 7bit cannot carry it
    assert text_parts(sanitise(seven_bit, alias_address="k3x9qa@пример.test")) == [
        "Hi, k3x9qa@пример.test\n"]


def test_a_sender_at_the_owners_provider_keeps_their_own_address():
    message = crlf("From: owner@owner.example\nTo: r=abcdefghijklmnop=k3x9qa@tempalias.test\n"
                   "Content-Type: text/plain\n\n"
                   "On Monday Alice <alice@owner.example> wrote:\n> hi\n-- \nowner.example\n")
    out = sanitise(message, original_sender="alice@owner.example")
    assert parse(out)["To"] == "alice@owner.example"
    assert text_parts(out) == ["On Monday Alice <alice@owner.example> wrote:\n> hi\n-- \n"
                               "tempalias.test\n"]


@pytest.mark.parametrize("recipients, names", [
    ("To: r=abcdefghijklmnop=k3x9qa@tempalias.test\nCc: Bob <bob@friend.example>",
     "bob@friend.example"),
    (f"To: Bob <bob@friend.example>, {REVERSE}", "bob@friend.example"),
    (f"To: {REVERSE}\nBcc: carol@friend.example", "carol@friend.example"),
    ("To: k3x9qa@tempalias.test", "k3x9qa@tempalias.test"),
    ("To: R=ABCDEFGHIJKLMNOP=K3X9QA@TEMPALIAS.TEST\nCc: a@x.example, b@y.example, a@x.example",
     "a@x.example, b@y.example"),
])
def test_a_reply_to_anyone_else_is_refused_without_naming_the_owner(recipients, names):
    message = crlf(f"From: Owner <owner@owner.example>\n{recipients}\nSubject: Re: hi\n\nsure\n")
    with pytest.raises(DisclosesOwner) as refused:
        sanitise(message)
    assert refused.value.names == names
    assert names in str(refused.value) and "disclose your own address" in str(refused.value)
    assert OWNER_DOMAIN not in str(refused.value)


def test_a_reply_all_from_the_corpus_is_refused():
    original = (Path(__file__).parent / "data" / "replies" / "gmail-alternative.eml").read_bytes()
    with pytest.raises(DisclosesOwner):
        sanitise(original.replace(b"\r\nSubject:", b"\r\nCc: bob@friend.example\r\nSubject:", 1))


# --- the forward -------------------------------------------------------------------------------

FORWARD = crlf("""DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.example; s=s1;
 h=from:to:subject:date:reply-to; bh=Ym9keQ==; b=c2lnbmF0dXJl
Received: from mail.sender.example by mx.tempalias.test; Mon, 4 Mar 2024 10:15:01 +0100
From: Alice Example <alice@sender.example>
Reply-To: "Alice's Desk" <desk@sender.example>,
 help@sender.example
To: k3x9qa@tempalias.test
Subject: Bike for sale
Date: Mon, 4 Mar 2024 10:15:00 +0100
Message-ID: <CAM7x+ab12cd34@mail.sender.example>
Content-Type: text/plain; charset=utf-8

Hello,\u00a0the bike is still for sale.
""")
REVERSES = {"alice@sender.example": "r=aaaaaaaaaaaaaaaa=k3x9qa@tempalias.test",
            "desk@sender.example": "r=bbbbbbbbbbbbbbbb=k3x9qa@tempalias.test",
            "help@sender.example": "r=cccccccccccccccc=k3x9qa@tempalias.test"}


def test_senders_reads_from_and_reply_to_as_written():
    assert senders(FORWARD) == Senders("alice@sender.example", "Alice Example",
                                       ("desk@sender.example", "help@sender.example"))
    assert senders(crlf("From: =?utf-8?q?J=C3=B6rg?= <Joerg@Example.org>\n\nx")) == \
        Senders("Joerg@Example.org", "Jörg", ())
    assert senders(crlf("Subject: no sender\n\nx")) == Senders(None, "", ())


def test_the_forward_names_reverse_addresses_and_keeps_the_originals():
    out = rewrite_forward(FORWARD, REVERSES)
    message = parse(out)
    assert message["From"].addresses[0].addr_spec == REVERSES["alice@sender.example"]
    assert message["From"].addresses[0].display_name == "Alice Example (alice at sender.example)"
    assert [(a.display_name, a.addr_spec) for a in message["Reply-To"].addresses] == [
        ("Alice's Desk (desk at sender.example)", REVERSES["desk@sender.example"]),
        ("help at sender.example", REVERSES["help@sender.example"])]
    assert b"X-Original-From: Alice Example <alice@sender.example>\r\n" in out
    assert (b'X-Original-Reply-To: "Alice\'s Desk" <desk@sender.example>,\r\n'
            b" help@sender.example\r\n") in out
    kept = [f for f in field_lines(FORWARD) if not f.startswith((b"From:", b"Reply-To:"))]
    ours = (b"From:", b"Reply-To:", b"X-Original-")
    assert [f for f in field_lines(out) if not f.startswith(ours)] == kept  # DKIM-Signature too
    assert out.split(b"\r\n\r\n", 1)[1] == FORWARD.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("written, shown", [
    ("=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.org>", "Jörg Müller (joerg at example.org)"),
    ('"alice@sender.example" <alice@sender.example>', "alice at sender.example"),
    ("alice@sender.example", "alice at sender.example"),
    ('"Bank <security@bank.example>" <alice@sender.example>',
     "Bank <security at bank.example> (alice at sender.example)"),
])
def test_the_display_name_shows_the_sender_without_an_at_sign(written, shown):
    address = written.rsplit("<", 1)[-1].strip(">").lower()
    out = rewrite_forward(crlf(f"From: {written}\nTo: k3x9qa@tempalias.test\n\nhi\n"),
                          {address: REVERSES["alice@sender.example"]})
    head = out.split(b"\r\n\r\n")[0]
    assert head.isascii()  # non-ASCII names leave RFC 2047-encoded
    author = parse(out)["From"].addresses[0]
    assert author.display_name == shown and "@" not in author.display_name
    assert author.addr_spec == REVERSES["alice@sender.example"]


def test_the_forward_drops_original_fields_that_came_with_the_message():
    forged = FORWARD.replace(b"\r\nTo:", b"\r\nX-Original-From: ceo@bank.example\r\nTo:", 1)
    out = rewrite_forward(forged, REVERSES)
    assert parse(out).get_all("X-Original-From") == ["Alice Example <alice@sender.example>"]


def test_a_forward_without_a_sender_passes_unchanged_and_an_unmapped_one_is_an_error():
    anonymous = crlf("To: k3x9qa@tempalias.test\nSubject: hi\n\nhi\n")
    assert rewrite_forward(anonymous, {}) == anonymous
    with pytest.raises(KeyError):
        rewrite_forward(FORWARD, {"alice@sender.example": "r=x=k3x9qa@tempalias.test"})
