"""``tempalias check``: is this installation able to run, as ``postfix check`` asks of Postfix.

Each check is a small function of plain values (settings, a resolver, a moment) that returns its
``Result`` lines; none prints, none raises for what it finds, and the CLI only prints them. A
``FAIL`` is what stops mail or loses aliases (exit status 1), a ``WARN`` what an operator should
look at (exit status 0). Every look-up is bounded by the timeout of the setting it checks, so the
whole run ends in seconds even when nothing answers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

import dns.exception
import dns.rdatatype
import dns.resolver

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CERT_WARN_DAYS = 14  # a certificate ending sooner than this is a WARN: renew it now
SMARTHOST_CHECK_TIMEOUT = 10.0  # at most this for the smarthost's answers, whatever its setting
RBL_TEST_ADDRESS = ipaddress.ip_address("127.0.0.2")  # every block list lists it by convention
REDIS_SETTINGS = ("maxmemory-policy", "appendonly", "save")


@dataclass(frozen=True)
class Result:
    """One line: ``level`` OK, WARN or FAIL; ``what`` was checked and found; ``advice`` what to
    do about it (empty when there is nothing to do)."""

    level: str
    what: str
    advice: str = ""

    def line(self) -> str:
        return f"{self.level:<4} {self.what}" + (f": {self.advice}" if self.advice else "")

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def failed(results: Iterable[Result]) -> bool:
    return any(result.level == FAIL for result in results)


# --- Redis


def redis_server(url: str | None, timeout: float, password: str | None = None) -> list[Result]:
    """Redis answers within ``timeout``, will not evict keys, and keeps them across a restart.

    Eviction (any ``maxmemory-policy`` but ``noeviction``) drops aliases without a word, so it is
    a FAIL; no persistence (``appendonly no`` and no ``save`` points) loses every alias with a
    restart, which a cache-like deployment may accept: a WARN. ``url`` None: the embedded
    redis-server, which serve starts with its append-only file, is not running now."""
    from tempalias.store import StoreUnavailable
    from tempalias.store.health import server_settings

    if url is None:
        return [Result(OK, "redis: the embedded redis-server (append-only, no eviction), "
                           "started by tempalias serve")]
    try:
        nodes = server_settings(url, timeout, REDIS_SETTINGS, password)
    except StoreUnavailable as exc:
        return [Result(FAIL, f"redis did not answer within {timeout:g} s ({exc})",
                       "start it, or correct TEMPALIAS_REDIS_URL and TEMPALIAS_REDIS_PASSWORD")]
    if nodes is None:
        return [Result(WARN, "redis answers, but refuses CONFIG GET: cannot read its "
                             "maxmemory-policy and persistence",
                       "check them by hand: maxmemory-policy noeviction, appendonly yes")]
    results = [Result(OK, "redis answers")]
    policies = {node.get("maxmemory-policy", "") for node in nodes}
    if policies - {"noeviction"}:
        results.append(Result(FAIL, f"redis maxmemory-policy is {', '.join(sorted(policies))}: "
                                    "aliases are evicted silently when memory runs short",
                              "CONFIG SET maxmemory-policy noeviction (and in redis.conf)"))
    else:
        results.append(Result(OK, "redis maxmemory-policy noeviction"))
    if any(node.get("appendonly") != "yes" and not node.get("save", "").strip()
           for node in nodes):
        results.append(Result(WARN, "redis persists nothing (appendonly no, no save points): "
                                    "a restart loses every alias",
                              "CONFIG SET appendonly yes (and in redis.conf)"))
    else:
        results.append(Result(OK, "redis persists its data"))
    return results


# --- the public URL


def public_url(configured: str | None, listen_host: str, listen_port: int) -> list[Result]:
    """The URL the page's bookmarklet and the browser extension call (``TEMPALIAS_PUBLIC_URL``,
    else ``http://HTTP_LISTEN``) is one people can reach, and reach over TLS. Unset behind a
    proxy, it names the loopback address the service listens on: the page still works, but every
    bookmarklet and extension it hands out calls the user's own machine. A WARN: mail flows."""
    advice = "set TEMPALIAS_PUBLIC_URL (public_url) to the URL people open the page at"
    if configured is None:
        try:
            address = ipaddress.ip_address(listen_host)
        except ValueError:
            address = None
        if address is not None and address.is_unspecified:
            return [Result(WARN, "no public URL: the page's bookmarklet and extension download "
                                 "are made for whatever Host header each request names", advice)]
        if address is not None and address.is_loopback or listen_host == "localhost":
            return [Result(WARN, f"no public URL: the bookmarklet and browser extension the page "
                                 f"hands out call http://{listen_host}:{listen_port}, which only "
                                 "this machine reaches", advice)]
        configured = f"http://{listen_host}:{listen_port}"
    scheme, _, rest = configured.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost" or host.endswith(".localhost")
    if scheme == "http" and not local:
        return [Result(WARN, f"public URL {configured} is plain HTTP: alias tokens and target "
                             "addresses cross the network unencrypted",
                       "serve the page over HTTPS (TLS in nginx) and set public_url to https://...")]
    return [Result(OK, f"public URL {configured}: the bookmarklet and browser extension call it")]


# --- the smarthost


def smarthost(settings, helo_name: str) -> list[Result]:
    """The smarthost answers EHLO within its timeout (at most ``SMARTHOST_CHECK_TIMEOUT``), and
    STARTTLS and AUTH as configured: dialled the way every message dials it
    (``relay.SmarthostPool.dial``), so what passes here is what the service does."""
    from tempalias.smtp.delivery import DeliveryError
    from tempalias.smtp.relay import SmarthostPool

    if settings.smarthost is None:
        return [Result(OK, "no smarthost: mail is written into the Maildir of the data "
                           "directory", "set TEMPALIAS_SMARTHOST to send it on")]
    timeout = min(settings.smarthost_timeout, SMARTHOST_CHECK_TIMEOUT)
    pool = SmarthostPool(dataclasses.replace(settings, smarthost_timeout=timeout), helo_name)
    steps = "EHLO" + (", STARTTLS" if settings.smarthost_tls != "off" else "") + (
        ", AUTH" if settings.smarthost_user is not None else "")
    where = f"smarthost {settings.smarthost}"
    try:
        client = pool.dial()
    except DeliveryError as exc:
        return [Result(FAIL, f"{where} ({steps}, {timeout:g} s): {exc.detail}",
                       "check TEMPALIAS_SMARTHOST and its TLS, user and password settings, "
                       "and that this machine may reach it")]
    try:
        encrypted = isinstance(client.sock, ssl.SSLSocket)
        client.quit()
    except (OSError, smtplib.SMTPException):
        pass  # it answered everything we needed
    finally:
        client.close()
    found = steps + ("" if settings.smarthost_tls == "off" or encrypted
                     else " (no STARTTLS offered: sent in clear)")
    if settings.smarthost_tls == "opportunistic" and not encrypted:
        return [Result(WARN, f"{where} answers {found}",
                       "ask its operator for STARTTLS, or set smarthost_tls = off")]
    return [Result(OK, f"{where} answers {found}")]


# --- the STARTTLS certificate


def tls_certificate(cert_path: str | None, key_path: str | None,
                    now: datetime | None = None) -> list[Result]:
    """TEMPALIAS_TLS_CERT and _KEY load, belong together, are valid now (else FAIL: clients
    that verify give up on us) and for more than ``CERT_WARN_DAYS`` (else WARN: renew)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if cert_path is None and key_path is None:
        return [Result(OK, "no TLS certificate: STARTTLS is not offered",
                       "set TEMPALIAS_TLS_CERT and TEMPALIAS_TLS_KEY to offer it")]
    if cert_path is None or key_path is None:
        return [Result(FAIL, "TLS: only one of TEMPALIAS_TLS_CERT and TEMPALIAS_TLS_KEY is set",
                       "set both, or neither")]
    try:
        with open(cert_path, "rb") as handle:
            certificate = x509.load_pem_x509_certificates(handle.read())[0]
        with open(key_path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return [Result(FAIL, f"TLS certificate {cert_path} or key {key_path} does not load "
                             f"({exc})", "point the settings at readable PEM files without "
                                         "a passphrase")]
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return [Result(FAIL, f"TLS key {key_path} is not the key of certificate {cert_path}",
                       "configure the key the certificate was issued for")]
    now = now or datetime.now(timezone.utc)
    ends = certificate.not_valid_after_utc
    if not certificate.not_valid_before_utc <= now <= ends:
        return [Result(FAIL, f"TLS certificate {cert_path} is not valid now (from "
                             f"{certificate.not_valid_before_utc:%Y-%m-%d} to {ends:%Y-%m-%d})",
                       "renew it")]
    if ends - now < timedelta(days=CERT_WARN_DAYS):
        return [Result(WARN, f"TLS certificate {cert_path} ends {ends:%Y-%m-%d %H:%M} UTC, "
                             f"within {CERT_WARN_DAYS} days", "renew it")]
    return [Result(OK, f"TLS certificate {cert_path} with its key, valid until "
                       f"{ends:%Y-%m-%d}")]


# --- DNS: block lists and the domains' records


def rbl_zones(zones: tuple[str, ...], resolver: dns.resolver.Resolver,
              timeout: float) -> list[Result]:
    """Each block list answers through our resolvers for 127.0.0.2, the address every list lists
    by convention: a listing is OK; not listed means a wrong zone name (WARN); a timeout,
    SERVFAIL or the code a list answers resolvers it refuses is a FAIL (no client is checked)."""
    from tempalias.rbl import LISTED_RANGE, REFUSED_RESOLVER_RANGE, reversed_name

    results = []
    for zone in zones:
        what = f"block list {zone} (asked for {RBL_TEST_ADDRESS})"
        try:
            answer = resolver.resolve(reversed_name(RBL_TEST_ADDRESS, zone), "A",
                                      lifetime=timeout, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            results.append(Result(WARN, f"{what}: not listed", "is the zone's name right?"))
            continue
        except dns.exception.Timeout:
            results.append(Result(FAIL, f"{what}: no answer within {timeout:g} s",
                                  "check TEMPALIAS_DNS_SERVERS and TEMPALIAS_RBL_ZONES"))
            continue
        except dns.exception.DNSException as exc:
            results.append(Result(FAIL, f"{what}: {exc.__class__.__name__}",
                                  "check TEMPALIAS_DNS_SERVERS and TEMPALIAS_RBL_ZONES"))
            continue
        codes = [ipaddress.ip_address(record.address) for record in answer.rrset or ()
                 if record.rdtype == dns.rdatatype.A]
        if any(code in REFUSED_RESOLVER_RANGE for code in codes):
            results.append(Result(FAIL, f"{what}: the list refuses our resolver "
                                        f"({', '.join(map(str, codes))})",
                                  "use a resolver of your own, not a public one"))
        elif any(code in LISTED_RANGE for code in codes):
            results.append(Result(OK, f"{what}: answers"))
        else:
            results.append(Result(WARN, f"{what}: not listed", "is the zone's name right?"))
    return results


def domain_records(domain: str, records, resolver: dns.resolver.Resolver) -> list[Result]:
    """The records ``tempalias dns-records DOMAIN`` prints (``dnsrecords.expected``), checked as it
    checks them. Missing or different is a WARN, not a FAIL: mail still flows, it is only
    believed less (spam folders, DMARC reports), and an operator may publish a different SPF on
    purpose. DNS not answering is a FAIL: then neither we nor anyone else can tell."""
    from tempalias import dnsrecords

    results = []
    advice = f"publish what tempalias dns-records {domain} prints"
    for record, status in dnsrecords.check(records, resolver):
        kind = record.why.split(":", 1)[0]  # MX, SPF, DKIM, DMARC
        what = f"{domain}: {kind} record at {record.name}"
        if status.state == dnsrecords.PRESENT:
            results.append(Result(OK, f"{what}: published"))
        elif status.state == dnsrecords.UNKNOWN:
            results.append(Result(FAIL, f"{what}: DNS did not answer",
                                  "check TEMPALIAS_DNS_SERVERS, or try again later"))
        else:
            results.append(Result(WARN, f"{what}: {status.state}", advice))
    return results
