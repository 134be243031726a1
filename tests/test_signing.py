"""DKIM signatures and ARC seals, checked by dkimpy's verifier against keys published in real DNS
exactly as ``tempalias dns-records`` prints them."""

from __future__ import annotations

import hashlib

import dkim
import dkim.crypto
import dns.resolver
import pytest

from tempalias.config import Listen, SigningSettings
from tempalias.dkimkeys import load_or_create_keys
from tempalias.dnsrecords import expected, zone_text
from tempalias.resolver import make_resolver
from tempalias.signing import Signer, SigningError

DOMAIN = "sign.example"
AUTHSERV_ID = "mx.sign.example"
MESSAGE = (b"From: Alice Example <alice@sign.example>\r\n"
           b"To: bob@receiver.example\r\n"
           b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
           b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
           b"Message-ID: <one@sign.example>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"X-Mailer: not signed\r\n"
           b"\r\n"
           b"Hello Bob,\r\n\r\n  two spaces, a trailing one \r\nBye\r\n")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    settings = SigningSettings(dkim_key=None, dkim_selector="tempalias", dkim_ed25519=True,
                               arc=True)
    return load_or_create_keys(settings, str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def published(dns_zone, keys):
    """The domain's records in the test DNS server, as dns-records prints them; dkimpy's TXT
    look-up through our resolver."""
    for record in expected(DOMAIN, keys, AUTHSERV_ID):
        dns_zone.publish(zone_text(record))
    resolver = make_resolver((Listen("127.0.0.1", dns_zone.port),), 2.0)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", search=False)
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(answer.rrset[0].strings)

    return dnsfunc


def signatures(lines: bytes) -> list[dict[bytes, bytes]]:
    message = dkim.DKIM(lines + MESSAGE)
    return [dkim.util.parse_tag_value(value) for name, value in message.headers
            if name.lower() == b"dkim-signature"]


def test_a_signed_message_verifies_with_both_keys(keys, published):
    lines = Signer(keys, AUTHSERV_ID).sign(MESSAGE, DOMAIN)
    signed = lines + MESSAGE
    rsa_signature, ed25519_signature = signatures(lines)
    assert (rsa_signature[b"a"], rsa_signature[b"s"]) == (b"rsa-sha256", b"tempalias")
    assert (ed25519_signature[b"a"], ed25519_signature[b"s"]) == (b"ed25519-sha256",
                                                                   b"tempalias-ed")
    assert rsa_signature[b"d"] == b"sign.example"
    assert rsa_signature[b"c"] == b"relaxed/relaxed"
    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=published)
    assert dkim.DKIM(signed).verify(idx=1, dnsfunc=published)


def test_what_is_signed_and_from_is_oversigned(keys):
    signed_names = signatures(Signer(keys, AUTHSERV_ID).sign(MESSAGE, DOMAIN))[0][b"h"]
    assert [name.strip() for name in signed_names.split(b":")] == [
        b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
        b"from"]


def test_a_changed_body_or_an_added_from_fails(keys, published):
    lines = Signer(keys, AUTHSERV_ID).sign(MESSAGE, DOMAIN)
    assert not dkim.verify(lines + MESSAGE.replace(b"Bye", b"Bye!"), dnsfunc=published)
    second_from = lines + b"From: mallory@evil.example\r\n" + MESSAGE
    assert not dkim.verify(second_from, dnsfunc=published)
    # relaxed canonicalisation: re-folding and re-spacing on the way is no change
    refolded = MESSAGE.replace(b"Subject: ", b"Subject:\r\n    ")
    assert dkim.DKIM(lines + refolded).verify(dnsfunc=published)


def test_odd_messages_are_signed_unparsable_ones_refused(keys, published):
    signer = Signer(keys, AUTHSERV_ID)
    no_from = b"Subject: no sender\r\n\r\nbody\r\n"
    assert dkim.DKIM(signer.sign(no_from, DOMAIN) + no_from).verify(dnsfunc=published)
    no_body = b"From: alice@sign.example\r\n"
    assert dkim.DKIM(signer.sign(no_body, DOMAIN) + no_body).verify(dnsfunc=published)
    for garbage in (b"a header line without a colon\r\n\r\nbody\r\n", b"",
                    b" folded first line\r\nFrom: a@sign.example\r\n\r\n"):
        with pytest.raises(SigningError, match="cannot DKIM-sign"):
            signer.sign(garbage, DOMAIN)


def test_a_sealed_message_verifies_on_the_first_hop_and_the_next(keys, published):
    signer = Signer(keys, AUTHSERV_ID)
    received = (f"Authentication-Results: {AUTHSERV_ID}; spf=pass "
                "smtp.mailfrom=alice@sign.example; dkim=none; dmarc=none; arc=none\r\n"
                ).encode() + MESSAGE
    seal = signer.seal(received, DOMAIN)
    names = [line.split(b":")[0] for line in seal.split(b"\r\n") if line[:1].isalpha()]
    assert names == [b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results"]
    assert b"cv=none" in seal and b"i=1;" in seal and b"spf=pass" in seal
    sealed = seal + received
    result, _, reason = dkim.arc_verify(sealed, dnsfunc=published)
    assert result == dkim.CV_Pass, reason

    # the next forwarder, another host with the same key and its own authserv-id
    next_hop = b"Authentication-Results: mx2.sign.example; arc=pass; dkim=none\r\n" + sealed
    second = Signer(keys, "mx2.sign.example").seal(next_hop, DOMAIN)
    assert b"i=2;" in second and b"cv=pass" in second
    result, _, reason = dkim.arc_verify(second + next_hop, dnsfunc=published)
    assert result == dkim.CV_Pass, reason

    tampered = sealed.replace(b"Bye", b"Bye!")
    assert dkim.arc_verify(tampered, dnsfunc=published)[0] == dkim.CV_Fail


def test_no_seal_without_our_authentication_results(keys):
    foreign = b"Authentication-Results: someone.else; spf=pass\r\n" + MESSAGE
    assert Signer(keys, AUTHSERV_ID).seal(foreign, DOMAIN) == b""
    with pytest.raises(SigningError, match="cannot ARC-seal"):
        Signer(keys, AUTHSERV_ID).seal(b"no colon here\r\n\r\n", DOMAIN)


def test_openssl_signs_the_very_bytes_dkimpy_signs(keys, monkeypatch):
    """The replacement is in place, and a seal (fixed time: ``timestamp``) is byte-identical
    with dkimpy's own pure-Python RSA and with OpenSSL's."""
    assert dkim.RSASSA_PKCS1_v1_5_sign is not dkim.crypto.RSASSA_PKCS1_v1_5_sign
    parsed = dkim.crypto.parse_pem_private_key(keys.rsa_pem)
    for data in (b"", b"x", MESSAGE):
        assert dkim.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(data), parsed) == \
            bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(data), parsed))
    message = (f"Authentication-Results: {AUTHSERV_ID}; arc=none\r\n").encode() + MESSAGE

    def seal() -> list[bytes]:
        return dkim.arc_sign(message, b"tempalias", DOMAIN.encode(), keys.rsa_pem,
                             AUTHSERV_ID.encode(), timestamp=1700000000)

    by_openssl = seal()
    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", dkim.crypto.RSASSA_PKCS1_v1_5_sign)
    assert seal() == by_openssl
