"""The DKIM keys: made once per data directory, kept private, reused; the operator's checked."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tempalias.config import SigningSettings
from tempalias.dkimkeys import DkimKeyError, load_or_create_keys


def settings(**changes) -> SigningSettings:
    values = {"dkim_key": None, "dkim_selector": "tempalias", "dkim_ed25519": False, "arc": True}
    values.update(changes)
    return SigningSettings(**values)


def public_key_of(txt: str):
    tags = dict(item.strip().split("=", 1) for item in txt.split(";"))
    return tags, base64.b64decode(tags["p"])


def test_a_key_is_made_once_private_and_reused(tmp_path):
    data_dir = tmp_path / "data"
    first = load_or_create_keys(settings(), str(data_dir))
    key_file = data_dir / "dkim.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert first.selector == "tempalias" and first.ed25519_key is None
    assert first.ed25519_public_txt() is None

    again = load_or_create_keys(settings(), str(data_dir))
    assert again == first
    assert [path.name for path in data_dir.iterdir()] == ["dkim.key"]  # no temporary left


def test_the_public_txt_is_the_key_in_dkim_form(tmp_path):
    keys = load_or_create_keys(settings(), str(tmp_path))
    tags, der = public_key_of(keys.rsa_public_txt())
    assert (tags["v"], tags["k"]) == ("DKIM1", "rsa")
    private = serialization.load_pem_private_key(keys.rsa_pem, password=None)
    assert der == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_an_ed25519_key_is_made_beside_it_when_asked(tmp_path):
    keys = load_or_create_keys(settings(dkim_ed25519=True, dkim_selector="s1"), str(tmp_path))
    key_file = tmp_path / "dkim-ed25519.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert keys.ed25519_selector == "s1-ed"
    on_disk = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(on_disk, ed25519.Ed25519PrivateKey)
    tags, raw = public_key_of(keys.ed25519_public_txt())
    assert (tags["v"], tags["k"]) == ("DKIM1", "ed25519")
    assert raw == on_disk.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
    assert load_or_create_keys(settings(dkim_ed25519=True, dkim_selector="s1"),
                               str(tmp_path)) == keys


def test_workers_starting_at_once_end_with_one_key(tmp_path):
    program = ("import sys; from tempalias.config import SigningSettings\n"
               "from tempalias.dkimkeys import load_or_create_keys\n"
               "keys = load_or_create_keys(SigningSettings(None, 'tempalias', True, True), "
               "sys.argv[1])\n"
               "print(keys.rsa_public_txt(), keys.ed25519_public_txt())")
    workers = [subprocess.Popen([sys.executable, "-c", program, str(tmp_path / "data")],
                                stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = {worker.communicate(timeout=120)[0] for worker in workers}
    assert all(worker.returncode == 0 for worker in workers)
    assert len(outputs) == 1
    assert sorted(os.listdir(tmp_path / "data")) == ["dkim-ed25519.key", "dkim.key"]


def _pem(key, form=serialization.PrivateFormat.PKCS8, encryption=None) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form,
                             encryption or serialization.NoEncryption())


def test_the_operators_key_is_used_in_pkcs8_too(tmp_path):
    operator_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    path = tmp_path / "operator.pem"
    path.write_bytes(_pem(operator_key))
    keys = load_or_create_keys(settings(dkim_key=str(path)), str(tmp_path / "data"))
    assert b"BEGIN RSA PRIVATE KEY" in keys.rsa_pem  # dkimpy's form
    _, der = public_key_of(keys.rsa_public_txt())
    assert der == operator_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert not (tmp_path / "data" / "dkim.key").exists()


def _small_rsa_key() -> bytes:
    """A 512-bit key: cryptography refuses to make one, OpenSSL's command line does."""
    return subprocess.run(["openssl", "genrsa", "512"], capture_output=True, check=True,
                          timeout=60).stdout


@pytest.mark.parametrize("content, words", [
    (None, "cannot read"),
    (b"not a key\n", "not a PEM private key"),
    ("ec", "not an RSA key"),
    ("small", "512 bits"),
    ("encrypted", "encrypted"),
])
def test_an_unusable_operator_key_is_one_clear_error(tmp_path, content, words):
    path = tmp_path / "operator.pem"
    if content == "ec":
        content = _pem(ec.generate_private_key(ec.SECP256R1()))
    elif content == "small":
        content = _small_rsa_key()
    elif content == "encrypted":
        content = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                       encryption=serialization.BestAvailableEncryption(b"secret"))
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DkimKeyError) as raised:
        load_or_create_keys(settings(dkim_key=str(path)), str(tmp_path / "data"))
    assert words in str(raised.value) and str(path) in str(raised.value)


def test_a_data_dir_that_cannot_be_written_is_one_clear_error(tmp_path):
    blocked = Path(tmp_path / "file")
    blocked.write_text("not a directory")
    with pytest.raises(DkimKeyError, match="cannot make the DKIM key"):
        load_or_create_keys(settings(), str(blocked / "data"))
