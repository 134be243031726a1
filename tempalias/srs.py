"""The Sender Rewriting Scheme: forwarded mail leaves with an envelope sender of our domain.

A forwarder that kept the original sender would fail SPF at the target. SRS rewrites
``local@origin`` to ``SRS0=HASH=TT=ALIAS=origin=local@our-domain`` (HASH: an HMAC over the rest,
TT: the day, modulo 1024, ALIAS: the alias the message came through), so SPF checks our domain, and
a bounce to that address can be verified and answered to the original sender. An address that is
already SRS0 of another forwarder becomes SRS1 (Shevek's "guarded" scheme, as libsrs2 and postsrsd
do), which keeps the address from growing on every hop.

The layout is libsrs2's with one field more, ALIAS: the report we send back in place of a bounce
names the alias as the recipient (RFC 3464 Final-Recipient), and the address is the only thing we
keep about a forwarded message. Only we ever take these addresses apart; another forwarder treats
everything after ``SRS0`` as opaque. The hash is ten base32 characters, 50 bits: one case, so an
MTA that folds the case of a local part loses none of it, and too many values to guess (a client
is cut off after a few refused recipients). An address lives ``MAX_AGE_DAYS``: bounces come
within the queue lifetime of the MTAs on the way (five days by default in Postfix and Sendmail).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass

from tempalias.secretfile import create_once

SECRET_FILE = "srs_secret"
HASH_LENGTH = 10  # base32 characters: 50 bits
MAX_AGE_DAYS = 5
_TIME_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TIME_SLOTS = len(_TIME_ALPHABET) ** 2  # 1024 days
_SECONDS_PER_DAY = 86400
_ALIAS_FIELD = re.compile(r"^[A-Za-z0-9]{1,64}$")
# An alias at a custom domain (``local@DOMAIN``: dots, dashes, '=' and more) travels as this mark
# and the id in base32 without padding: letters and digits in one case, as the hash is.
CUSTOM_ALIAS_MARK = "_"
_CUSTOM_FIELD = re.compile(r"^_[A-Za-z2-7]{2,}$")


def _alias_field(alias: str) -> str:
    """The ALIAS field of an address for mail through ``alias``."""
    if _ALIAS_FIELD.match(alias):
        return alias
    if "@" in alias and alias.isascii():
        encoded = base64.b32encode(alias.lower().encode("ascii")).decode("ascii")
        return CUSTOM_ALIAS_MARK + encoded.rstrip("=").lower()
    raise ValueError("an alias id is letters and digits, or local@domain at a custom domain")


def _alias_of_field(field: str) -> str:
    """The alias id an ALIAS field names; raises InvalidSRS."""
    if not _CUSTOM_FIELD.match(field):
        return field.lower()
    encoded = field[1:].upper()
    try:
        return base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise InvalidSRS("malformed alias in an SRS address") from None


class InvalidSRS(ValueError):
    """The address looks like SRS but its hash or its age does not check out."""


@dataclass(frozen=True)
class ReturnPath:
    """What one of our SRS addresses stands for: where a report goes, and about which alias."""

    sender: str  # the original envelope sender (another forwarder's address for SRS1)
    alias: str  # the alias id the message was sent to (or "postmaster")
    hash: str  # the address's hash, lower case: identifies the address (its report budget)
    reply: bool = False  # the bounce is of a reply through the alias; ``sender`` is its owner


def load_or_create_secret(data_dir: str) -> str:
    """The secret in ``data_dir/srs_secret``; created once (mode 0600) when there is none.

    Kept across restarts, because bounces to addresses made before a restart must still verify;
    made by ``secretfile.create_once``, so that workers starting at once share one secret.
    """
    path = os.path.join(data_dir, SECRET_FILE)
    create_once(path, lambda: (secrets.token_urlsafe(32) + "\n").encode("ascii"))
    with open(path, encoding="ascii") as handle:
        secret = handle.read().strip()
    if not secret:
        raise OSError(f"{path} is empty; delete it to have a new SRS secret generated")
    return secret


def _day_stamp(now: float) -> str:
    day = int(now // _SECONDS_PER_DAY) % _TIME_SLOTS
    return _TIME_ALPHABET[day >> 5] + _TIME_ALPHABET[day & 31]


def _stamp_age_days(stamp: str, now: float) -> int | None:
    stamp = stamp.upper()
    if len(stamp) != 2 or any(char not in _TIME_ALPHABET for char in stamp):
        return None
    then = (_TIME_ALPHABET.index(stamp[0]) << 5) | _TIME_ALPHABET.index(stamp[1])
    today = int(now // _SECONDS_PER_DAY) % _TIME_SLOTS
    return (today - then) % _TIME_SLOTS


class SRS:
    """Forward and reverse rewriting under one secret, for addresses at ``domain``."""

    def __init__(self, secret: str, domain: str, clock=time.time) -> None:
        if not secret:
            raise ValueError("the SRS secret must not be empty")
        self._key = secret.encode("utf-8")
        self.domain = domain
        self._clock = clock

    def _hash(self, *parts: str) -> str:
        # Fields joined with a separator no field can hold unescaped, so that moving text from one
        # field to the next changes the hash.
        text = "\0".join(parts).lower().encode("utf-8")
        mac = hmac.new(self._key, text, hashlib.sha256).digest()
        return base64.b32encode(mac).decode("ascii")[:HASH_LENGTH].lower()

    def _check_hash(self, given: str, *parts: str) -> bool:
        # Compared case-insensitively, as libsrs2 does: some MTAs change the case of local parts.
        return hmac.compare_digest(given.lower().encode(), self._hash(*parts).encode())

    def forward(self, sender: str, alias: str, domain: str | None = None) -> str:
        """The envelope sender for mail from ``sender`` forwarded through ``alias`` (an alias id),
        at ``domain`` (default: ours); the null sender ``""`` stays null. A reply through an
        alias goes out with the alias's own address as ``sender``: its bounce names nothing but
        the alias, and is answered to the alias's owner."""
        if not sender:
            return ""
        at_domain = domain or self.domain
        local, _, domain = sender.rpartition("@")
        if not local:
            raise ValueError("an SRS sender needs local@domain")
        alias = _alias_field(alias)
        upper = local[:5].upper()
        if upper.startswith("SRS0") and local[4:5] in "=+-":
            opaque = local[4:]  # "=HHHH=TT=host=user": another forwarder's SRS0
            return (f"SRS1={self._hash(alias, domain, opaque)}={alias}={domain}={opaque}"
                    f"@{at_domain}")
        if upper.startswith("SRS1") and local[4:5] in "=+-":
            # SRS1=HHHH=first-hop==opaque: keep the first hop, re-sign it as ours.
            fields = local[5:].split("=")
            if "" in fields[1:]:
                cut = fields.index("", 1)
                first_hop, opaque = fields[cut - 1], "=" + "=".join(fields[cut + 1:])
                if first_hop:
                    return (f"SRS1={self._hash(alias, first_hop, opaque)}={alias}={first_hop}="
                            f"{opaque}@{at_domain}")
        stamp = _day_stamp(self._clock())
        return (f"SRS0={self._hash(stamp, alias, domain, local)}={stamp}={alias}={domain}={local}"
                f"@{at_domain}")

    def reverse(self, local: str) -> ReturnPath:
        """What a bounce to ``local@<our domain>`` is about; raises InvalidSRS."""
        upper = local[:4].upper()
        if upper == "SRS0" and local[4:5] == "=":
            parts = local[5:].split("=", 4)
            if len(parts) != 5 or not all(parts):
                raise InvalidSRS("malformed SRS0 address")
            given, stamp, alias, domain, user = parts
            if not self._check_hash(given, stamp, alias, domain, user):
                raise InvalidSRS("SRS0 hash does not match")
            age = _stamp_age_days(stamp, self._clock())
            if age is None or age > MAX_AGE_DAYS:
                raise InvalidSRS("SRS0 address has expired")
            return ReturnPath(f"{user}@{domain}", _alias_of_field(alias), given.lower())
        if upper == "SRS1" and local[4:5] == "=":
            parts = local[5:].split("=", 3)
            if len(parts) != 4 or not all(parts[:3]) or not parts[3].startswith("="):
                raise InvalidSRS("malformed SRS1 address")
            given, alias, first_hop, opaque = parts
            if not self._check_hash(given, alias, first_hop, opaque):
                raise InvalidSRS("SRS1 hash does not match")
            return ReturnPath(f"SRS0{opaque}@{first_hop}", _alias_of_field(alias), given.lower())
        raise InvalidSRS("not an SRS address")


def is_srs(local: str) -> bool:
    """Whether a local part is shaped like an SRS address (SRS0=... or SRS1=...)."""
    return len(local) > 5 and local[:4].upper() in ("SRS0", "SRS1") and local[4] in "=+-"
