"""DKIM signatures and ARC seals on the mail we send, made by dkimpy with OpenSSL's RSA.

``Signer.sign`` gives the DKIM-Signature header(s) of a message we send from one of our domains
(relaxed/relaxed, rsa-sha256, plus ed25519-sha256 when there is that key); ``Signer.seal`` gives
the ARC set (RFC 8617) of a message we forward, from our own Authentication-Results line. Both
return header lines to put in front of the message; neither changes it.

dkimpy's RSA is pure Python: one 2048-bit signature is a modular exponentiation in Python
integers, about 10 ms, and a sealed and signed reply needs three. PKCS#1 v1.5 signatures are
deterministic, so OpenSSL (through ``cryptography``) gives the very same bytes in a small
fraction of that: on import, this module puts ``_openssl_sign`` in the place of dkimpy's
``RSASSA_PKCS1_v1_5_sign``. It builds the key from the numbers dkimpy parsed (kept, one per key),
so dkimpy still decides everything else (canonicalisation, hashing, header layout). It also
keeps dkimpy's parse of the PEM key (``_parsed_key``) instead of parsing it again per signature.
"""

from __future__ import annotations

import functools

import logging
import re
from typing import Any

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from tempalias.dkimkeys import SigningKeys

log = logging.getLogger(__name__)

# What is signed, each instance the message has (RFC 6376 5.4.1's list, and those a reply
# thread needs); From once more than it has (oversigned), so that no second From can be added.
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"in-reply-to", b"references", b"mime-version", b"content-type",
                  b"content-transfer-encoding")
OVERSIGNED_HEADERS = (b"from",)
CANONICALIZATION = (b"relaxed", b"relaxed")
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}

_dkimpy_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign
_dkimpy_parse_pem = dkim.crypto.parse_pem_private_key
_openssl_keys: dict[tuple[int, int], rsa.RSAPrivateKey] = {}


class SigningError(Exception):
    """dkimpy could not sign or seal this message (it could not parse it); the message says
    why."""


def _openssl_key(private_key: dict[str, Any]) -> rsa.RSAPrivateKey:
    """The OpenSSL key of dkimpy's parsed numbers, made once per key."""
    cache_key = (private_key["modulus"], private_key["privateExponent"])
    key = _openssl_keys.get(cache_key)
    if key is None:
        public = rsa.RSAPublicNumbers(private_key["publicExponent"], private_key["modulus"])
        key = rsa.RSAPrivateNumbers(
            private_key["prime1"], private_key["prime2"], private_key["privateExponent"],
            private_key["exponent1"], private_key["exponent2"], private_key["coefficient"],
            public).private_key()
        _openssl_keys[cache_key] = key
    return key


def _openssl_sign(hash: Any, private_key: dict[str, Any]) -> bytes:
    """dkimpy's ``RSASSA_PKCS1_v1_5_sign(hash, private_key)``, by OpenSSL: the same bytes."""
    algorithm = _HASHES.get(hash.name.lower())
    if algorithm is None:  # a hash dkimpy knows and we do not: dkimpy signs it itself
        return _dkimpy_sign(hash, private_key)
    key = _openssl_key(private_key)
    try:
        return key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except ValueError:  # the key is too small for the digest
        raise dkim.crypto.DigestTooLargeError() from None


@functools.lru_cache(maxsize=8)
def _parsed_key(pem: bytes) -> dict[str, Any]:
    """dkimpy's parse of a PEM key, once per key: its pure-Python ASN.1 reader took 0.35 ms for
    every signature (two per seal). dkimpy only reads the numbers it returns."""
    return _dkimpy_parse_pem(pem)


def _use_openssl() -> None:
    """Put ``_openssl_sign`` where dkimpy's signers look its RSA up (its module namespace), and
    the key parsed once where they parse it."""
    dkim.RSASSA_PKCS1_v1_5_sign = _openssl_sign
    dkim.parse_pem_private_key = _parsed_key


_use_openssl()


def headers_to_sign(message: bytes) -> list[bytes]:
    """``SIGNED_HEADERS`` as often as ``message`` has each, ``OVERSIGNED_HEADERS`` once more."""
    end = message.find(b"\r\n\r\n")
    names = [name.lower() for name in _HEADER_NAME.findall(
        message if end < 0 else message[:end + 2])]
    signed = [name for name in SIGNED_HEADERS for _ in range(names.count(name))]
    return signed + list(OVERSIGNED_HEADERS)


def _reason(exc: Exception) -> str:
    """Why dkimpy failed. Besides its DKIMException (a header line without a colon), its parser
    fails on some input in Python's own words (TypeError on an empty message, IndexError on a
    folded first line): any of them means this message cannot be signed, never a crash."""
    if isinstance(exc, (dkim.DKIMException, SigningError)):
        return str(exc)
    return f"dkimpy cannot parse it ({exc.__class__.__name__}: {exc})"


def _ascii(domain: str) -> bytes:
    try:
        return domain.encode("ascii")
    except UnicodeEncodeError:
        raise SigningError(f"{domain!r} is not an A-label (ASCII) domain") from None


class Signer:
    """Signs and seals with ``keys``; ``authserv_id``: our host name as it appears in our
    Authentication-Results lines (whose results the ARC set carries on)."""

    def __init__(self, keys: SigningKeys, authserv_id: str) -> None:
        self.keys = keys
        self.authserv_id = authserv_id

    def sign(self, message: bytes, domain: str) -> bytes:
        """The DKIM-Signature line(s), d=``domain``, to put in front of ``message``: RSA first,
        then Ed25519 when there is that key. Raises SigningError."""
        include = headers_to_sign(message)
        signatures = [(self.keys.selector, self.keys.rsa_pem, b"rsa-sha256")]
        if self.keys.ed25519_key is not None and self.keys.ed25519_selector is not None:
            signatures.append((self.keys.ed25519_selector, self.keys.ed25519_key,
                               b"ed25519-sha256"))
        lines = []
        for selector, key, algorithm in signatures:
            try:
                lines.append(dkim.sign(message, selector.encode("ascii"), _ascii(domain), key,
                                       canonicalize=CANONICALIZATION,
                                       signature_algorithm=algorithm, include_headers=include))
            except Exception as exc:  # noqa: BLE001 - see _reason
                raise SigningError(f"cannot DKIM-sign the message: {_reason(exc)}") from None
        return b"".join(lines)

    def seal(self, message: bytes, domain: str) -> bytes:
        """The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results), d=``domain``,
        to put in front of ``message``, which starts with our Authentication-Results line (its
        results become the ARC-Authentication-Results; its arc= result the seal's cv=).

        Empty when dkimpy declines to seal: no Authentication-Results of ours, or an earlier
        chain that our results call neither pass nor fail (RFC 8617 5.1.1: the chain has ended).
        Raises SigningError."""
        try:
            lines = dkim.arc_sign(message, self.keys.selector.encode("ascii"), _ascii(domain),
                                  self.keys.rsa_pem, self.authserv_id.encode("ascii"),
                                  include_headers=headers_to_sign(message))
        except Exception as exc:  # noqa: BLE001 - see _reason
            raise SigningError(f"cannot ARC-seal the message: {_reason(exc)}") from None
        if not lines:
            log.debug("signing: no ARC set: no Authentication-Results of %s, or a chain ended",
                      self.authserv_id)
        return b"".join(lines)
