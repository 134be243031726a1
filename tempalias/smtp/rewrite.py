"""Header and body rewriting for replies through an alias: the forward names reverse addresses,
the reply names the alias and never its owner.

Forward (sender -> alias -> owner): ``rewrite_forward`` points From and Reply-To at the sender's
reverse addresses, so that the owner's "Reply" goes back through us; the sender's own address
stays readable, without an ``@``, in the display name, and the original fields are kept as
``X-Original-From`` / ``X-Original-Reply-To``. Nothing else changes: other fields keep their
bytes and the body is untouched, so the sender's DKIM body hash still verifies.

Reply (owner -> reverse address -> sender): ``sanitise_reply`` makes the message come from the
alias. The owner's client wrote their address into places nobody looks at: quote lines
("On ..., Owner <owner@...> wrote:", Outlook's "From: ... Sent: ..." block), ``mailto:`` links,
signatures, Content-IDs of inline images and the ``cid:`` references to them, Message-ID,
References, Autocrypt, trace and client fields. The address may be split by a quoted-printable
soft line break, hidden in base64, in an RFC 2047 encoded-word, written in upper case,
percent-encoded in a ``mailto:`` (``owner%40owner.example``) or as an HTML character reference.
So every text part is decoded (transfer encoding, then charset) before it is searched, and every
field is searched both as written and with its encoded-words decoded.

The message is worked on as bytes, walked part by part along its MIME boundaries (never parsed
and re-generated whole), so a part or field that needs no change keeps its exact bytes:
attachments stay byte-identical and a pass-through's DKIM signature stays valid.

What is deliberately not handled (documented here, tested as far as it is behaviour):
- Attachments are passed unchanged and not searched: a part with a filename, with
  ``Content-Disposition: attachment``, any part not text/plain or text/html (text/calendar,
  vCards, message/rfc822 included). What the owner attaches is what the owner chose to send.
- The owner's display name and local part alone are not searched: a name is often the owner's
  own signature, and a local part ("john") is too common a word to replace.
- An address split across a ``format=flowed`` soft line break is not joined: clients break
  flowed lines at spaces, and an address has none. Nor across HTML tags
  (``owner@<span>owner.example</span>``): the bare domain is still replaced there.
- Multiparts nested deeper than ``MAX_DEPTH`` are kept as they are (no client nests so deep).
- International domains are compared as written (U-label and A-label forms are not mapped).
- A malformed message (a multipart without findable delimiters, fields broken by bare CR or LF)
  is rewritten as far as it can be read; whatever then still names the owner when the result is
  read back makes ``sanitise_reply`` refuse (DisclosesOwner) rather than send.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.policy
import functools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.utils import formataddr, getaddresses

MAX_DEPTH = 32

# Removed from a reply: trace, authentication and client fields, and the owner's own identity.
# Every ``X-`` field goes too. Autocrypt/OpenPGP carry the owner's address inside base64 key data
# a text search cannot see; Organization names the owner's employer; Resent-* and Delivered-To
# name mailboxes; msip_labels is Outlook's tenant label.
REPLY_REMOVED = frozenset((
    "received", "return-path", "dkim-signature", "authentication-results", "received-spf",
    "sender", "reply-to", "disposition-notification-to", "return-receipt-to", "cc", "bcc",
    "to", "from", "message-id", "user-agent", "delivered-to", "errors-to", "organization",
    "autocrypt", "openpgp", "face", "msip_labels",
))
REMOVED_PREFIXES = ("x-", "arc-", "resent-")
ORIGINAL_FROM = "X-Original-From"
ORIGINAL_REPLY_TO = "X-Original-Reply-To"
TEXT_TYPES = frozenset(("text/plain", "text/html"))
# Folds and RFC 2047-encodes what we write; "all": a short value is encoded too, not sent raw.
_WRITE = email.policy.SMTP.clone(refold_source="all")


class DisclosesOwner(ValueError):
    """A reply would show the owner's address to someone: ``names`` are those recipients.

    The text is meant for the owner (it becomes the SMTP refusal) and never names the owner."""

    def __init__(self, names: str, reason: str | None = None) -> None:
        self.names = names
        super().__init__(reason or (
            f"this reply is also addressed to {names}: that would disclose your own address "
            f"to them; a reply through the alias may go to its reply address only"))


@dataclass(frozen=True)
class Senders:
    """Who a message says it is from and where replies should go, each address as written."""

    from_address: str | None
    from_name: str
    reply_to: tuple[str, ...]


# --- the message as fields and parts ---------------------------------------------------------

_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext


@dataclass
class _Field:
    name: str  # lower case, "" for a line that is not a field
    raw: bytes  # the whole field as written: name, colon, value, folded lines, final CRLF

    @property
    def value(self) -> bytes:
        return self.raw.split(b":", 1)[1] if b":" in self.raw else self.raw

    def text(self) -> str:
        """The value unfolded, as written (encoded-words left as they are)."""
        return re.sub(r"\r?\n(?=[ \t])", "", self.value.decode("utf-8", "surrogateescape")).strip()


@dataclass
class _Part:
    fields: list[_Field]
    separator: bytes  # the empty line between fields and body (b"" when there is none)
    body: bytes  # a leaf's body; for a multipart, the preamble
    children: list[tuple[bytes, _Part]] = field(default_factory=list)  # (delimiter line, part)
    close: bytes = b""  # the close delimiter and the epilogue after it
    boundary: str | None = None

    def header(self):
        """The MIME fields read by the stdlib (which would stop at a malformed line: skipped)."""
        return BytesHeaderParser(policy=email.policy.compat32).parsebytes(
            b"".join(f.raw for f in self.fields if _FIELD_NAME.fullmatch(f.name)) + b"\r\n")

    def to_bytes(self) -> bytes:
        out = [f.raw for f in self.fields]
        out += [self.separator, self.body]
        for delimiter, child in self.children:
            out += [delimiter, child.to_bytes()]
        out.append(self.close)
        return b"".join(out)


def _split_fields(head: bytes) -> list[_Field]:
    fields: list[_Field] = []
    lines = [line + b"\r\n" for line in head.split(b"\r\n")]  # CRLF only: a bare CR is data
    lines[-1] = lines[-1][:-2]
    for line in filter(None, lines):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].raw += line
        else:
            name = line.split(b":", 1)[0] if b":" in line else b""
            fields.append(_Field(name.strip().decode("ascii", "replace").lower(), line))
    return fields


def without_claimed_results(message: bytes, authserv_id: str) -> bytes:
    """``message`` without the Authentication-Results fields that claim ``authserv_id``.

    RFC 8601 section 5: such a field that came from outside is a forgery (a sender writing
    ``dkim=pass`` in our name for the owner's mail program to believe), and dkimpy would read it
    into our ARC seal. Every other byte is kept."""
    end = message.find(b"\r\n\r\n")
    head, rest = (message[:end + 2], message[end + 2:]) if end >= 0 else (message, b"")
    if b"authentication-results:" not in head.lower():
        return message
    ours = authserv_id.lower()
    kept = [f for f in _split_fields(head)
            if not (f.name == "authentication-results" and _claimed_id(f.text()) == ours)]
    return b"".join(f.raw for f in kept) + rest


def _claimed_id(value: str) -> str:
    """The authserv-id an Authentication-Results value starts with (comments dropped)."""
    words = re.sub(r"\([^()]*\)", " ", value).split(";", 1)[0].split()
    return words[0].lower() if words else ""


def _parse(data: bytes, depth: int = 0) -> _Part:
    if data.startswith(b"\r\n"):
        part = _Part([], b"\r\n", data[2:])
    else:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return _Part(_split_fields(data), b"", b"")
        part = _Part(_split_fields(data[:end + 2]), b"\r\n", data[end + 4:])
    header = part.header()
    boundary = header.get_boundary() if header.get_content_maintype() == "multipart" else None
    if boundary and depth < MAX_DEPTH:
        _split_multipart(part, boundary, depth)
    return part


def _delimiters(boundary: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?:\A|\r\n)--" + re.escape(boundary.encode("utf-8", "surrogateescape"))
                      + rb"(--)?[ \t]*(?:\r\n|\Z)")


def _split_multipart(part: _Part, boundary: str, depth: int) -> None:
    """Cut a multipart body along its delimiter lines; without one it stays a leaf."""
    body = part.body
    matches = list(_delimiters(boundary).finditer(body))
    if not matches or matches[0].group(1):
        return
    part.boundary = boundary
    part.body = body[:matches[0].start()]
    for i, match in enumerate(matches):
        if match.group(1):  # the close delimiter: the rest is epilogue
            part.close = body[match.start():]
            return
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        part.children.append((match.group(), _parse(body[match.end():end], depth + 1)))


def _walk(part: _Part):
    yield part
    for _, child in part.children:
        yield from _walk(child)


# --- reading fields --------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t\r\n]+(?==\?)")


def _codec(charset: str | None) -> str:
    """A Python codec for a MIME charset; an unknown one is read byte for byte (latin-1), which
    still finds and replaces an ASCII address and gives every other byte back unchanged."""
    try:
        return codecs.lookup(charset or "us-ascii").name
    except (LookupError, ValueError):
        return "latin-1"


def _decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded (adjacent words joined); a broken word stays as written."""
    def one(match: re.Match[str]) -> str:
        charset, kind, text = match.groups()
        try:
            if kind in "qQ":
                data = binascii.a2b_qp(text.encode("ascii"), header=True)
            else:
                data = base64.b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, binascii.Error, UnicodeEncodeError):
            return match.group()
        return data.decode(_codec(charset.split("*")[0]), "replace")
    return _ENCODED_WORD.sub(one, _BETWEEN_WORDS.sub("", value))


def _addresses(fields: list[_Field], *names: str) -> list[tuple[str, str]]:
    values = [f.text() for f in fields if f.name in names]
    return [(_decode_words(name).strip(), address.strip())
            for name, address in getaddresses(values) if address.strip()]


def senders(message: bytes) -> Senders:
    """From's (first) address and display name, and Reply-To's addresses, as written."""
    fields = _parse(message).fields
    found = _addresses(fields, "from")
    name, address = found[0] if found else ("", None)
    return Senders(address, name, tuple(a for _, a in _addresses(fields, "reply-to")))


# --- forward ---------------------------------------------------------------------------------

def _printable(text: str) -> str:
    """Undecodable bytes (kept as surrogates while reading) as "?", for what we write."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _readable(name: str, address: str) -> str:
    """The display name the owner sees: the sender's name and address, with no ``@`` in it (a
    client that shows only the name must not offer the original address to reply to)."""
    shown = _printable(address).replace("@", " at ")
    name = _printable(name)
    name = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", name).split()).replace("@", " at ")
    name = name.strip("\"' ")
    if not name or name.lower() == shown.lower():
        return shown
    return f"{name} ({shown})"


def _address_field(name: str, entries: list[tuple[str, str]]) -> bytes:
    try:
        value = ", ".join(str(Address(display_name=display, addr_spec=address))
                          for display, address in entries)
        return _WRITE.fold(name, value).encode("utf-8")
    except Exception:  # noqa: BLE001 - the stdlib's folder fails on some odd names
        value = ", ".join(formataddr((display, address), charset="utf-8")
                          for display, address in entries)
        return f"{name}: {value}\r\n".replace("\n ", "\r\n ").encode("utf-8")


def _text_field(name: str, text: str) -> bytes:
    """An unstructured field (Subject), RFC 2047-encoded where it is not ASCII, folded."""
    try:
        return _WRITE.fold(name, text).encode("utf-8")
    except Exception:  # noqa: BLE001 - the stdlib's folder fails on some odd text
        encoded = Header(text, "utf-8", header_name=name).encode(linesep="\r\n")
        return f"{name}: {encoded}\r\n".encode("utf-8")


def rewrite_forward(message: bytes, reverse: Mapping[str, str]) -> bytes:
    """From and Reply-To pointed at reverse addresses; every other byte as it came.

    ``reverse`` maps each address ``senders`` found (lower case) to its reverse address; an
    address missing from it raises KeyError. Only From's first address is kept (From names one
    author in practice; a second From field or mailbox is kept in X-Original-From only). Fields
    named X-Original-From / X-Original-Reply-To that came with the message are dropped, so that
    the owner sees only ours. A message without a From address is returned unchanged."""
    root = _parse(message)
    author = _addresses(root.fields, "from")
    if not author:
        return message
    reply_to = _addresses(root.fields, "reply-to")
    out: list[_Field] = []
    placed = set()
    for f in root.fields:
        if f.name in ("x-original-from", "x-original-reply-to"):
            continue
        if f.name not in ("from", "reply-to"):
            out.append(f)
            continue
        if f.name not in placed:
            placed.add(f.name)
            entries = author[:1] if f.name == "from" else reply_to
            rewritten = [(_readable(name, address), reverse[address.lower()])
                         for name, address in entries]
            if rewritten:
                out.append(_Field(f.name, _address_field(
                    "From" if f.name == "from" else "Reply-To", rewritten)))
        original = ORIGINAL_FROM if f.name == "from" else ORIGINAL_REPLY_TO
        out.append(_Field(original.lower(), original.encode("ascii") + b":" + f.value))
    root.fields = out
    return root.to_bytes()


# --- reply -----------------------------------------------------------------------------------

@functools.cache
def _public_suffixes():
    from publicsuffixlist import PublicSuffixList
    return PublicSuffixList()


def _organisational(domain: str) -> str:
    """mail.owner.example -> owner.example: a signature's www.owner.example names the owner's
    organisation as surely as their address does."""
    try:
        return _public_suffixes().privatesuffix(domain.lower()) or domain
    except Exception:  # noqa: BLE001 - an odd name is searched for as written
        return domain


def _loose(text: str) -> str:
    """A pattern for ``text`` with any character also written percent-encoded (``%40`` in a
    mailto:) or as an HTML character reference (``&#64;``, ``&commat;``); used IGNORECASE."""
    named = {"@": "|&commat;", ".": "|&period;", "-": "|&hyphen;|&dash;"}
    out = []
    for ch in text:
        percent = "".join(f"%{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
        out.append(f"(?:{re.escape(ch)}|{percent}|&\\#0*{ord(ch)};|&\\#x0*{ord(ch):x};"
                   f"{named.get(ch, '')})")
    return "".join(out)


class _Rewriter:
    """What is searched for in one reply and what it becomes."""

    def __init__(self, alias: str, original_sender: str, reverse: str, owner: str,
                 message_id_domain: str) -> None:
        self.alias = alias
        self.alias_domain = alias.rpartition("@")[2]
        self.message_id_domain = message_id_domain
        self.addresses = re.compile("|".join(_loose(a) for a in sorted({owner, reverse},
                                                                       key=len, reverse=True)),
                                    re.IGNORECASE)
        owner_domain = owner.rpartition("@")[2]
        domain = _organisational(owner_domain) if owner_domain else ""
        # the owner at the alias's own domain: nothing about the domain is secret then
        self.domain = (re.compile(_loose(domain), re.IGNORECASE)
                       if domain and domain.lower() != self.alias_domain.lower() else None)
        # these may contain the owner's domain (a sender at the same provider) and stay
        protected = {alias, original_sender, self.alias_domain, message_id_domain}
        self.protected = re.compile("|".join(_loose(p) for p in protected if p), re.IGNORECASE)

    def _domains(self, text: str) -> list[re.Match[str]]:
        if self.domain is None:
            return []
        kept = [m.span() for m in self.protected.finditer(text)]
        return [m for m in self.domain.finditer(text)
                if not any(start <= m.start() and m.end() <= end for start, end in kept)]

    def discloses(self, text: str) -> bool:
        return bool(self.addresses.search(text) or self._domains(text))

    def field_discloses(self, f: _Field) -> bool:
        text = f.text()
        return self.discloses(text) or self.discloses(_decode_words(text))

    def rewrite(self, text: str) -> str:
        """Owner's and reverse address -> alias; then any bare owner's domain left (a
        signature's "owner.example", a colleague at it) -> the alias's domain."""
        text = self.addresses.sub(self._alias_for, text)
        for m in reversed(self._domains(text)):
            text = text[:m.start()] + self.alias_domain + text[m.end():]
        return text

    def _alias_for(self, match: re.Match[str]) -> str:
        """The alias, with its ``@`` percent-encoded where the match had it so (a mailto: URL,
        an RFC 2231 parameter), as written elsewhere."""
        return self.alias.replace("@", "%40") if "%40" in match.group().lower() else self.alias

    def rewrite_bytes(self, data: bytes) -> bytes:
        """For what is read as ASCII: a multipart's preamble and epilogue, a field's raw value."""
        text = data.decode("utf-8", "surrogateescape")
        new = self.rewrite(text)
        return data if new == text else new.encode("utf-8", "surrogateescape")

    def new_id(self) -> str:
        return f"{secrets.token_hex(16)}@{self.message_id_domain}"


_NAMED_BY = {"content-type": "name", "content-disposition": "filename"}


def _set_param(f: _Field, name: str, value: str) -> _Field:
    """The field with parameter ``name`` set to ``value`` (quoted), added when absent."""
    pattern = re.compile(rb";\s*" + name.encode() + rb"\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;\s]*)",
                         re.IGNORECASE)
    new = f'; {name}="{value}"'.encode()
    raw, count = pattern.subn(lambda m: new, f.raw, count=1)
    if not count:
        raw = f.raw.rstrip(b"\r\n") + new + b"\r\n"
    return _Field(f.name, raw)


def _is_mime_field(f: _Field) -> bool:
    return f.name.startswith("content-") or f.name == "mime-version"


def _unsplit(part: _Part, header) -> bool:
    """A multipart whose body has no delimiter we could find (or nested beyond MAX_DEPTH)."""
    return not part.children and header.get_content_maintype() == "multipart"


def _is_attachment(header) -> bool:
    return (header.get_content_type() not in TEXT_TYPES or header.get_filename() is not None
            or header.get_content_disposition() == "attachment")


def _transfer_encoding(header) -> str:
    return str(header.get("Content-Transfer-Encoding") or "7bit").strip().lower()


def _decode_body(body: bytes, cte: str) -> bytes:
    if cte == "base64":  # as leniently as a mail client: stray characters and padding ignored
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        data = data[:len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _encode_body(data: bytes, cte: str, original: bytes) -> bytes:
    """Encoded as the part was, with the original's trailing line ends."""
    trailing = original[len(original.rstrip(b"\r\n")):]
    if cte == "base64":
        encoded = base64.b64encode(data)
        lines = [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
        return b"\r\n".join(lines) + trailing
    if cte == "quoted-printable":
        encoded = binascii.b2a_qp(data, istext=True)  # soft breaks as the text's line ends
        return re.sub(rb"(?<!\r)\n", b"\r\n", encoded).rstrip(b"\r\n") + trailing
    return data


class _ReplySanitiser:
    def __init__(self, rewriter: _Rewriter) -> None:
        self.r = rewriter
        self.content_ids: dict[str, str] = {}  # old id (lower) -> new id

    # parts

    def part(self, part: _Part, top: bool = False) -> None:
        """A part's fields and body, and its children's. The message's own fields other than
        its MIME ones (``top``) are left to ``top_field``."""
        header = part.header()
        if part.boundary and self.r.discloses(part.boundary):
            self.new_boundary(part)
        fields = []
        for f in part.fields:
            if top and not _is_mime_field(f):
                fields.append(f)
            elif (kept := self.part_field(f, header)) is not None:
                fields.append(kept)
        part.fields = fields
        if part.children:
            part.body = self.r.rewrite_bytes(part.body)  # preamble
            part.close = self.r.rewrite_bytes(part.close)  # epilogue
            for _, child in part.children:
                self.part(child)
        elif _unsplit(part, header):  # its delimiters broken: read as a client might, as text
            part.body = self.r.rewrite_bytes(part.body)
        elif part.separator and not _is_attachment(header):
            self.text(part, header)

    def new_boundary(self, part: _Part) -> None:
        new = f"=_{secrets.token_hex(12)}"
        old = re.escape(part.boundary.encode("utf-8", "surrogateescape"))
        part.fields = [_set_param(f, "boundary", new) if f.name == "content-type" else f
                       for f in part.fields]
        part.children = [(re.sub(b"--" + old, lambda m: b"--" + new.encode(), delimiter, 1),
                          child) for delimiter, child in part.children]
        part.close = re.sub(b"--" + old, lambda m: b"--" + new.encode(), part.close, 1)
        part.boundary = new

    def part_field(self, f: _Field, header) -> _Field | None:
        if f.name == "content-id":
            old = f.text().strip("<> ")
            if self.r.discloses(old):
                new = self.content_ids.setdefault(old.lower(), self.r.new_id())
                return _Field(f.name, b"Content-ID: <" + new.encode() + b">\r\n")
            return f
        if not self.r.field_discloses(f):
            return f
        if f.name in _NAMED_BY and "=?" in f.text():
            f = self._renamed(f, header)
        fixed = _Field(f.name, f.raw[:len(f.raw) - len(f.value)] + self.r.rewrite_bytes(f.value))
        if not self.r.field_discloses(fixed):
            return fixed
        if f.name == "content-type":  # e.g. an encoded-word name=: keep type and charset only
            raw = f"Content-Type: {header.get_content_type()}"
            if header.get_content_charset():
                raw += f'; charset="{header.get_content_charset()}"'
            if header.get_boundary():
                raw += f'; boundary="{header.get_boundary()}"'
            return _Field(f.name, raw.encode("utf-8", "surrogateescape") + b"\r\n")
        return None

    def _renamed(self, f: _Field, header) -> _Field:
        """A part's file name written as an encoded-word inside a parameter (not what RFC 2047
        allows, but what many clients write) is rewritten as it reads: left to the raw rewrite,
        the owner's domain would go and the local part before it stay."""
        param = _NAMED_BY[f.name]
        value = header.get_param(param, header=f.name)
        if not isinstance(value, str) or "=?" not in value:
            return f
        new = self.r.rewrite(_decode_words(value))
        if not new.isascii():
            new = Header(new, "utf-8").encode()
        return _set_param(f, param, new.replace("\\", "\\\\").replace('"', '\\"'))

    def text(self, part: _Part, header) -> None:
        cte = _transfer_encoding(header)
        charset = header.get_content_charset()
        codec = _codec(charset)
        decoded = _decode_body(part.body, cte)
        try:
            text = decoded.decode(codec, "surrogateescape")
        except UnicodeDecodeError:  # a codec that cannot skip bytes: read it byte for byte
            codec, text = "latin-1", decoded.decode("latin-1")
        new = text
        for old, replacement in self.content_ids.items():  # Outlook's plain text: [cid:...]
            new = re.sub("cid:" + _loose(old), lambda m: "cid:" + replacement, new,
                         flags=re.IGNORECASE)
        new = self.r.rewrite(new)
        if new == text:
            return
        try:
            data = new.encode(codec, "surrogateescape")
        except UnicodeEncodeError:  # the charset cannot hold the replacement
            data = new.encode("utf-8", "surrogateescape")
            part.fields = [_set_param(f, "charset", "utf-8") if f.name == "content-type" else f
                           for f in part.fields]
            if not any(f.name == "content-type" for f in part.fields):
                part.fields.append(_Field("content-type",
                                          b'Content-Type: text/plain; charset="utf-8"\r\n'))
        if cte in ("7bit", "") and not data.isascii():
            cte = "quoted-printable"
            part.fields = [f for f in part.fields if f.name != "content-transfer-encoding"]
            part.fields.append(_Field("content-transfer-encoding",
                                      b"Content-Transfer-Encoding: quoted-printable\r\n"))
        part.body = _encode_body(data, cte, part.body)

    # the top-level fields

    def top_field(self, f: _Field) -> _Field | None:
        if f.name in REPLY_REMOVED or f.name.startswith(REMOVED_PREFIXES) or not f.name:
            return None
        if f.name in ("subject", "thread-topic", "comments", "keywords"):
            if not self.r.field_discloses(f):
                return f
            name = f.raw.split(b":", 1)[0].decode("ascii", "replace").strip()
            text = self.r.rewrite(_decode_words(f.text()))
            text = _printable(text)
            return _Field(f.name, _text_field(name, text))
        if f.name in ("references", "in-reply-to"):
            ids = re.findall(r"<[^<>]*>", f.text())
            kept = [i for i in ids if not self.r.discloses(i)]
            if kept != ids and kept:
                name = "References" if f.name == "references" else "In-Reply-To"
                value = f"{name}: " + "\r\n ".join(kept) + "\r\n"
                f = _Field(f.name, value.encode("utf-8", "surrogateescape"))
            return None if not kept or self.r.field_discloses(f) else f  # a broken id: all
        if _is_mime_field(f):
            return f  # the root part's own fields: done with the parts
        return None if self.r.field_discloses(f) else f


def _recipients(fields: list[_Field], reverse_address: str) -> list[str]:
    others: list[str] = []
    for _, address in _addresses(fields, "to", "cc", "bcc"):
        if address.lower() != reverse_address.lower() and address not in others:
            others.append(address)
    return others


def sanitise_reply(message: bytes, *, alias_address: str, original_sender: str,
                   reverse_address: str, owner_address: str, message_id_domain: str) -> bytes:
    """The owner's reply as the original sender gets it: from the alias, naming no owner.

    Raises DisclosesOwner when To, Cc or Bcc name anyone but the reverse address: the owner's
    own system sends them the reply from the owner's address, so a reply-all through the alias
    is refused and the owner told why, rather than half-sent.

    From becomes ``<alias_address>``, To ``<original_sender>``, Message-ID a new random one at
    ``message_id_domain``; trace, authentication and client fields, Cc, Bcc and every ``X-``
    field are removed (``REPLY_REMOVED``); References and In-Reply-To lose the message ids at
    the owner's domain; any other field that still names the owner is removed, except Subject
    (and Thread-Topic, Comments, Keywords), whose decoded text is rewritten and encoded again.

    In Subject and in every text/plain and text/html part that is not an attachment, the owner's
    address and the reverse address, in any case, percent-encoded or as HTML character
    references, become the alias address; a rewritten part keeps its transfer encoding and
    charset (utf-8 when the charset cannot hold the alias address). Content-IDs that name the
    owner's domain get new ids at ``message_id_domain``, and the ``cid:`` references in HTML
    parts follow them; MIME boundaries that name it are replaced.

    Then the bare domain: if the owner's (organisational) domain still appears in a text part
    (a signature's "owner.example", a colleague's address at it, a www. link), each occurrence
    becomes the alias's domain. That breaks those links and addresses on purpose: the domain
    names the owner's organisation, and often the owner. Occurrences inside the alias address
    and inside the original sender's own address (a sender at the same provider) stay.

    Finally the result is searched again as the sender will read it (fields decoded, text parts
    decoded); if the owner's address or domain were still there, DisclosesOwner is raised
    rather than the reply sent."""
    root = _parse(message)
    others = _recipients(root.fields, reverse_address)
    if others:
        raise DisclosesOwner(", ".join(others))
    rewriter = _Rewriter(alias_address, original_sender, reverse_address, owner_address,
                         message_id_domain)
    sanitiser = _ReplySanitiser(rewriter)
    for part in _walk(root):  # Content-IDs first: a cid: reference may come before its part
        for f in part.fields:
            if f.name == "content-id" and rewriter.discloses(f.text()):
                sanitiser.content_ids.setdefault(f.text().strip("<> ").lower(),
                                                 rewriter.new_id())
    sanitiser.part(root, top=True)
    kept = [sanitiser.top_field(f) for f in root.fields]
    root.fields = [
        _Field("from", f"From: <{alias_address}>\r\n".encode("utf-8")),
        _Field("to", f"To: <{original_sender}>\r\n".encode("utf-8")),
        _Field("message-id", f"Message-ID: <{rewriter.new_id()}>\r\n".encode("utf-8")),
    ] + [f for f in kept if f is not None]
    result = root.to_bytes()
    if _still_discloses(result, rewriter):
        raise DisclosesOwner(original_sender, "this reply names your own address in a place "
                             "that could not be rewritten; it was not sent")
    return result


def _still_discloses(message: bytes, rewriter: _Rewriter) -> bool:
    """The reply read back as the sender's client shows it: every field, every text part."""
    for part in _walk(_parse(message)):
        if any(rewriter.field_discloses(f) for f in part.fields):
            return True
        if part.children and rewriter.discloses(
                (part.body + part.close).decode("utf-8", "surrogateescape")):
            return True
        header = part.header()
        if _unsplit(part, header) and rewriter.discloses(
                part.body.decode("utf-8", "surrogateescape")):
            return True
        if part.children or not part.separator or _is_attachment(header):
            continue
        cte = _transfer_encoding(header)
        text = _decode_body(part.body, cte).decode(_codec(header.get_content_charset()),
                                                   "replace")
        if rewriter.discloses(text):
            return True
    return False
