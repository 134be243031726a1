"""The DNS records one of our mail domains publishes so that the mail we send is believed.

``expected`` lists them: the MX (mail to the domain reaches us), SPF (who may send from it),
DKIM (the public halves of our signing keys, ``dkimkeys.py``) and DMARC (what a receiver does
with mail that fails both). ``check`` looks each up through our resolver and says whether it is
there as expected, missing, published with another value, or not known because DNS did not
answer. ``zone_text`` writes a record as a zone-file line, which is what the operator pastes.

SPF: the mail we send leaves through the smarthost, so it is the smarthost's addresses that a
receiver sees. ``v=spf1 mx ~all`` covers a host that sends for itself; behind a smarthost the
operator names its SPF record (``spf_include``: ``include:`` the provider's, e.g.
``_spf.provider.example``), or adds its addresses. Replies are DKIM-signed with a key of the
domain, so DMARC passes on the aligned DKIM signature even where SPF falls short; ``~all`` and
DMARC's ``p=quarantine`` keep a mistake there from losing mail outright.

Comparing: a TXT record split into several strings is one text, joined (RFC 7208 3.3, RFC 6376
3.6.2.2); a DKIM or DMARC record is compared tag by tag (ours must be there with the same value,
spacing and other tags aside; the DKIM key by its p=); SPF by its terms in any case; an MX by
its host, whatever its preference.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import dns.exception
import dns.resolver

from tempalias.dkimkeys import SigningKeys
from tempalias.domaincheck import MX_PREFERENCE

log = logging.getLogger(__name__)

PRESENT = "present"
MISSING = "missing"
DIFFERENT = "different"
UNKNOWN = "unknown"  # DNS did not answer
TXT_STRING_BYTES = 255  # the longest character-string of a TXT record (RFC 1035 3.3)
DMARC_VALUE = "v=DMARC1; p=quarantine; adkim=r; aspf=r"
_SPF_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


@dataclass(frozen=True)
class Record:
    """One record to publish: ``name`` fully qualified without the final dot, ``value`` as it
    goes into the zone (an MX as ``PREFERENCE HOST``, a TXT as one text however long), ``why``
    one line on what it is for."""

    name: str
    type: str
    value: str
    why: str


@dataclass(frozen=True)
class Status:
    """What DNS holds for one record: ``state`` one of PRESENT, MISSING, DIFFERENT, UNKNOWN;
    ``found``: what is published in its place (DIFFERENT: the records of its kind there)."""

    state: str
    found: tuple[str, ...] = ()


def spf_include_name(text: str) -> str:
    """The name an SPF ``include:`` takes (``_spf.provider.example``: DNS labels, underscores
    allowed), lower case; raises ValueError."""
    name = _name(text.strip())
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_SPF_LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} is not a DNS name for an SPF include")
    return name


def expected(domain: str, keys: SigningKeys, mx_host: str,
             spf_include: str | None = None) -> list[Record]:
    """The records ``domain`` (an A-label) publishes: MX, SPF, DKIM (RSA, then Ed25519 when
    there is that key), DMARC."""
    domain, mx_host = _name(domain), _name(mx_host)
    spf = "v=spf1 mx" + (f" include:{_name(spf_include)}" if spf_include else "") + " ~all"
    senders = (f"{mx_host} and the smarthost ({_name(spf_include)}'s SPF)" if spf_include
               else f"{mx_host}; behind a smarthost include its SPF (dns-records --spf-include)")
    records = [
        Record(domain, "MX", f"{MX_PREFERENCE} {mx_host}",
               f"MX: mail to {domain} comes to tempalias at {mx_host}"),
        Record(domain, "TXT", spf, f"SPF: the hosts that send mail from {domain}: {senders}"),
        Record(f"{keys.selector}._domainkey.{domain}", "TXT", keys.rsa_public_txt(),
               "DKIM: the public key of the RSA signature on the mail tempalias sends"),
    ]
    ed25519_txt = keys.ed25519_public_txt()
    if ed25519_txt is not None and keys.ed25519_selector is not None:
        records.append(Record(f"{keys.ed25519_selector}._domainkey.{domain}", "TXT", ed25519_txt,
                              "DKIM: the public key of the Ed25519 signature (RFC 8463)"))
    records.append(Record(f"_dmarc.{domain}", "TXT", DMARC_VALUE,
                          "DMARC: mail from the domain must pass DKIM or SPF, aligned"))
    return records


def check(records: list[Record], resolver: dns.resolver.Resolver) -> list[tuple[Record, Status]]:
    """Each record with what DNS holds for it, every look-up within the resolver's lifetime
    (``make_resolver``'s timeout) for them all; a name and type is asked once."""
    deadline = time.monotonic() + resolver.lifetime
    answers: dict[tuple[str, str], tuple[str, ...] | None] = {}
    for record in records:
        question = (record.name, record.type)
        if question not in answers:
            answers[question] = _ask(resolver, record.name, record.type, deadline)
    return [(record, _status(record, answers[(record.name, record.type)]))
            for record in records]


def zone_text(record: Record) -> str:
    """The record as a zone-file line: a TXT in quoted strings of at most 255 bytes each."""
    if record.type == "TXT":
        value = " ".join(f'"{_escaped(part)}"' for part in _txt_strings(record.value))
    elif record.type == "MX":
        preference, host = record.value.split()
        value = f"{preference} {host}."
    else:
        value = record.value
    return f"{record.name}. IN {record.type} {value}"


def _txt_strings(text: str) -> list[str]:
    data = text.encode("utf-8")
    return [data[start:start + TXT_STRING_BYTES].decode("utf-8")
            for start in range(0, len(data), TXT_STRING_BYTES)] or [""]


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _ask(resolver: dns.resolver.Resolver, name: str, rdtype: str,
         deadline: float) -> tuple[str, ...] | None:
    """The records of ``rdtype`` at ``name`` as text (a TXT's strings joined), () when there are
    none, None when DNS did not answer in time."""
    lifetime = deadline - time.monotonic()
    if lifetime <= 0:
        return None
    try:
        answer = resolver.resolve(name, rdtype, lifetime=lifetime, raise_on_no_answer=False,
                                  search=False)
    except dns.resolver.NXDOMAIN:
        return ()
    except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no server answered
        log.warning("dnsrecords: %s %s: no answer (%s)", name, rdtype, exc.__class__.__name__)
        return None
    if answer.rrset is None:
        return ()
    if rdtype == "TXT":
        return tuple(b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset)
    return tuple(f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"
                 for rdata in answer.rrset)


def _status(record: Record, published: tuple[str, ...] | None) -> Status:
    if published is None:
        return Status(UNKNOWN)
    if record.type == "MX":
        ours = _mx_host(record.value)
        if any(_mx_host(value) == ours for value in published):
            return Status(PRESENT)
        return Status(DIFFERENT, published) if published else Status(MISSING)
    kind = _version(record.value)
    candidates = tuple(text for text in published if _version(text) == kind
                       or (kind == "v=dkim1" and "p=" in text and not _version(text)))
    if not candidates:
        return Status(MISSING)
    if any(_same(record.value, text) for text in candidates):
        return Status(PRESENT)
    return Status(DIFFERENT, candidates)


def _same(ours: str, theirs: str) -> bool:
    kind = _version(ours)
    if kind == "v=spf1":
        return ours.lower().split() == theirs.lower().split()
    dkim = kind == "v=dkim1"
    wanted, found = _tags(ours, dkim), _tags(theirs, dkim)
    if dkim:
        found.setdefault("k", "rsa")  # RFC 6376 3.6.1: k= defaults to rsa
    return all(found.get(tag) == value for tag, value in wanted.items())


def _tags(text: str, dkim: bool) -> dict[str, str]:
    """A tag=value list (DKIM, DMARC) with the spacing gone, values in lower case but a DKIM
    key's p= (base64, where case matters)."""
    tags = {}
    for item in text.split(";"):
        tag, separator, value = item.partition("=")
        if separator:
            tag, value = tag.strip().lower(), "".join(value.split())
            tags[tag] = value if dkim and tag == "p" else value.lower()
    return tags


def _version(text: str) -> str:
    """``v=spf1``, ``v=dkim1``, ``v=dmarc1``: a record's version, lower case; "" without."""
    head = text.strip().lower()
    if head.startswith("v=spf1") and head[6:7] in ("", " "):
        return "v=spf1"
    version = "".join(head.split(";")[0].split())
    return version if version.startswith("v=") else ""


def _mx_host(value: str) -> str:
    return _name(value.split()[-1]) if value.split() else ""


def _name(domain: str) -> str:
    return domain.rstrip(".").lower()
