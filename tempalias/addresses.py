"""Mail address syntax (RFC 5321 mailboxes, with RFC 6531 UTF-8), shared by the API and SMTP.

Deliberately stricter than the RFCs in one way: a target must have a domain name with at least
two labels (no address literals, no bare host names), because mail is forwarded to it over the
public internet.

Internationalised domain names follow IDNA 2008 with the UTS 46 mapping (the ``idna`` package),
as registries and mail providers do: ``zielß.example`` stays ``xn--ziel-yna.example``. Python's
own ``"idna"`` codec is IDNA 2003, which turns it into ``zielss.example``, another domain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

MAX_ADDRESS_OCTETS = 254
MAX_LOCAL_OCTETS = 64

# atext of RFC 5322 plus any non-ASCII character (RFC 6531 UTF8-non-ascii); no controls, no space.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]+"
_DOT_ATOM = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*$")
_QUOTED = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010FFFF]|\\[\x20-\x7e])*"$')
_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_QUOTED_PAIR = re.compile(r"\\(.)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidAddress(ValueError):
    """Says in words what is wrong with the address."""


@dataclass(frozen=True)
class Address:
    local: str
    domain: str  # lower case, IDNA (ASCII) form

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        return self.local.isascii()

    @property
    def canonical(self) -> str:
        """The mailbox every spelling of it names, for counting (never for delivery): the local
        part unquoted, without its ``+tag`` and case-folded, the domain in its A-label form.
        ``"Victim+x"@EXAMPLE.com`` and ``victim@example.com`` are one mailbox here; providers
        whose local parts are case-sensitive or ignore no tags are rare, and a limit that counts
        two of their mailboxes as one errs on the safe side."""
        local = self.local
        if local.startswith('"'):
            local = _QUOTED_PAIR.sub(r"\1", local[1:-1])
        base = local.split("+", 1)[0] or local
        return f"{base.casefold()}@{self.domain}"


def domain_to_ascii(name: str) -> str:
    """The lower-cased A-label (ASCII) form of a domain name, by IDNA 2008 with the UTS 46
    mapping; raises InvalidAddress. An ASCII name needs no codec (the SMTP hot path: our own
    domains are ASCII); the caller checks its labels."""
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidAddress(f"{name!r} is not a valid internationalised domain name "
                             f"(IDNA 2008): {exc}") from None


def domain_to_unicode(name: str) -> str:
    """The U-label form of an A-label domain, for people to read; the A-label itself when it
    does not decode (it is shown as it is stored, never refused)."""
    if "xn--" not in name:
        return name
    try:
        return idna.decode(name)
    except (idna.IDNAError, UnicodeError):
        return name


def parse_domain_name(domain: str, fully_qualified: bool = True) -> str:
    """Lower-cased ASCII form of a domain name; raises InvalidAddress. ``fully_qualified=False``
    lets a single label through (an SMTP sender, as Postfix takes one by default)."""
    if not domain:
        raise InvalidAddress("the domain is missing")
    if domain.startswith("["):
        raise InvalidAddress("address literals are not accepted; use a domain name")
    name = domain.rstrip(".") if domain.count(".") > 1 else domain
    ascii_name = domain_to_ascii(name)
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LDH_LABEL.match(label) for label in labels):
        raise InvalidAddress(f"{domain!r} is not a valid domain name")
    if len(labels) < 2 and fully_qualified:
        raise InvalidAddress(f"{domain!r} is not a fully qualified domain name")
    if labels[-1].isdigit():
        raise InvalidAddress(f"{domain!r} is not a domain name")
    return ascii_name


def parse_address(text: str, fully_qualified: bool = True,
                  max_local_octets: int = MAX_LOCAL_OCTETS) -> Address:
    """Parse ``local@domain``; raises InvalidAddress with a specific reason.

    The defaults are for targets, which must be deliverable anywhere. SMTP is more lenient where
    RFC 5321 4.5.3.1 asks a server to be: SRS return addresses are longer than 64 octets before
    the @, and a sender's domain may be a single label (swaks's default ``user@host``)."""
    if not isinstance(text, str) or not text:
        raise InvalidAddress("the address is empty")
    if _CONTROL.search(text):
        raise InvalidAddress("the address contains control characters")
    try:
        octets = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # JSON's "\ud800" escapes can make a lone surrogate
        raise InvalidAddress("the address is not valid Unicode (it has a lone surrogate)") from None
    if octets > MAX_ADDRESS_OCTETS:
        raise InvalidAddress(f"the address is longer than {MAX_ADDRESS_OCTETS} octets")
    local, at, domain = text.rpartition("@")
    if not at:
        raise InvalidAddress("the address has no @")
    if not local:
        raise InvalidAddress("the part before the @ is empty")
    if len(local.encode("utf-8")) > max_local_octets:
        raise InvalidAddress(f"the part before the @ is longer than {max_local_octets} octets")
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        raise InvalidAddress("the part before the @ is not a valid mailbox name")
    return Address(local, parse_domain_name(domain, fully_qualified))
