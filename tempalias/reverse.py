"""The shape of a reverse (reply) address: how a reply finds its way back through an alias.

When an alias that lets its owner reply forwards a message, each sender (From, Reply-To) is
shown to the owner as a reverse address at the alias's domain; the owner's reply to it goes out
from the alias. Its local part is::

    r=RANDOM=FIELD

- RANDOM: 16 characters of ``[a-z2-7]`` (80 bits), one per sender of one alias, kept in the
  alias's ``revs`` hash (``tempalias/store/keys.py``): unguessable, so nobody but the owner can
  write to the sender through the alias, and the address says nothing of the sender.
- FIELD: the alias id (``k3x9qa``) for an alias at one of our domains; for an alias
  ``local@DOMAIN`` at a custom domain, the base32 (lower case, no padding) of ``local``, since a
  chosen local part may hold characters (``=``, ``.``, ``+``) that would make the address
  ambiguous; its domain is the address's own.

The address is at the alias's domain (the domain it was made at; our primary domain for an alias
made before several domains). Local parts are compared in any case. Every local part starting with
``r=`` belongs to reply addresses: no alias may have one (ids at our domains are letters and
digits; a chosen local part starting with ``r=`` is refused when it is created).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets

PREFIX = "r="
RANDOM_BYTES = 10  # 80 bits: base32 writes them as 16 characters of [a-z2-7], no padding
RANDOM_LENGTH = 16
_RANDOM = rf"[a-z2-7]{{{RANDOM_LENGTH}}}"
RANDOM_SHAPE = re.compile(_RANDOM)
_OURS = re.compile(rf"r=({_RANDOM})=([a-z0-9]{{1,64}})")
_CUSTOM = re.compile(rf"r=({_RANDOM})=([a-z2-7]{{2,103}})")  # base32 of 1 to 64 characters

__all__ = ["PREFIX", "RANDOM_LENGTH", "RANDOM_SHAPE", "is_reverse", "new_random",
           "parse_reverse", "reverse_local"]


def new_random() -> str:
    """A fresh RANDOM part: 80 bits from the OS, as 16 characters of ``[a-z2-7]``."""
    return _encode_bytes(secrets.token_bytes(RANDOM_BYTES))


def _encode_bytes(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _encode(local: str) -> str:
    return _encode_bytes(local.encode("utf-8"))


def _decode(field: str) -> str | None:
    padded = field.upper() + "=" * (-len(field) % 8)
    try:
        local = base64.b32decode(padded).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if _encode(local) != field:  # not the one spelling we write (stray bits at the end)
        return None
    return local


def reverse_local(random: str, alias_id: str) -> str:
    """The local part of the reverse address ``random`` of ``alias_id`` (``k3x9qa`` or
    ``local@DOMAIN``); its domain is the alias's."""
    local, at, _domain = alias_id.lower().rpartition("@")
    field = _encode(local) if at else alias_id.lower()
    return f"{PREFIX}{random.lower()}={field}"


def parse_reverse(local: str, domain: str, ours: bool) -> tuple[str, str] | None:
    """(alias id, RANDOM) of the reverse address ``local@domain``, or None when ``local`` is not
    of that shape. ``ours``: ``domain`` is one of the operator's domains (the FIELD is the id),
    else a custom domain (the FIELD is its alias's local part, base32; the id is
    ``local@domain``, the domain lower-cased as given, which the caller gives as its A-label).
    Whether that alias exists, and takes replies, is the store's to say."""
    candidate = local.lower()
    if ours:
        found = _OURS.fullmatch(candidate)
        return (found.group(2), found.group(1)) if found else None
    found = _CUSTOM.fullmatch(candidate)
    if not found:
        return None
    alias_local = _decode(found.group(2))
    if alias_local is None:
        return None
    return f"{alias_local}@{domain.lower()}", found.group(1)


def is_reverse(local: str) -> bool:
    """Whether ``local`` is in the reply addresses' namespace: it starts with ``r=`` (any case).
    Such a local part is never an alias's; ``parse_reverse`` says whether it is well formed."""
    return local[:len(PREFIX)].lower() == PREFIX
