"""What we check on mail received: SPF, DKIM, ARC and DMARC, and whether a reply is the owner's.

``MailAuthenticator.check`` evaluates a message the way a receiving mail server does and answers
with ``AuthResults``, whose ``header()`` is our ``Authentication-Results:`` line (RFC 8601): the
forwarder puts it in front of a message before it seals it with ARC, so the next hop learns what
we saw before our forwarding changed the envelope (SPF) and maybe the message (DKIM).
``MailAuthenticator.owner_check`` answers a narrower question for a reply sent through a reverse
address: did the alias's owner send it, or someone who wrote the owner's address in MAIL FROM?

Libraries: pyspf (SPF), dkimpy (DKIM and ARC), authres (writing the header), publicsuffixlist
(the organisational domain that DMARC's relaxed alignment compares). DMARC itself is small and
lives here (RFC 7489: policy discovery at the From domain, then at its organisational domain).

Every DNS look-up goes through one resolver of our own, made from the service's (the servers of
``TEMPALIAS_DNS_SERVERS``), with a small cache that honours TTLs, so the key and SPF record of a
busy sender domain are fetched once per TTL rather than once per message. pyspf asks through a
subclass whose ``dns`` method uses that resolver (pyspf's module-wide look-up function is left as
it is), dkimpy through its ``dnsfunc`` argument. One call's look-ups share one deadline, the
``timeout`` given: a look-up left without time is a temporary error at once, so a silent DNS
server costs one ``timeout``, never one per look-up.

Nothing here raises on what a sender wrote: a message without From, garbage signatures, a broken
SPF record or a huge header end as ``none``, ``fail`` or ``permerror`` results. Addresses are never
logged (results are logged at debug level with domains only).
"""

from __future__ import annotations

import email.utils
import enum
import logging
import threading
import time
from dataclasses import dataclass

import authres
import dkim
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import spf
from authres.arc import ARCAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult
from dkim.util import parse_tag_value
from publicsuffixlist import PublicSuffixList

from tempalias.addresses import InvalidAddress, domain_to_ascii

log = logging.getLogger(__name__)

CACHE_ENTRIES = 2048  # DNS answers the authenticator keeps (each until its TTL ends)
MIN_KEY_BITS = 1024  # shorter RSA keys do not verify (RFC 8301)
# Each signature and ARC set costs a pass over the body: a message cannot make us verify more
# (RFC 6376 6.1 lets a verifier limit them; real mail carries one to three, a chain a few sets).
MAX_SIGNATURES = 5  # DKIM-Signatures verified, top first; those below are "policy" (RFC 8601)
MAX_ARC_SETS = 10  # a longer chain is "fail" unverified
DMARC_POLICIES = ("none", "quarantine", "reject")
HEADER_NAME = "Authentication-Results"
FOLD = "\r\n\t"  # each result on a line of its own


class Authenticity(enum.Enum):
    """Whether a reply through a reverse address comes from the alias's owner."""

    AUTHENTIC = "authentic"  # the owner's address in MAIL FROM and SPF or aligned DKIM vouch for it
    FORGED = "forged"  # another MAIL FROM, or nothing vouches for it: refuse (5xx)
    UNKNOWN = "unknown"  # nothing vouched because DNS did not answer: ask again later (4xx)


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature's outcome: ``result`` is pass, fail, permerror or temperror (RFC 8601),
    or policy for one below the MAX_SIGNATURES we verify;
    ``domain`` and ``selector`` its d= and s= (empty when the signature could not be read)."""

    domain: str
    selector: str
    result: str


@dataclass(frozen=True)
class AuthResults:
    """What ``MailAuthenticator.check`` found (results as RFC 8601 spells them).

    ``spf``: pass/fail/softfail/neutral/none/permerror/temperror; ``dkim``: one result per
    signature, top first (empty: no signature); ``dmarc``: pass/fail/none/permerror/temperror with
    ``dmarc_policy`` the policy the From domain publishes (p=, or sp= when found at the
    organisational domain; None without a record); ``arc``: the incoming chain, none/pass/fail;
    ``from_domain``: the RFC5322.From domain (None when there is not exactly one).
    ``authserv_id`` (ours) and ``spf_domain`` (the domain SPF was checked for: MAIL FROM's, or
    HELO's for a null sender) are what ``header()`` names beside the results."""

    spf: str
    dkim: tuple[DkimResult, ...]
    dmarc: str
    dmarc_policy: str | None
    arc: str
    from_domain: str | None
    authserv_id: str
    spf_domain: str

    def header(self) -> bytes:
        """``Authentication-Results: <authserv_id>; spf=...; dkim=...; dmarc=...; arc=...``, one
        result per folded line, ending in CRLF, in the form dkimpy's ``arc_sign(srv_id=
        authserv_id)`` reads back for the ARC-Authentication-Results and the chain's cv=.
        Properties name domains only (smtp.mailfrom is the domain, RFC 8601 2.7.2), never an
        address: the header travels on with the message."""
        results = [authres.SPFAuthenticationResult(
            result=self.spf, smtp_mailfrom=_safe_value(self.spf_domain))]
        if self.dkim:
            results += [authres.DKIMAuthenticationResult(
                result=signature.result, header_d=_safe_value(signature.domain),
                header_s=_safe_value(signature.selector)) for signature in self.dkim]
        else:
            results.append(authres.DKIMAuthenticationResult(result="none"))
        results.append(DMARCAuthenticationResult(
            result=self.dmarc, header_from=_safe_value(self.from_domain or ""),
            policy=self.dmarc_policy))
        results.append(ARCAuthenticationResult(result=self.arc))
        text = f"{HEADER_NAME}: {self.authserv_id};" + ";".join(
            FOLD + str(result) for result in results)
        return text.encode("ascii", "replace") + b"\r\n"


class _Unanswered(Exception):
    """DNS did not answer in time (timeout, SERVFAIL, no server reachable): a temporary error."""


class _Lookups:
    """One call's DNS: every look-up through the authenticator's caching resolver, each within
    what is left of the call's budget."""

    def __init__(self, resolver: dns.resolver.Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline

    def records(self, name: str, rdtype: str) -> tuple:
        """The records of ``rdtype`` at ``name`` (a CNAME followed), () when there are none or
        the name cannot exist; raises _Unanswered when DNS does not answer in time."""
        lifetime = self.deadline - time.monotonic()
        if lifetime <= 0:
            raise _Unanswered(f"{name} {rdtype}: out of time")
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return ()  # not a name DNS can hold (an empty or overlong label, bad IDNA)
        try:
            answer = self.resolver.resolve(qname, rdtype, lifetime=lifetime, search=False,
                                           raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return ()
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no nameservers
            raise _Unanswered(f"{name} {rdtype}: {exc.__class__.__name__}") from None
        return tuple(answer.rrset) if answer.rrset is not None else ()

    def dkim_txt(self, name: bytes, timeout: float = 0) -> bytes | None:
        """dkimpy's ``dnsfunc``: the key record at ``name`` (its strings joined), None when
        there is none; its own ``timeout`` is ignored, the call's budget applies."""
        try:
            records = self.records(name.decode("ascii"), "TXT")
        except UnicodeDecodeError:
            return None
        except _Unanswered as exc:
            raise dkim.DnsTimeoutError(str(exc)) from None
        return b"".join(records[0].strings) if records else None


class _SpfQuery(spf.query):
    """pyspf's query, its DNS asked through our look-ups.

    pyspf calls the module-wide ``spf.DNSLookup`` from its ``dns`` method; this method replaces
    that one for our queries only. It keeps what pyspf's does that matters with a resolver that
    follows CNAMEs itself: names that cannot exist are empty, answers are kept for the rest of
    the query, and empty answers count towards the void look-up limit (RFC 7208 4.6.4)."""

    def __init__(self, lookups: _Lookups, **kwargs) -> None:
        self._lookups = lookups
        super().__init__(**kwargs)

    def dns(self, name, qtype, cnames=None, ignore_void=False):
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key not in self.cache:
            try:
                records = self._lookups.records(name, qtype)
            except _Unanswered as exc:
                raise spf.TempError(f"DNS {exc}") from None
            self.cache[key] = [_spf_value(qtype, record) for record in records]
        result = list(self.cache[key])
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def _spf_value(qtype: str, record):
    """A record in the shape pyspf's own dnspython look-up gives it."""
    if qtype in ("A", "AAAA"):
        return record.address
    if qtype == "MX":
        return record.preference, record.exchange.to_text(omit_final_dot=True)
    if qtype == "PTR":
        return record.target.to_text(omit_final_dot=True)
    return record.strings  # TXT, SPF: a record's strings, joined by pyspf


class _QuietLogger(logging.LoggerAdapter):
    """dkimpy's logger: it logs each bad signature as an error; for us that is a sender's
    problem, not the service's, so it goes to debug."""

    def log(self, level, msg, *args, **kwargs):
        super().log(logging.DEBUG, msg, *args, **kwargs)


_DKIMPY_LOG = _QuietLogger(logging.getLogger(__name__ + ".dkimpy"), {})

_psl: PublicSuffixList | None = None
_psl_lock = threading.Lock()


def organisational_domain(domain: str) -> str:
    """The registered domain above ``domain`` (RFC 7489 3.2, by the Public Suffix List):
    ``mail.sender.example`` -> ``sender.example``; a public suffix itself stays as it is."""
    global _psl
    if _psl is None:
        with _psl_lock:  # the list takes ~0.1 s to load: once per process
            if _psl is None:
                _psl = PublicSuffixList()
    domain = domain.rstrip(".").lower()
    return _psl.privatesuffix(domain) or domain


def aligned(domain: str, other: str, mode: str = "r") -> bool:
    """DMARC identifier alignment: strict (``s``) the same name, relaxed (``r``) the same
    organisational domain."""
    domain, other = domain.rstrip(".").lower(), other.rstrip(".").lower()
    if not domain or not other:
        return False
    if domain == other:
        return True
    return mode != "s" and organisational_domain(domain) == organisational_domain(other)


class MailAuthenticator:
    """SPF, DKIM, ARC and DMARC of received mail, every look-up through a caching resolver made
    from ``resolver``'s servers, each call within ``timeout`` seconds in all.

    ``authserv_id`` is our host name as our Authentication-Results name it, kept in lower case
    (authres reads it back in lower case, so the signer's ``srv_id`` must be lower case too)."""

    def __init__(self, resolver: dns.resolver.Resolver, authserv_id: str, timeout: float) -> None:
        self.resolver = _caching_copy(resolver)
        self.authserv_id = authserv_id.lower()
        self.timeout = timeout

    def check(self, message: bytes, peer_ip: str, helo: str, mail_from: str) -> AuthResults:
        """Every check a receiver makes, for the message ``peer_ip`` sent after ``HELO helo``
        and ``MAIL FROM:<mail_from>`` ("" for the null sender)."""
        lookups = self._lookups()
        spf_result = self._spf(lookups, peer_ip, helo, mail_from)
        parsed = _parsed(message)
        signatures = self._dkim(lookups, parsed)
        arc = self._arc(lookups, message, parsed)
        from_domain, from_problem = _from_domain(parsed)
        spf_domain = _spf_domain(mail_from, helo)
        if from_problem:
            dmarc, policy = "permerror", None
        elif from_domain is None:
            dmarc, policy = "none", None
        else:
            dmarc, policy = self._dmarc(lookups, from_domain, spf_result, spf_domain, signatures)
        results = AuthResults(spf_result, signatures, dmarc, policy, arc, from_domain,
                              self.authserv_id, spf_domain)
        log.debug("mailauth: spf=%s (%s) dkim=%s dmarc=%s (%s) arc=%s", spf_result, spf_domain,
                  ",".join(f"{s.result}:{s.domain}" for s in signatures) or "none", dmarc,
                  from_domain, arc)
        return results

    def owner_check(self, message: bytes, peer_ip: str, helo: str, mail_from: str,
                    owner: str) -> Authenticity:
        """Is this reply the owner's? AUTHENTIC when MAIL FROM is ``owner`` (any case) and
        either SPF passes for ``peer_ip`` and it, or a DKIM signature verifies whose d= and
        whose message's From are both aligned (relaxed) with the owner's domain. UNKNOWN when
        neither passed and one of them met DNS that did not answer; else FORGED. SPF is asked
        first, and a signature is verified only when it could count."""
        if not owner or mail_from.lower() != owner.lower():
            return Authenticity.FORGED
        owner_domain = owner.rpartition("@")[2]
        lookups = self._lookups()
        spf_result = self._spf(lookups, peer_ip, helo, mail_from)
        if spf_result == "pass":
            return Authenticity.AUTHENTIC
        parsed = _parsed(message)
        from_domain, _ = _from_domain(parsed)
        signatures: tuple[DkimResult, ...] = ()
        if from_domain is not None and aligned(from_domain, owner_domain):
            signatures = self._dkim(lookups, parsed,
                                    wanted=lambda domain: aligned(domain, owner_domain))
        if any(signature.result == "pass" for signature in signatures):
            return Authenticity.AUTHENTIC
        if spf_result == "temperror" or any(s.result == "temperror" for s in signatures):
            return Authenticity.UNKNOWN
        return Authenticity.FORGED

    def _lookups(self) -> _Lookups:
        return _Lookups(self.resolver, time.monotonic() + self.timeout)

    def _spf(self, lookups: _Lookups, peer_ip: str, helo: str, mail_from: str) -> str:
        try:
            query = _SpfQuery(lookups, i=peer_ip, s=mail_from, h=helo)
            return query.check()[0]
        except Exception as exc:  # noqa: BLE001 - pyspf on input it did not expect
            log.debug("mailauth: spf could not be evaluated (%s)", exc.__class__.__name__)
            return "permerror"

    def _dkim(self, lookups: _Lookups, parsed: dkim.DKIM | None,
              wanted=None) -> tuple[DkimResult, ...]:
        """Every DKIM-Signature, top first (only those whose d= ``wanted`` accepts)."""
        if parsed is None:
            return ()
        values = [value for name, value in parsed.headers if name.lower() == b"dkim-signature"]
        results = []
        verified = 0
        for index, value in enumerate(values):
            domain, selector = _signature_names(value)
            if wanted is not None and not wanted(domain):
                continue
            if verified == MAX_SIGNATURES:
                results.append(DkimResult(domain, selector, "policy"))
                continue
            verified += 1
            results.append(DkimResult(domain, selector, _verify_one(parsed, index, lookups)))
        return tuple(results)

    def _arc(self, lookups: _Lookups, message: bytes, parsed: dkim.DKIM | None) -> str:
        """The incoming ARC chain; without ARC fields (most mail) dkimpy is not asked."""
        names = [name.lower() for name, _ in parsed.headers] if parsed is not None else []
        if not any(name in dkim.ARC.ARC_HEADERS for name in names):
            return "none"
        if names.count(b"arc-seal") > MAX_ARC_SETS:
            return "fail"
        try:
            cv, _, _ = dkim.arc_verify(message, logger=_DKIMPY_LOG, dnsfunc=lookups.dkim_txt,
                                       minkey=MIN_KEY_BITS)
        except Exception as exc:  # noqa: BLE001 - dkimpy on an ARC set it cannot read
            log.debug("mailauth: arc could not be verified (%s)", exc.__class__.__name__)
            return "fail"
        return {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")  # None: chain ended

    def _dmarc(self, lookups: _Lookups, from_domain: str, spf_result: str, spf_domain: str,
               signatures: tuple[DkimResult, ...]) -> tuple[str, str | None]:
        """RFC 7489: the policy record at the From domain, else at its organisational domain;
        pass when SPF or DKIM passes for a domain aligned with it."""
        try:
            record, at_organisation = _dmarc_record(lookups, from_domain)
        except _Unanswered:
            return "temperror", None
        if record is None:
            return "none", None
        policy = record.get("p", "").lower()
        if at_organisation and record.get("sp", "").lower() in DMARC_POLICIES:
            policy = record["sp"].lower()
        if policy not in DMARC_POLICIES:
            if "rua" not in record:  # RFC 7489 6.6.3: an invalid record is not a policy
                return "permerror", None
            policy = "none"
        aspf, adkim = record.get("aspf", "r").lower(), record.get("adkim", "r").lower()
        spf_aligned = aligned(spf_domain, from_domain, aspf)
        dkim_aligned = [s.result for s in signatures if aligned(s.domain, from_domain, adkim)]
        if (spf_aligned and spf_result == "pass") or "pass" in dkim_aligned:
            return "pass", policy
        if (spf_aligned and spf_result == "temperror") or "temperror" in dkim_aligned:
            return "temperror", policy
        return "fail", policy


def _caching_copy(resolver: dns.resolver.Resolver) -> dns.resolver.Resolver:
    """A resolver asking ``resolver``'s servers, as it does, with an LRU cache of its own."""
    own = dns.resolver.Resolver(configure=False)
    own.nameservers = list(resolver.nameservers)
    own.port = resolver.port
    own.timeout = resolver.timeout
    own.lifetime = resolver.lifetime
    own.retry_servfail = resolver.retry_servfail
    own.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
    return own


def _parsed(message: bytes) -> dkim.DKIM | None:
    """The message as dkimpy reads it (its ``headers``: [name, value] pairs), read once for the
    signatures and the From; None when dkimpy cannot read it."""
    try:
        return dkim.DKIM(message, logger=_DKIMPY_LOG, minkey=MIN_KEY_BITS)
    except Exception:  # noqa: BLE001 - MessageFormatError, or a continuation line first
        return None


def _from_domain(parsed: dkim.DKIM | None) -> tuple[str | None, bool]:
    """The RFC5322.From domain, and whether the From makes DMARC impossible (several From
    fields, several domains, no domain): (None, False) when there is no From at all."""
    if parsed is None:
        return None, False
    values = [value for name, value in parsed.headers if name.lower() == b"from"]
    if not values:
        return None, False
    if len(values) > 1:
        return None, True
    text = values[0].decode("utf-8", "replace").replace("\r\n", "")
    domains = {address.rpartition("@")[2].strip("[]. ").lower()
               for _, address in email.utils.getaddresses([text]) if "@" in address}
    if len(domains) != 1:
        return None, True
    try:
        return domain_to_ascii(domains.pop()), False
    except InvalidAddress:
        return None, True


def _dmarc_record(lookups: _Lookups, from_domain: str) -> tuple[dict[str, str] | None, bool]:
    """The DMARC record that speaks for ``from_domain`` as a dict of its tags, and whether it was
    found at the organisational domain (RFC 7489 6.6.3); (None, False) when there is none.
    Raises _Unanswered when DNS does not answer."""
    record = _dmarc_at(lookups, from_domain)
    if record is not None:
        return record, False
    organisation = organisational_domain(from_domain)
    if organisation != from_domain:
        record = _dmarc_at(lookups, organisation)
        if record is not None:
            return record, True
    return None, False


def _dmarc_at(lookups: _Lookups, domain: str) -> dict[str, str] | None:
    """The one DMARC record at ``_dmarc.domain``; none, or more than one, is no record."""
    texts = [b"".join(record.strings) for record in lookups.records(f"_dmarc.{domain}", "TXT")]
    records = [tags for tags in map(_dmarc_tags, texts) if tags is not None]
    return records[0] if len(records) == 1 else None


def _dmarc_tags(text: bytes) -> dict[str, str] | None:
    """A TXT record's tags when it is a DMARC record (its first tag ``v=DMARC1``), else None."""
    tags = {}
    for part in text.decode("ascii", "replace").split(";"):
        name, equals, value = part.partition("=")
        if equals:  # a part without one (a stray word) is not a tag: ignored
            tags.setdefault(name.strip().lower(), value.strip())
    first = text.split(b";", 1)[0].replace(b" ", b"").replace(b"\t", b"")
    return tags if first == b"v=DMARC1" else None


def _spf_domain(mail_from: str, helo: str) -> str:
    """The domain SPF speaks for: MAIL FROM's, or HELO's for the null sender (RFC 7208 2.4)."""
    return (mail_from.rpartition("@")[2] if mail_from else helo).lower()


def _signature_names(value: bytes) -> tuple[str, str]:
    """A DKIM-Signature's d= and s=, read leniently ("" when absent or unreadable)."""
    try:
        tags = parse_tag_value(value)
    except Exception:  # noqa: BLE001 - a garbage signature still gets its (permerror) result
        return "", ""
    return (tags.get(b"d", b"").decode("ascii", "replace").lower(),
            tags.get(b"s", b"").decode("ascii", "replace"))


def _verify_one(verifier: dkim.DKIM, index: int, lookups: _Lookups) -> str:
    """The result of the ``index``th signature: dkimpy says True or False, or raises; which key
    record was (not) found tells a missing key (permerror) and silent DNS (temperror) from a
    signature that does not verify (fail)."""
    fetched: list[str] = []

    def dnsfunc(name: bytes, timeout: float = 0) -> bytes | None:
        try:
            txt = lookups.dkim_txt(name)
        except dkim.DnsTimeoutError:
            fetched.append("temperror")
            raise
        if txt is None:
            fetched.append("permerror")  # no key (RFC 8601 2.7.1)
            return None
        try:
            dkim.evaluate_pk(name, txt)
        except Exception:  # noqa: BLE001 - a key record dkimpy cannot read
            fetched.append("permerror")
        return txt

    try:
        if verifier.verify(index, dnsfunc=dnsfunc):
            return "pass"
    except dkim.ValidationError:
        return "fail"  # the body hash differs, or similar: the message was altered
    except Exception:  # noqa: BLE001 - bad tags, a key too short, a signature dkimpy cannot read
        return "permerror"
    return fetched[-1] if fetched else "fail"


def _safe_value(value: str) -> str | None:
    """A header property's value kept to what a header may carry (None: leave it out)."""
    value = "".join(ch for ch in value if ch.isascii() and ch.isprintable() and ch not in ";()")
    return value or None
