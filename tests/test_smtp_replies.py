"""Replies through an alias, and forwards that are signed and sealed, end to end.

A real tempalias (ARC on, its own DKIM key made on first start), the session's SMTP sink as its
smarthost, and the session's DNS server on loopback serving every domain's SPF, DKIM and DMARC
records, ours as ``tempalias dns-records`` prints them. Whatever reaches the sink is checked with
dkimpy, as a receiving mail system would check it.
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import secrets
import smtplib
import subprocess
import sys
from pathlib import Path

import dkim
import dns.nameserver
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.processes import PROJECT_ROOT, wait_for
from tempalias.reverse import reverse_local
from tempalias.smtp import replies

DAY_MS = 86_400_000
CORPUS = Path(__file__).parent / "data" / "replies"
OWNER = "owner@owner.example"
ALICE = "alice@sender.example"
CORPUS_REVERSE = "r=abcdefghijklmnop=k3x9qa@tempalias.test"


def _key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode("ascii")


def _txt(value: str) -> list[str]:
    return [value[i:i + 250] for i in range(0, len(value), 250)]


@pytest.fixture(scope="module")
def keys():
    """Alice's provider's key and the owner's provider's key (selector ``s1``)."""
    return {"sender.example": _key(), "owner.example": _key()}


def dnsfunc_of(dns_server):
    """dkimpy's DNS look-up, asking the test DNS server, as a receiver would ask its own."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", dns_server.port)]

    def dnsfunc(name, timeout=5):
        name = name.decode("ascii") if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(name.rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)

    return dnsfunc


def publish_our_records(service, dns_zone, domain: str = "tempalias.test") -> str:
    """Run ``tempalias dns-records DOMAIN`` with the service's settings and publish what it prints
    (zone-file lines, comments between them) in the test zone; returns its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TEMPALIAS_")}
    env.update({key: value for key, value in service.env.items() if key.startswith("TEMPALIAS_")})
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    run = subprocess.run([sys.executable, "-m", "tempalias", "dns-records", "--no-check", domain],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for line in run.stdout.splitlines():
        if line.strip() and not line.startswith(";"):
            dns_zone.publish(line)
    return run.stdout


@pytest.fixture
def zone(dns_zone, keys, sealing_service):
    """Every domain's records: Alice's and the owner's SPF (only 127.0.0.1 sends for them),
    DKIM keys and DMARC; ours as dns-records prints them."""
    for domain, (_, txt) in keys.items():
        dns_zone.set_records(f"s1._domainkey.{domain}", "TXT", [_txt(txt)])
        dns_zone.set_records(domain, "TXT", ["v=spf1 ip4:127.0.0.1 -all"])
        dns_zone.set_records(f"_dmarc.{domain}", "TXT", ["v=DMARC1; p=reject"])
    publish_our_records(sealing_service, dns_zone)
    return dns_zone


def signed(message: bytes, domain: str, keys) -> bytes:
    pem, _ = keys[domain]
    return dkim.sign(message, b"s1", domain.encode(), pem,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + message


def alice_writes(to: str) -> bytes:
    return (f"From: Alice Example <{ALICE}>\r\nTo: {to}\r\nSubject: a question\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <q1@sender.example>\r\n"
            f"\r\nDo you sell blue ones?\r\n").encode("ascii")


def send(port: int, sender: str, recipients: list[str], body: bytes,
         source: str = "127.0.0.1") -> dict:
    result: dict = {"rcpt": [], "data": None}
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as client:
        client.ehlo("mx.client.example")
        result["mail"] = client.mail(sender)
        for recipient in recipients:
            result["rcpt"].append(client.rcpt(recipient))
        if any(code == 250 for code, _ in result["rcpt"]):
            try:
                result["data"] = client.data(body)
            except smtplib.SMTPDataError as exc:
                result["data"] = (exc.smtp_code, exc.smtp_error)
    return result


def status(reply) -> str:
    code, text = reply
    return f"{code} {text.decode().split(' ', 1)[0]}"


def expect(reply, wanted: replies.Reply) -> None:
    assert status(reply) == f"{wanted.code} {wanted.status}", reply


def verifies(content: bytes, dns_server, index: int = 0) -> bool:
    return dkim.DKIM(content).verify(idx=index, dnsfunc=dnsfunc_of(dns_server))


def signature_domains(content: bytes) -> list[str]:
    parsed = email.message_from_bytes(content, policy=email.policy.compat32)
    return [dict(part.strip().split("=", 1) for part in value.split(";") if "=" in part)
            .get("d", "").strip() for value in parsed.get_all("DKIM-Signature", [])]


def arc_state(content: bytes, dns_server) -> bytes:
    cv, _, _ = dkim.arc_verify(content, dnsfunc=dnsfunc_of(dns_server))
    return cv


def create(store, replies_on: bool = True, uses: int | None = 5):
    return store.create(OWNER, DAY_MS, uses, replies=replies_on)


def address_of(new) -> str:
    return f"{new.alias.id}@tempalias.test"


# --- forwards


def test_a_plain_forward_keeps_its_signature_and_is_sealed(sealing_service, smtp_sink, store,
                                                           zone, keys):
    new = create(store, replies_on=False)
    message = signed(alice_writes(address_of(new)), "sender.example", keys)
    result = send(sealing_service.smtp_port, ALICE, [address_of(new)], message)
    assert result["data"][0] == 250
    [arrived] = smtp_sink.messages
    assert arrived.content.endswith(message)  # its own bytes unchanged
    domains = signature_domains(arrived.content)
    assert domains == ["sender.example"]
    assert verifies(arrived.content, zone)
    assert arc_state(arrived.content, zone) == dkim.CV_Pass
    aar = email.message_from_bytes(arrived.content)["ARC-Authentication-Results"]
    assert "dkim=pass" in aar and "spf=pass" in aar and "dmarc=pass" in aar


def test_a_forward_through_a_reply_alias_names_a_reverse_address_and_is_signed(
        sealing_service, smtp_sink, store, zone, keys):
    new = create(store)
    message = signed(alice_writes(address_of(new)), "sender.example", keys)
    result = send(sealing_service.smtp_port, ALICE, [address_of(new)], message)
    assert result["data"][0] == 250
    [arrived] = smtp_sink.messages
    assert arrived.rcpt_tos == [OWNER]
    parsed = email.message_from_bytes(arrived.content, policy=email.policy.default)
    sender = parsed["From"].addresses[0]
    assert sender.domain == "tempalias.test" and sender.username.startswith("r=")
    assert "@" not in sender.display_name and "alice" in sender.display_name.lower()
    assert "sender.example" in sender.display_name
    assert parsed["X-Original-From"] == f"Alice Example <{ALICE}>"
    domains = signature_domains(arrived.content)
    assert "tempalias.test" in domains and "sender.example" in domains  # the original is kept
    assert verifies(arrived.content, zone, domains.index("tempalias.test"))
    assert arc_state(arrived.content, zone) == dkim.CV_Pass
    # the same sender gets the same reverse address next time, another sender another one
    send(sealing_service.smtp_port, ALICE, [address_of(new)], message)
    bob = alice_writes(address_of(new)).replace(b"Alice Example <alice@", b"Bob <bob@")
    send(sealing_service.smtp_port, "bob@sender.example", [address_of(new)], bob)
    wait_for(lambda: len(smtp_sink.messages) == 3, 10, "three forwards")
    froms = [email.message_from_bytes(m.content, policy=email.policy.default)["From"]
             .addresses[0].addr_spec for m in smtp_sink.messages]
    assert froms[0] == froms[1] != froms[2]


def reverse_address_for(sealing_service, smtp_sink, store, keys, new) -> str:
    """Alice writes to the alias; the reverse address the owner got her message from."""
    smtp_sink.reset()
    send(sealing_service.smtp_port, ALICE, [address_of(new)],
         signed(alice_writes(address_of(new)), "sender.example", keys))
    wait_for(lambda: smtp_sink.messages, 10, "the forward")
    parsed = email.message_from_bytes(smtp_sink.messages[-1].content,
                                      policy=email.policy.default)
    smtp_sink.reset()
    return parsed["From"].addresses[0].addr_spec


def test_only_one_alias_that_takes_replies_per_transaction(sealing_service, smtp_sink, store,
                                                           zone):
    first, second = create(store), create(store, replies_on=False)
    result = send(sealing_service.smtp_port, ALICE, [address_of(first), address_of(second)],
                  alice_writes(address_of(first)))
    assert result["rcpt"][0][0] == 250
    expect(result["rcpt"][1], replies.REPLIES_ALONE)
    assert store.lookup(second.alias.id).uses_left == 5  # not taken


# --- replies


def owner_reply(corpus_file: Path, reverse: str) -> bytes:
    text = corpus_file.read_bytes()
    head, _, body = text.partition(b"\r\n\r\n")
    return head.replace(CORPUS_REVERSE.encode(), reverse.encode()) + b"\r\n\r\n" + body


def visible_text(content: bytes) -> str:
    """Every header, decoded, and every text part, decoded: what anyone could read."""
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    seen = [f"{name}: {value}" for name, value in parsed.items()]
    for part in parsed.walk():
        seen += [f"{name}: {value}" for name, value in part.items()]
        if part.get_content_maintype() == "text" and not part.is_attachment():
            seen.append(part.get_content())
    return "\n".join(seen).lower()


@pytest.mark.parametrize("corpus_file", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.stem)
def test_a_reply_reaches_the_sender_and_names_nothing_of_the_owner(
        corpus_file, sealing_service, smtp_sink, store, zone, keys):
    new = create(store)
    reverse = reverse_address_for(sealing_service, smtp_sink, store, keys, new)
    result = send(sealing_service.smtp_port, OWNER, [reverse], owner_reply(corpus_file, reverse))
    assert result["data"][0] == 250, result
    [arrived] = smtp_sink.messages
    assert arrived.rcpt_tos == [ALICE]
    assert "owner" not in arrived.mail_from.lower()
    assert arrived.mail_from.endswith("@tempalias.test")
    seen = visible_text(arrived.content)
    assert "owner.example" not in seen and "owner@" not in seen
    assert reverse.lower() not in seen
    parsed = email.message_from_bytes(arrived.content, policy=email.policy.default)
    assert parsed["From"].addresses[0].addr_spec == address_of(new)
    assert parsed["To"].addresses[0].addr_spec == ALICE
    assert signature_domains(arrived.content) == ["tempalias.test"]
    assert verifies(arrived.content, zone)
    assert store.lookup(new.alias.id).uses_left == 4  # replies take no use (Alice's did)


def a_reply(reverse: str, extra: str = "") -> bytes:
    return (f"From: Owner <{OWNER}>\r\nTo: {reverse}\r\n{extra}Subject: Re: a question\r\n"
            f"Date: Thu, 03 Dec 2026 11:00:00 +0000\r\nMessage-ID: <a1@owner.example>\r\n"
            f"\r\nYes, we do.\r\n").encode("ascii")


def test_forged_replies_are_refused(sealing_service, smtp_sink, store, zone, keys):
    new = create(store)
    reverse = reverse_address_for(sealing_service, smtp_sink, store, keys, new)
    port = sealing_service.smtp_port
    # a stranger's MAIL FROM, from an allowed IP
    expect(send(port, "mallory@sender.example", [reverse], a_reply(reverse))["data"],
           replies.REPLY_NOT_AUTHENTIC)
    # the owner's MAIL FROM, from an IP SPF does not allow, no signature
    expect(send(port, OWNER, [reverse], a_reply(reverse), source="127.0.0.2")["data"],
           replies.REPLY_NOT_AUTHENTIC)
    # a signature of another domain does not help
    expect(send(port, OWNER, [reverse], signed(a_reply(reverse), "sender.example", keys),
                source="127.0.0.2")["data"], replies.REPLY_NOT_AUTHENTIC)
    # a tampered reverse address
    local, _, domain = reverse.partition("@")
    tampered = local[:3] + ("a" if local[3] != "a" else "b") + local[4:] + "@" + domain
    expect(send(port, OWNER, [tampered], a_reply(tampered))["rcpt"][0], replies.NO_SUCH_REVERSE)
    assert smtp_sink.messages == []
    # the owner's own provider signature, from anywhere: authentic
    result = send(port, OWNER, [reverse], signed(a_reply(reverse), "owner.example", keys),
                  source="127.0.0.2")
    assert result["data"][0] == 250, result
    assert [m.rcpt_tos for m in smtp_sink.messages] == [[ALICE]]


def test_a_reply_that_would_show_the_owner_to_others_is_refused(sealing_service, smtp_sink,
                                                               store, zone, keys):
    new = create(store)
    reverse = reverse_address_for(sealing_service, smtp_sink, store, keys, new)
    result = send(sealing_service.smtp_port, OWNER, [reverse],
                  a_reply(reverse, "Cc: friend@elsewhere.example\r\n"))
    expect(result["data"], replies.REPLY_DISCLOSES)
    result = send(sealing_service.smtp_port, OWNER, [reverse, "friend@elsewhere.example"],
                  a_reply(reverse))
    expect(result["rcpt"][1], replies.REPLIES_ALONE)
    assert smtp_sink.messages == [m for m in smtp_sink.messages if m.rcpt_tos == [ALICE]]
    assert len(smtp_sink.messages) == 1


def test_a_reverse_address_ends_with_its_alias(sealing_service, smtp_sink, store, zone, keys):
    new = create(store)
    reverse = reverse_address_for(sealing_service, smtp_sink, store, keys, new)
    store.revoke(new.alias.id, new.token)
    expect(send(sealing_service.smtp_port, OWNER, [reverse], a_reply(reverse))["rcpt"][0],
           replies.NO_SUCH_REVERSE)


def test_a_bounced_reply_comes_back_to_the_owner(sealing_service, smtp_sink, store, zone, keys):
    new = create(store)
    reverse = reverse_address_for(sealing_service, smtp_sink, store, keys, new)
    assert send(sealing_service.smtp_port, OWNER, [reverse], a_reply(reverse))["data"][0] == 250
    [sent] = smtp_sink.messages
    smtp_sink.reset()
    bounce = (b"From: MAILER-DAEMON@sender.example\r\nTo: " + sent.mail_from.encode() +
              b"\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
              b"--b\r\nContent-Type: text/plain\r\n\r\nNo such user alice.\r\n"
              b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
              b"Reporting-MTA: dns; mx.sender.example\r\n\r\n"
              b"Final-Recipient: rfc822; alice@sender.example\r\nAction: failed\r\n"
              b"Status: 5.1.1\r\n\r\n--b--\r\n")
    result = send(sealing_service.smtp_port, "", [sent.mail_from], bounce)
    assert result["data"][0] == 250, result
    [report] = smtp_sink.messages
    assert report.rcpt_tos == [OWNER] and report.mail_from == "<>"
    assert b"Your reply sent through the alias" in report.content


def test_replies_have_their_own_limit(service_factory, smtp_sink_server, smtp_sink, store, zone,
                                      keys):
    service = service_factory(env={"TEMPALIAS_SMARTHOST": smtp_sink_server.address,
                                   "TEMPALIAS_SRS_SECRET": "test-srs-secret",
                                   "TEMPALIAS_REPLY_RATE": "2/1h"})
    publish_our_records(service, zone)
    new = create(store)
    reverse = reverse_address_for(service, smtp_sink, store, keys, new)
    for _ in range(2):
        assert send(service.smtp_port, OWNER, [reverse], a_reply(reverse))["data"][0] == 250
    expect(send(service.smtp_port, OWNER, [reverse], a_reply(reverse))["rcpt"][0],
           replies.REPLY_THROTTLED)
    assert store.lookup(new.alias.id).uses_left == 4


# --- the rule: 250 only when the next hop has it; nothing left behind


def spool_files(service) -> list[str]:
    spool = Path(service.env["TEMPALIAS_DATA_DIR"]) / "spool"
    return os.listdir(spool) if spool.exists() else []


@pytest.mark.parametrize("size", [2_000, 3 * 1024 * 1024], ids=["in-memory", "on-disk"])
@pytest.mark.parametrize("replies_on", [False, True], ids=["sealed", "rewritten"])
def test_a_next_hop_that_fails_after_the_body_gives_a_4xx_and_the_use_back(
        size, replies_on, service_factory, own_peer, store, zone, keys):
    failing = own_peer()
    failing.script.message = "451 4.3.0 disk full"
    service = service_factory(env={"TEMPALIAS_SMARTHOST": failing.address,
                                   "TEMPALIAS_SRS_SECRET": "test-srs-secret"})
    new = create(store, replies_on=replies_on, uses=2)
    filler = b"".join(b"line %07d of a long message\r\n" % i for i in range(size // 30))
    message = alice_writes(address_of(new)) + filler
    result = send(service.smtp_port, ALICE, [address_of(new)], message)
    assert result["data"][0] == 451, result
    assert store.lookup(new.alias.id).uses_left == 2
    assert spool_files(service) == []


def test_exact_counting_through_a_reply_alias(sealing_service, smtp_sink, store, zone, keys):
    new = create(store, uses=3)
    codes = [send(sealing_service.smtp_port, ALICE, [address_of(new)],
                  alice_writes(address_of(new)))["data"] for _ in range(4)]
    assert [code for code, _ in codes[:3]] == [250, 250, 250]
    assert codes[3] is None  # the fourth RCPT was refused: used up
    assert len(smtp_sink.messages) == 3
    assert spool_files(sealing_service) == []


def reverse_from_store(store, new) -> str:
    """The reply address Alice has at the alias, as the store hands it out."""
    random = store.reverse_addresses(new.alias.id, [ALICE])[ALICE]
    return f"{reverse_local(random, new.alias.id)}@tempalias.test"


@pytest.mark.parametrize("size", [2_000, 3 * 1024 * 1024], ids=["in-memory", "on-disk"])
def test_a_reply_the_next_hop_fails_after_its_body_gets_a_4xx(size, service_factory, own_peer,
                                                              store, zone):
    failing = own_peer()
    failing.script.message = "451 4.3.0 disk full"
    service = service_factory(env={"TEMPALIAS_SMARTHOST": failing.address,
                                   "TEMPALIAS_SRS_SECRET": "test-srs-secret"})
    new = create(store)
    reverse = reverse_from_store(store, new)
    filler = b"".join(b"quoted line %07d of a long thread\r\n" % i for i in range(size // 34))
    result = send(service.smtp_port, OWNER, [reverse], a_reply(reverse) + filler)
    assert result["data"][0] == 451, result
    assert spool_files(service) == []
    failing.script.message = None
    result = send(service.smtp_port, OWNER, [reverse], a_reply(reverse) + filler)
    assert result["data"][0] == 250, result  # sent again later, it goes
    [arrived] = failing.messages
    assert arrived.rcpt_tos == [ALICE] and b"owner.example" not in arrived.content.lower()
    assert spool_files(service) == []


def test_a_reply_whose_owner_dns_does_not_answer_waits(sealing_service, smtp_sink, store, zone):
    # a domain of its own, never asked before: the service's DNS cache holds nothing of it
    owner = f"owner@quiet-{secrets.token_hex(4)}.example"
    new = store.create(owner, DAY_MS, 5, replies=True)
    reverse = reverse_from_store(store, new)
    zone.fail(owner.split("@")[1], "timeout")
    result = send(sealing_service.smtp_port, owner, [reverse],
                  a_reply(reverse).replace(OWNER.encode(), owner.encode()))
    expect(result["data"], replies.REPLY_UNVERIFIED)
    assert smtp_sink.messages == []


def test_nothing_else_rides_with_an_alias_that_takes_replies(sealing_service, smtp_sink, store,
                                                            zone):
    new = create(store)
    result = send(sealing_service.smtp_port, ALICE, [address_of(new), "postmaster@tempalias.test"],
                  alice_writes(address_of(new)))
    assert result["rcpt"][0][0] == 250
    expect(result["rcpt"][1], replies.REPLIES_ALONE)


def test_results_a_sender_wrote_in_our_name_are_removed(sealing_service, smtp_sink, store, zone,
                                                        keys):
    """RFC 8601 section 5: an Authentication-Results field that claims our name and came from
    outside is a forgery (a phisher's `dkim=pass` for the owner's mail program to believe)."""
    new = create(store, replies_on=False)
    forged = (b"Authentication-Results: TempAlias.test (ours, honest);\r\n"
              b"\tdkim=pass header.d=bank.example\r\n"
              b"Authentication-Results: mx.sender.example; spf=pass smtp.mailfrom=sender.example\r\n")
    result = send(sealing_service.smtp_port, ALICE, [address_of(new)],
                  forged + alice_writes(address_of(new)))
    assert result["data"][0] == 250
    [arrived] = smtp_sink.messages
    parsed = email.message_from_bytes(arrived.content, policy=email.policy.compat32)
    results = parsed.get_all("Authentication-Results")
    assert [value.split(";")[0].strip().lower() for value in results] == [
        "tempalias.test", "mx.sender.example"]  # ours, and the other host's kept
    assert "bank.example" not in arrived.content.decode()
    assert arc_state(arrived.content, zone) == dkim.CV_Pass
