"""The keys that sign (DKIM) and seal (ARC) the mail we send, and the DNS values that publish them.

The RSA key is the operator's (``dkim_key``, a PEM file) or one made on first start into
DATA_DIR/dkim.key; with ``dkim_ed25519`` an Ed25519 key (RFC 8463) is made likewise into
DATA_DIR/dkim-ed25519.key and published at the selector ``SELECTOR-ed``. Receivers that do not
know Ed25519 ignore its signature and check the RSA one, so both are sent together.

A key made here is made by ``secretfile.create_once`` (mode 0600, written whole, then linked
into place): worker processes starting at the same moment all end up with the one key that won,
and a restart keeps it (the published DNS record names it). Keys are held in the forms dkimpy
signs with: the RSA key as a PKCS#1 PEM (an operator's PKCS#8 file is converted), the Ed25519
key as the base64 of its 32-byte seed.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tempalias.config import SigningSettings
from tempalias.secretfile import create_once

RSA_KEY_FILE = "dkim.key"
ED25519_KEY_FILE = "dkim-ed25519.key"
RSA_BITS = 2048
MIN_RSA_BITS = 1024  # RFC 8301: verifiers refuse smaller keys
ED25519_SELECTOR_SUFFIX = "-ed"


class DkimKeyError(Exception):
    """A key file cannot be used; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class SigningKeys:
    """The keys, as dkimpy takes them, and the selectors they are published at."""

    rsa_pem: bytes  # PKCS#1 PEM ("BEGIN RSA PRIVATE KEY")
    selector: str
    ed25519_key: bytes | None = None  # base64 of the 32-byte seed (nacl.signing.SigningKey)
    ed25519_selector: str | None = None  # f"{selector}-ed"

    def rsa_public_txt(self) -> str:
        """The TXT value at ``SELECTOR._domainkey.DOMAIN``: the public key as DER
        SubjectPublicKeyInfo in base64 (RFC 6376 3.6.1)."""
        key = serialization.load_pem_private_key(self.rsa_pem, password=None)
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"

    def ed25519_public_txt(self) -> str | None:
        """The TXT value at ``SELECTOR-ed._domainkey.DOMAIN``: the raw 32-byte public key in
        base64 (RFC 8463 4.2); None without an Ed25519 key."""
        if self.ed25519_key is None:
            return None
        seed = base64.b64decode(self.ed25519_key)
        public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode('ascii')}"


def load_or_create_keys(settings: SigningSettings, data_dir: str) -> SigningKeys:
    """The operator's RSA key (``settings.dkim_key``), else DATA_DIR/dkim.key made on first use;
    DATA_DIR/dkim-ed25519.key too when ``settings.dkim_ed25519``. Raises DkimKeyError."""
    if settings.dkim_key:
        rsa_path = settings.dkim_key
    else:
        rsa_path = _create_once(os.path.join(data_dir, RSA_KEY_FILE), _new_rsa_pem)
    keys = SigningKeys(_rsa_pem(rsa_path), settings.dkim_selector)
    if not settings.dkim_ed25519:
        return keys
    ed_path = _create_once(os.path.join(data_dir, ED25519_KEY_FILE), _new_ed25519_pem)
    return SigningKeys(keys.rsa_pem, keys.selector, _ed25519_seed(ed_path),
                       settings.dkim_selector + ED25519_SELECTOR_SUFFIX)


def _new_rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _new_ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def _create_once(path: str, make: Callable[[], bytes]) -> str:
    """``path``, written with a new key (mode 0600) unless it exists; the first writer wins."""
    try:
        create_once(path, make)
    except OSError as exc:
        raise DkimKeyError(f"cannot make the DKIM key {path}: {exc.strerror or exc}") from None
    return path


def _read_private_key(path: str):
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DkimKeyError(f"cannot read the DKIM key {path}: {exc.strerror or exc}") from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying a password is needed
        reason = "it is encrypted"
    except (ValueError, UnsupportedAlgorithm):
        reason = "it is not a PEM private key"
    raise DkimKeyError(f"the DKIM key {path} cannot be used: {reason} (an unencrypted PEM key "
                       "is needed; delete a key tempalias made to have a new one made)")


def _rsa_pem(path: str) -> bytes:
    key = _read_private_key(path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"the DKIM key {path} is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise DkimKeyError(f"the DKIM key {path} has {key.key_size} bits; receivers refuse "
                           f"fewer than {MIN_RSA_BITS} (2048 is usual)")
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _ed25519_seed(path: str) -> bytes:
    key = _read_private_key(path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimKeyError(f"the DKIM key {path} is not an Ed25519 key")
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return base64.b64encode(seed)
