"""SPF, DKIM, ARC and DMARC of received mail, and the owner check of replies, against a real DNS
server on loopback (harness/dns_server.py), with keys made here and messages signed by dkimpy."""

from __future__ import annotations

import base64
import socket
import time

import authres
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tempalias.config import parse_listen
from tempalias.mailauth import (
    MAX_ARC_SETS,
    MAX_SIGNATURES,
    Authenticity,
    AuthResults,
    DkimResult,
    MailAuthenticator,
    organisational_domain,
)
from tempalias.resolver import make_resolver

AUTHSERV_ID = "mx.tempalias.test"
SENDER = "alice@sender.example"
OWNER = "owner@owner.example"
ALLOWED_IP = "192.0.2.10"  # in sender.example's SPF (through its include)
OTHER_IP = "198.51.100.7"  # in nobody's SPF
HELO = "mail.sender.example"
MESSAGE = (b"From: Alice <alice@sender.example>\r\n"
           b"To: k3x9qa@tempalias.test\r\n"
           b"Subject: Hello\r\n"
           b"Message-ID: <1@sender.example>\r\n"
           b"\r\n"
           b"Hello there.\r\n")


class Key:
    """An RSA key made for the test, its private half as dkimpy signs with it, its public half as
    DNS publishes it."""

    def __init__(self, bits: int = 1024) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.pem = key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        value = "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()
        self.txt = [value[i:i + 255] for i in range(0, len(value), 255)]


@pytest.fixture(scope="module")
def key() -> Key:
    return Key()


@pytest.fixture(scope="module")
def other_key() -> Key:
    return Key()


@pytest.fixture
def authenticator_for(dns_zone):
    def make(timeout: float = 2.0, address: str | None = None) -> MailAuthenticator:
        resolver = make_resolver((parse_listen(address or dns_zone.address),), timeout)
        return MailAuthenticator(resolver, AUTHSERV_ID, timeout)

    return make


@pytest.fixture
def authenticator(authenticator_for) -> MailAuthenticator:
    return authenticator_for()


@pytest.fixture
def silent_dns():
    """A DNS server that never answers: a UDP socket on loopback nobody reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def publish_spf(zone, domain: str = "sender.example", policy: str = "-all") -> None:
    zone.set_records(domain, "TXT", [f"v=spf1 include:_spf.{domain} {policy}"])
    zone.set_records(f"_spf.{domain}", "TXT", ["v=spf1 ip4:192.0.2.0/24 -all"])


def publish_key(zone, key: Key, domain: str, selector: str = "sel") -> None:
    zone.set_records(f"{selector}._domainkey.{domain}", "TXT", [key.txt])


def signed(message: bytes, key: Key, domain: str, selector: str = "sel") -> bytes:
    signature = dkim.sign(message, selector.encode(), domain.encode(), key.pem,
                          canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"to", b"subject", b"message-id"])
    return signature + message


def sealed(message: bytes, key: Key, domain: str, selector: str = "arc") -> bytes:
    """``message`` as a hop at ``domain`` passes it on: its Authentication-Results, then ARC."""
    chain = "; arc=pass" if b"\nARC-Seal:" in b"\n" + message else ""
    ours = f"Authentication-Results: {domain}; spf=pass smtp.mailfrom=sender.example{chain}\r\n"
    message = ours.encode() + message
    seal = dkim.arc_sign(message, selector.encode(), domain.encode(), key.pem, domain.encode())
    assert seal, "dkimpy did not seal"
    return b"".join(seal) + message


def from_(address: str, message: bytes = MESSAGE) -> bytes:
    return message.replace(b"Alice <alice@sender.example>", address.encode())


# SPF


@pytest.mark.parametrize("policy, ip, result", [
    ("-all", ALLOWED_IP, "pass"),
    ("-all", OTHER_IP, "fail"),
    ("~all", OTHER_IP, "softfail"),
    ("?all", OTHER_IP, "neutral"),
], ids=["pass-through-include", "fail", "softfail", "neutral"])
def test_spf_is_evaluated_for_the_peer_and_mail_from(dns_zone, authenticator, policy, ip, result):
    publish_spf(dns_zone, policy=policy)
    assert authenticator.check(MESSAGE, ip, HELO, SENDER).spf == result


def test_spf_without_a_record_is_none(authenticator):
    assert authenticator.check(MESSAGE, ALLOWED_IP, HELO, SENDER).spf == "none"


def test_a_broken_spf_record_is_a_permerror(dns_zone, authenticator):
    dns_zone.set_records("sender.example", "TXT", ["v=spf1 ip4:192.0.2.999 -all"])
    assert authenticator.check(MESSAGE, ALLOWED_IP, HELO, SENDER).spf == "permerror"


def test_spf_of_a_silent_name_is_a_temperror(dns_zone, authenticator_for):
    dns_zone.fail("sender.example", "timeout")
    assert authenticator_for(timeout=0.5).check(MESSAGE, ALLOWED_IP, HELO, SENDER).spf == \
        "temperror"


def test_spf_of_the_null_sender_is_the_helo_names(dns_zone, authenticator):
    publish_spf(dns_zone, domain=HELO)
    results = authenticator.check(MESSAGE, ALLOWED_IP, HELO, "")
    assert results.spf == "pass"
    assert results.spf_domain == HELO


# DKIM


def test_a_valid_signature_passes(dns_zone, authenticator, key):
    publish_key(dns_zone, key, "sender.example")
    results = authenticator.check(signed(MESSAGE, key, "sender.example"), OTHER_IP, HELO, SENDER)
    assert results.dkim == (DkimResult("sender.example", "sel", "pass"),)


def test_an_altered_body_fails(dns_zone, authenticator, key):
    publish_key(dns_zone, key, "sender.example")
    message = signed(MESSAGE, key, "sender.example").replace(b"Hello there.", b"Pay me.")
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).dkim == (
        DkimResult("sender.example", "sel", "fail"),)


def test_a_signature_by_another_key_fails(dns_zone, authenticator, key, other_key):
    publish_key(dns_zone, other_key, "sender.example")
    message = signed(MESSAGE, key, "sender.example")
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).dkim[0].result == "fail"


def test_a_signature_without_a_published_key_is_a_permerror(authenticator, key):
    message = signed(MESSAGE, key, "sender.example")
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).dkim[0].result == "permerror"


def test_a_key_that_dns_does_not_answer_for_is_a_temperror(dns_zone, authenticator_for, key):
    dns_zone.fail("sel._domainkey.sender.example", "timeout")
    message = signed(MESSAGE, key, "sender.example")
    results = authenticator_for(timeout=0.5).check(message, OTHER_IP, HELO, SENDER)
    assert results.dkim[0].result == "temperror"


def test_every_signature_has_its_result(dns_zone, authenticator, key, other_key):
    publish_key(dns_zone, key, "sender.example")
    publish_key(dns_zone, other_key, "esp.example", selector="s2")
    message = signed(signed(MESSAGE, other_key, "esp.example", selector="s2"), key,
                     "sender.example")
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).dkim == (
        DkimResult("sender.example", "sel", "pass"), DkimResult("esp.example", "s2", "pass"))


def test_signatures_beyond_the_limit_are_not_verified(dns_zone, authenticator, key):
    """Each signature costs a pass over the body: a message cannot make us verify more."""
    publish_key(dns_zone, key, "sender.example")
    message = MESSAGE
    for _ in range(MAX_SIGNATURES + 2):
        message = signed(message, key, "sender.example")
    results = authenticator.check(message, OTHER_IP, HELO, SENDER)
    assert [signature.result for signature in results.dkim] == \
        ["pass"] * MAX_SIGNATURES + ["policy"] * 2
    assert dns_zone.queries["sel._domainkey.sender.example"] == 1


def test_no_signature_is_no_dkim_result(authenticator):
    assert authenticator.check(MESSAGE, OTHER_IP, HELO, SENDER).dkim == ()


def test_a_key_is_fetched_once_while_its_ttl_lasts(dns_zone, authenticator, key):
    publish_key(dns_zone, key, "sender.example")
    publish_spf(dns_zone)
    message = signed(MESSAGE, key, "sender.example")
    for _ in range(3):
        assert authenticator.check(message, ALLOWED_IP, HELO, SENDER).dkim[0].result == "pass"
    assert dns_zone.queries["sel._domainkey.sender.example"] == 1
    assert dns_zone.queries["_spf.sender.example"] == 1


# DMARC


def test_dmarc_passes_with_dkim_of_a_subdomain_under_relaxed_alignment(dns_zone, authenticator,
                                                                        key):
    dns_zone.set_records("_dmarc.sender.example", "TXT", ["v=DMARC1; p=reject"])
    publish_key(dns_zone, key, "mail.sender.example")
    message = signed(MESSAGE, key, "mail.sender.example")
    results = authenticator.check(message, OTHER_IP, HELO, SENDER)
    assert (results.dmarc, results.dmarc_policy, results.from_domain) == \
        ("pass", "reject", "sender.example")


def test_dmarc_fails_for_a_subdomain_under_strict_alignment(dns_zone, authenticator, key):
    dns_zone.set_records("_dmarc.sender.example", "TXT", ["v=DMARC1; p=quarantine; adkim=s"])
    publish_key(dns_zone, key, "mail.sender.example")
    message = signed(MESSAGE, key, "mail.sender.example")
    results = authenticator.check(message, OTHER_IP, HELO, SENDER)
    assert (results.dkim[0].result, results.dmarc, results.dmarc_policy) == \
        ("pass", "fail", "quarantine")


def test_dmarc_passes_with_aligned_spf(dns_zone, authenticator):
    dns_zone.set_records("_dmarc.sender.example", "TXT", ["v=DMARC1; p=reject"])
    publish_spf(dns_zone, domain="bounces.sender.example")
    results = authenticator.check(MESSAGE, ALLOWED_IP, HELO, "bounce@bounces.sender.example")
    assert (results.spf, results.dmarc) == ("pass", "pass")


def test_dmarc_fails_when_only_another_domain_passes(dns_zone, authenticator, key):
    dns_zone.set_records("_dmarc.sender.example", "TXT", ["v=DMARC1; p=reject"])
    publish_spf(dns_zone, domain="esp.example")
    publish_key(dns_zone, key, "esp.example")
    message = signed(MESSAGE, key, "esp.example")
    results = authenticator.check(message, ALLOWED_IP, HELO, "bounce@esp.example")
    assert (results.spf, results.dkim[0].result) == ("pass", "pass")
    assert (results.dmarc, results.dmarc_policy) == ("fail", "reject")


def test_a_subdomain_without_a_record_takes_the_organisations_subdomain_policy(dns_zone,
                                                                               authenticator):
    dns_zone.set_records("_dmarc.sender.example", "TXT",
                         ["v=DMARC1; p=reject; sp=quarantine"])
    message = from_("bob@news.sender.example")
    results = authenticator.check(message, OTHER_IP, HELO, "bob@news.sender.example")
    assert (results.from_domain, results.dmarc, results.dmarc_policy) == \
        ("news.sender.example", "fail", "quarantine")


def test_dmarc_without_a_record_is_none(authenticator):
    results = authenticator.check(MESSAGE, OTHER_IP, HELO, SENDER)
    assert (results.dmarc, results.dmarc_policy) == ("none", None)


def test_dmarc_of_a_silent_record_is_a_temperror(dns_zone, authenticator_for):
    dns_zone.fail("_dmarc.sender.example", "timeout")
    assert authenticator_for(timeout=0.5).check(MESSAGE, OTHER_IP, HELO, SENDER).dmarc == \
        "temperror"


def test_the_organisational_domain_follows_the_public_suffix_list():
    assert organisational_domain("mail.sender.example") == "sender.example"
    assert organisational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organisational_domain("co.uk") == "co.uk"


# ARC


def test_a_chain_sealed_by_the_hop_before_passes(dns_zone, authenticator, key):
    publish_key(dns_zone, key, "hop.example", selector="arc")
    message = sealed(MESSAGE, key, "hop.example")
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).arc == "pass"


def test_a_chain_broken_after_the_seal_fails(dns_zone, authenticator, key):
    publish_key(dns_zone, key, "hop.example", selector="arc")
    message = sealed(MESSAGE, key, "hop.example").replace(b"Hello there.", b"Pay me.")
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).arc == "fail"


def test_a_chain_longer_than_the_limit_fails_unverified(dns_zone, authenticator, key):
    publish_key(dns_zone, key, "hop.example", selector="arc")
    message = MESSAGE
    for _ in range(MAX_ARC_SETS + 1):
        message = sealed(message, key, "hop.example")
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).arc == "fail"
    assert dns_zone.queries["arc._domainkey.hop.example"] == 0


def test_a_message_without_arc_has_none(authenticator):
    assert authenticator.check(MESSAGE, OTHER_IP, HELO, SENDER).arc == "none"


# the header


def test_the_header_names_every_result_and_no_address(dns_zone, authenticator, key):
    dns_zone.set_records("_dmarc.sender.example", "TXT", ["v=DMARC1; p=reject"])
    publish_spf(dns_zone)
    publish_key(dns_zone, key, "sender.example")
    header = authenticator.check(signed(MESSAGE, key, "sender.example"), ALLOWED_IP, HELO,
                                 SENDER).header()
    assert header.endswith(b"\r\n") and b"@" not in header
    assert all(len(line) < 78 for line in header.split(b"\r\n"))
    parsed = authres.AuthenticationResultsHeader.parse(header.decode().replace("\r\n", ""))
    assert parsed.authserv_id == AUTHSERV_ID
    assert [str(result) for result in parsed.results] == [
        "spf=pass smtp.mailfrom=sender.example",
        "dkim=pass header.d=sender.example header.s=sel",
        "dmarc=pass header.from=sender.example policy.dmarc=reject",
        "arc=none",
    ]


def test_the_header_without_signatures_or_from_says_none():
    results = AuthResults("none", (), "none", None, "none", None, AUTHSERV_ID, "sender.example")
    assert results.header() == (b"Authentication-Results: mx.tempalias.test;\r\n"
                                b"\tspf=none smtp.mailfrom=sender.example;\r\n"
                                b"\tdkim=none;\r\n\tdmarc=none;\r\n\tarc=none\r\n")


@pytest.mark.parametrize("upstream", ["none", "pass"])
def test_our_seal_over_our_header_verifies(dns_zone, authenticator, key, other_key, upstream):
    """What the forwarder does: our Authentication-Results, then dkimpy's ARC seal, which takes
    its cv= from our arc= result; the next hop verifies the chain."""
    publish_key(dns_zone, other_key, "hop.example", selector="arc")
    publish_key(dns_zone, key, "tempalias.test", selector="arc")
    message = sealed(MESSAGE, other_key, "hop.example") if upstream == "pass" else MESSAGE
    results = authenticator.check(message, OTHER_IP, HELO, SENDER)
    assert results.arc == upstream
    message = results.header() + message
    seal = dkim.arc_sign(message, b"arc", b"tempalias.test", key.pem, AUTHSERV_ID.encode())
    assert seal, "dkimpy did not find our Authentication-Results"
    cv = b"none" if upstream == "none" else b"pass"
    assert f"cv={cv.decode()}".encode() in seal[0]
    assert authenticator.check(b"".join(seal) + message, OTHER_IP, HELO, SENDER).arc == "pass"


# what a sender may send


@pytest.mark.parametrize("message", [
    b"To: k3x9qa@tempalias.test\r\nSubject: no From\r\n\r\nbody\r\n",
    b"",
    b"\x00\xff garbage without headers",
    b" continued first\r\nFrom: alice@sender.example\r\n\r\nbody\r\n",
    b"From: alice@sender.example\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\nbody\r\n",
], ids=["no-from", "empty", "garbage", "continuation-first", "huge-header"])
def test_odd_messages_have_results_not_errors(authenticator, message):
    results = authenticator.check(message, OTHER_IP, HELO, SENDER)
    assert results.dmarc in ("none", "fail", "permerror")
    assert results.dkim == ()
    assert results.header().startswith(b"Authentication-Results: ")


@pytest.mark.parametrize("signature", [
    b"DKIM-Signature: garbage\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=sel; b=!!; bh=??\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=sel; c=relaxed/relaxed;"
    b" h=from; bh=AAAA; b=AAAA\r\n",
], ids=["no-tags", "missing-tags", "bad-base64"])
def test_garbage_signatures_are_permerror_or_fail(dns_zone, authenticator, key, signature):
    publish_key(dns_zone, key, "sender.example")
    results = authenticator.check(signature + MESSAGE, OTHER_IP, HELO, SENDER)
    assert len(results.dkim) == 1 and results.dkim[0].result in ("permerror", "fail")


@pytest.mark.parametrize("sender", [
    "Two <a@sender.example>, <b@other.example>",
    "no address at all",
], ids=["two-domains", "no-domain"])
def test_a_from_dmarc_cannot_judge_is_a_permerror(authenticator, sender):
    results = authenticator.check(from_(sender), OTHER_IP, HELO, SENDER)
    assert (results.from_domain, results.dmarc) == (None, "permerror")


def test_two_from_fields_are_a_dmarc_permerror(authenticator):
    message = b"From: a@sender.example\r\n" + MESSAGE
    assert authenticator.check(message, OTHER_IP, HELO, SENDER).dmarc == "permerror"


def test_a_peer_that_is_no_ip_address_is_an_spf_permerror(authenticator):
    assert authenticator.check(MESSAGE, "not-an-ip", HELO, SENDER).spf == "permerror"


# owner_check: is a reply through a reverse address the owner's?


def owner_message(key: Key | None = None, domain: str = "owner.example",
                  author: str = OWNER) -> bytes:
    message = from_(f"Owner <{author}>")
    return signed(message, key, domain) if key else message


def test_another_mail_from_is_forged(dns_zone, authenticator, key):
    publish_spf(dns_zone, domain="owner.example")
    publish_key(dns_zone, key, "owner.example")
    message = owner_message(key)
    assert authenticator.owner_check(message, ALLOWED_IP, HELO, "mallory@evil.example",
                                     OWNER) is Authenticity.FORGED


def test_the_owners_mail_from_from_an_ip_spf_refuses_without_dkim_is_forged(dns_zone,
                                                                           authenticator):
    publish_spf(dns_zone, domain="owner.example")
    assert authenticator.owner_check(owner_message(), OTHER_IP, HELO, OWNER, OWNER) is \
        Authenticity.FORGED


def test_the_owners_mail_from_with_a_bad_signature_is_forged(dns_zone, authenticator, key):
    publish_spf(dns_zone, domain="owner.example")
    publish_key(dns_zone, key, "owner.example")
    message = owner_message(key).replace(b"Hello there.", b"Pay me.")
    assert authenticator.owner_check(message, OTHER_IP, HELO, OWNER, OWNER) is \
        Authenticity.FORGED


def test_the_owners_mail_from_through_an_ip_spf_allows_is_authentic(dns_zone, authenticator):
    publish_spf(dns_zone, domain="owner.example")
    assert authenticator.owner_check(owner_message(), ALLOWED_IP, HELO, "Owner@Owner.Example",
                                     OWNER) is Authenticity.AUTHENTIC


@pytest.mark.parametrize("signer", ["owner.example", "mail.owner.example"])
def test_the_owners_mail_from_with_aligned_dkim_from_any_ip_is_authentic(dns_zone, authenticator,
                                                                         key, signer):
    publish_spf(dns_zone, domain="owner.example")
    publish_key(dns_zone, key, signer)
    assert authenticator.owner_check(owner_message(key, signer), OTHER_IP, HELO, OWNER,
                                     OWNER) is Authenticity.AUTHENTIC


def test_dkim_of_another_domain_does_not_vouch_for_the_owner(dns_zone, authenticator, key):
    publish_spf(dns_zone, domain="owner.example")
    publish_key(dns_zone, key, "evil.example")
    assert authenticator.owner_check(owner_message(key, "evil.example"), OTHER_IP, HELO, OWNER,
                                     OWNER) is Authenticity.FORGED


def test_owner_dkim_on_a_message_from_someone_else_does_not_vouch(dns_zone, authenticator, key):
    publish_spf(dns_zone, domain="owner.example")
    publish_key(dns_zone, key, "owner.example")
    message = owner_message(key, author="someone@else.example")
    assert authenticator.owner_check(message, OTHER_IP, HELO, OWNER, OWNER) is \
        Authenticity.FORGED


def test_the_owners_mail_from_when_dns_is_silent_is_unknown(dns_zone, authenticator_for, key):
    dns_zone.fail("owner.example", "timeout")
    dns_zone.fail("sel._domainkey.owner.example", "timeout")
    assert authenticator_for(timeout=0.5).owner_check(owner_message(key), OTHER_IP, HELO,
                                                      OWNER, OWNER) is Authenticity.UNKNOWN


def test_a_silent_key_does_not_outweigh_a_refusing_spf_record(dns_zone, authenticator_for, key):
    """SPF refused, and the key did not answer: the signature might still have vouched."""
    publish_spf(dns_zone, domain="owner.example")
    dns_zone.fail("sel._domainkey.owner.example", "timeout")
    assert authenticator_for(timeout=0.5).owner_check(owner_message(key), OTHER_IP, HELO,
                                                      OWNER, OWNER) is Authenticity.UNKNOWN


# the budget


def test_a_silent_dns_server_costs_one_timeout_per_call(authenticator_for, silent_dns, key):
    authenticator = authenticator_for(timeout=0.5, address=silent_dns)
    message = sealed(signed(MESSAGE, key, "sender.example"), key, "hop.example")
    started = time.monotonic()
    results = authenticator.check(message, OTHER_IP, HELO, SENDER)
    assert time.monotonic() - started < 0.5 + 0.4
    assert (results.spf, results.dkim[0].result, results.dmarc, results.arc) == \
        ("temperror", "temperror", "temperror", "fail")
    started = time.monotonic()
    assert authenticator.owner_check(owner_message(key), OTHER_IP, HELO, OWNER, OWNER) is \
        Authenticity.UNKNOWN
    assert time.monotonic() - started < 0.5 + 0.4
