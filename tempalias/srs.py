"""The Sender Rewriting Scheme: forwarded mail leaves with an envelope sender of our domain.

A forwarder that kept the original sender would fail SPF at the target. SRS rewrites
``local@origin`` to ``SRS0=HHHH=TT=origin=local@our-domain`` (HHHH: an HMAC over the rest, TT: the
day, modulo 1024), so SPF checks our domain, and a bounce to that address can be verified and sent
back to the original sender. An address that is already SRS0 of another forwarder becomes SRS1
(Shevek's "guarded" scheme, as libsrs2 and postsrsd do), which keeps the address from growing on
every hop. The format is the one of libsrs2, so operators can read it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

SECRET_FILE = "srs_secret"
HASH_LENGTH = 4
MAX_AGE_DAYS = 21
_TIME_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TIME_SLOTS = len(_TIME_ALPHABET) ** 2  # 1024 days
_SECONDS_PER_DAY = 86400


class InvalidSRS(ValueError):
    """The address looks like SRS but its hash or its age does not check out."""


def load_or_create_secret(data_dir: str) -> str:
    """The secret in ``data_dir/srs_secret``; created once (mode 0600) when there is none.

    Kept across restarts, because bounces to addresses made before a restart must still verify.
    Written whole under a temporary name and then linked into place, so that worker processes
    starting at the same moment all end up with the one secret that won, never a half-written one.
    """
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, SECRET_FILE)
    if not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process was first: use its secret
        finally:
            os.unlink(temporary)
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
        mac = hmac.new(self._key, "".join(parts).lower().encode("utf-8"), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]

    def _check_hash(self, given: str, *parts: str) -> bool:
        # Compared case-insensitively, as libsrs2 does: some MTAs change the case of local parts.
        return hmac.compare_digest(given.lower().encode(), self._hash(*parts).lower().encode())

    def forward(self, sender: str) -> str:
        """The envelope sender to use when forwarding mail from ``sender`` (``""`` stays ``""``)."""
        if not sender:
            return ""
        local, _, domain = sender.rpartition("@")
        if not local:
            raise ValueError("an SRS sender needs local@domain")
        if domain.lower() == self.domain.lower() and is_srs(local):
            return sender  # ours already (a bounce we are reversing): leave it as it is
        upper = local[:5].upper()
        if upper.startswith("SRS0") and local[4:5] in "=+-":
            opaque = local[4:]  # "=HHHH=TT=host=user": another forwarder's SRS0
            return f"SRS1={self._hash(domain, opaque)}={domain}={opaque}@{self.domain}"
        if upper.startswith("SRS1") and local[4:5] in "=+-":
            # SRS1=HHHH=first-hop==opaque: keep the first hop, re-sign it as ours.
            try:
                _, first_hop, opaque = local[5:].split("=", 2)
            except ValueError:
                first_hop = ""
            if first_hop:
                opaque = "=" + opaque if not opaque.startswith("=") else opaque
                return f"SRS1={self._hash(first_hop, opaque)}={first_hop}={opaque}@{self.domain}"
        stamp = _day_stamp(self._clock())
        return f"SRS0={self._hash(stamp, domain, local)}={stamp}={domain}={local}@{self.domain}"

    def reverse(self, local: str) -> str:
        """The address a bounce to ``local@<our domain>`` goes back to; raises InvalidSRS."""
        upper = local[:4].upper()
        if upper == "SRS0":
            parts = local[5:].split("=", 3)
            if len(parts) != 4 or not all(parts):
                raise InvalidSRS("malformed SRS0 address")
            given, stamp, domain, user = parts
            if not self._check_hash(given, stamp, domain, user):
                raise InvalidSRS("SRS0 hash does not match")
            age = _stamp_age_days(stamp, self._clock())
            if age is None or age > MAX_AGE_DAYS:
                raise InvalidSRS("SRS0 address has expired")
            return f"{user}@{domain}"
        if upper == "SRS1":
            parts = local[5:].split("=", 2)
            if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].startswith("="):
                raise InvalidSRS("malformed SRS1 address")
            given, first_hop, opaque = parts
            if not self._check_hash(given, first_hop, opaque):
                raise InvalidSRS("SRS1 hash does not match")
            return f"SRS0{opaque}@{first_hop}"
        raise InvalidSRS("not an SRS address")


def is_srs(local: str) -> bool:
    """Whether a local part is shaped like an SRS address (SRS0=... or SRS1=...)."""
    return len(local) > 5 and local[:4].upper() in ("SRS0", "SRS1") and local[4] in "=+-"
