"""What a custom domain must publish in DNS, and whether it does.

A domain brought by its owner needs two records: an MX pointing at our mail host (so mail for it
reaches us) and a TXT at ``_tempalias.<domain>`` holding a verification value (so we know the one
who registered it controls its zone). The value is an HMAC of the domain and the registration's
token hash under the service's secret: every registration has its own, so two people registering
the same domain cannot win with each other's records, and it reveals nothing of the token.

``DomainChecker.check`` looks both records up at once, within one time budget for the whole check,
and answers with every record that is missing or wrong, each in one sentence a domain owner who is
not a DNS expert can act on. A look-up that DNS did not answer (timeout, SERVFAIL, no server
reachable) makes the result ``transient``: not ok for now, but nothing to suspend a domain or
refuse a verification for good.

Domains come in as A-labels (callers turn U-labels into A-labels with the ``idna`` package).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

log = logging.getLogger(__name__)

VALUE_PREFIX = "tempalias-verify="
VALUE_LENGTH = 32  # base32 characters after the prefix: 160 bits of the HMAC
TXT_LABEL = "_tempalias"
MX_PREFERENCE = 10
# the longest domain whose _tempalias.<domain> is still a DNS name (253 characters, no final dot)
MAX_DOMAIN_LENGTH = 253 - len(TXT_LABEL) - 1
SHOWN_RECORDS = 5  # records found that a problem quotes, at most
SHOWN_CHARACTERS = 60  # characters of one TXT record a problem quotes, at most


@dataclass(frozen=True)
class Record:
    """One record to publish: ``name`` fully qualified without the final dot, ``value`` as it
    goes into the zone (an MX as ``PREFERENCE HOST``)."""

    type: str
    name: str
    value: str


@dataclass(frozen=True)
class CheckResult:
    """``ok`` when every record is as expected; ``transient`` when DNS did not answer (try again
    later); ``problems`` one plain sentence per record that is missing, wrong or unanswered."""

    ok: bool
    transient: bool
    problems: tuple[str, ...]


def verification_value(secret: bytes, domain: str, token_hash: str) -> str:
    """The TXT value that proves the registration with ``token_hash`` controls ``domain``."""
    message = f"{_name(domain)} {token_hash}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return VALUE_PREFIX + base64.b32encode(digest).decode("ascii").lower()[:VALUE_LENGTH]


def txt_name(domain: str) -> str:
    """Where the verification value of ``domain`` is published."""
    return f"{TXT_LABEL}.{_name(domain)}"


def expected_records(domain: str, mx_host: str, value: str) -> list[Record]:
    """The records the owner of ``domain`` publishes: the MX first, then the TXT."""
    return [Record("MX", _name(domain), f"{MX_PREFERENCE} {_name(mx_host)}"),
            Record("TXT", txt_name(domain), value)]


@dataclass(frozen=True)
class _Answer:
    """What DNS said about one name and type; a look-up without an answer is None instead."""

    records: tuple  # dnspython rdata of the asked type (empty: none there)
    exists: bool  # False: NXDOMAIN
    alias_of: dns.name.Name | None  # the CNAME's target when the name is an alias


class DomainChecker:
    """Checks a domain's MX and TXT through ``resolver`` (``tempalias.resolver.make_resolver``)
    within ``timeout`` seconds for the whole check."""

    def __init__(self, resolver: dns.resolver.Resolver, timeout: float) -> None:
        self.resolver = resolver
        self.timeout = timeout

    def check(self, domain: str, mx_host: str, value: str) -> CheckResult:
        """Does ``domain`` have an MX at ``mx_host`` and ``value`` in its ``_tempalias`` TXT?"""
        domain, mx_host, where = _name(domain), _name(mx_host), txt_name(domain)
        try:
            questions = ((dns.name.from_text(domain), "MX"), (dns.name.from_text(where), "TXT"))
            wanted = dns.name.from_text(mx_host)
        except dns.exception.DNSException as exc:  # too long, an empty label: no such name
            return CheckResult(False, False, (
                f"{domain} cannot be verified: {where} is not a name DNS can hold ({exc})",))
        mx, txt = self._ask_all(questions)
        problems = [_mx_problem(domain, wanted, mx), _txt_problem(where, value, txt)]
        problems = [problem for problem in problems if problem]
        return CheckResult(not problems, mx is None or txt is None, tuple(problems))

    def _ask_all(self, questions: tuple[tuple[dns.name.Name, str], ...]) -> list[_Answer | None]:
        """Every question at once, each within what is left of the check's budget.

        Threads, because the service's sockets and threads are gevent's (``cli.py`` patches
        them): there each question is a greenlet; unpatched (tests) each is a thread."""
        deadline = time.monotonic() + self.timeout
        answers: list[_Answer | None] = [None] * len(questions)

        def ask(index: int, name: dns.name.Name, rdtype: str) -> None:
            answers[index] = self._ask(name, rdtype, deadline)

        askers = [threading.Thread(target=ask, args=(index, name, rdtype), daemon=True,
                                   name=f"domaincheck-{rdtype}")
                  for index, (name, rdtype) in enumerate(questions)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(max(0.0, deadline - time.monotonic()))
        return list(answers)  # one still asking past the deadline is None: no answer in time

    def _ask(self, qname: dns.name.Name, rdtype: str, deadline: float) -> _Answer | None:
        lifetime = deadline - time.monotonic()
        if lifetime <= 0:
            return None
        try:
            answer = self.resolver.resolve(qname, rdtype, lifetime=lifetime,
                                           raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            return _Answer((), False, _alias_of(qname, _canonical_name(exc, qname)))
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no server answered
            log.warning("domaincheck: %s %s: no answer (%s)", qname, rdtype,
                        exc.__class__.__name__)
            return None
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        return _Answer(records, True, _alias_of(qname, answer.canonical_name))


def _mx_problem(domain: str, wanted: dns.name.Name, mx: _Answer | None) -> str | None:
    if mx is None:
        return f"DNS did not answer when asked for the MX record of {domain}; try again later"
    if mx.alias_of is not None:
        found = (f"{domain} is a CNAME pointing at {_shown_name(mx.alias_of)}; a domain that "
                 "receives mail cannot be a CNAME, replace it with the MX record")
    elif any(record.exchange == wanted for record in mx.records):  # equality ignores case
        return None
    elif not mx.exists:
        found = f"the name {domain} does not exist in DNS"
    elif not mx.records:
        found = "no MX record at all"
    else:
        shown = [f"{record.preference} {_shown_name(record.exchange)}"
                 for record in sorted(mx.records, key=lambda r: (r.preference, r.exchange))]
        found = _listed(shown)
    return f"no MX record for {domain} points at {_shown_name(wanted)} (found: {found})"


def _txt_problem(where: str, value: str, txt: _Answer | None) -> str | None:
    if txt is None:
        return f"DNS did not answer when asked for the TXT record at {where}; try again later"
    # a TXT record of several strings is one text, joined without spaces (RFC 7208 3.3)
    texts = [b"".join(record.strings) for record in txt.records]
    if value.encode() in texts:
        return None
    if not txt.exists:
        found = f"the name {where} does not exist in DNS"
    elif not texts:
        found = "no TXT record at all"
    else:
        found = _listed([_quoted(text) for text in texts])
        if any(text.startswith(VALUE_PREFIX.encode()) for text in texts):
            found += ("; each registration has its own value, so publish the one shown for "
                      "this registration")
    return f"no TXT record at {where} holds {value} (found: {found})"


def _name(domain: str) -> str:
    return domain.rstrip(".").lower()


def _canonical_name(exc: dns.resolver.NXDOMAIN, qname: dns.name.Name) -> dns.name.Name:
    try:
        return exc.canonical_name
    except (KeyError, TypeError, AttributeError):  # no response to say: the name asked
        return qname


def _alias_of(qname: dns.name.Name, canonical: dns.name.Name) -> dns.name.Name | None:
    return canonical if canonical != qname else None


def _shown_name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)  # a null MX (RFC 7505) shows as "0 ."


def _quoted(text: bytes) -> str:
    """A TXT record as a problem quotes it: printable, and cut short when long."""
    shown = "".join(ch if ch.isprintable() else "\ufffd"
                    for ch in text.decode("utf-8", "replace"))
    if len(shown) > SHOWN_CHARACTERS:
        shown = shown[:SHOWN_CHARACTERS] + "..."
    return f'"{shown}"'


def _listed(items: list[str]) -> str:
    more = len(items) - SHOWN_RECORDS
    return ", ".join(items[:SHOWN_RECORDS]) + (f" and {more} more" if more > 0 else "")
