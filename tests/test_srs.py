"""SRS rewriting (tempalias/srs.py): forward, reverse, and what a forger cannot do."""

from __future__ import annotations

import os
import stat

import pytest

from tempalias.srs import MAX_AGE_DAYS, SRS, InvalidSRS, load_or_create_secret

DAY = 86400.0
NOW = 1_796_000_000.0


def srs_at(now: float, secret: str = "s3cret") -> SRS:
    return SRS(secret, "tempalias.test", clock=lambda: now)


def local_part(address: str) -> str:
    return address.rpartition("@")[0]


def test_forward_then_reverse_gives_the_sender_back():
    srs = srs_at(NOW)
    rewritten = srs.forward("Alice.Smith@Sender.example")
    assert rewritten.startswith("SRS0=") and rewritten.endswith("@tempalias.test")
    assert srs.reverse(local_part(rewritten)) == "Alice.Smith@Sender.example"


def test_null_sender_stays_null():
    assert srs_at(NOW).forward("") == ""


def test_hash_is_checked_case_insensitively_but_must_match():
    srs = srs_at(NOW)
    local = local_part(srs.forward("bob@sender.example"))
    assert srs.reverse(local.lower().replace("srs0", "SRS0")) == "bob@sender.example"
    tampered = local.replace("=sender.example=", "=victim.example=")
    with pytest.raises(InvalidSRS):
        srs.reverse(tampered)
    with pytest.raises(InvalidSRS):
        srs_at(NOW, secret="another").reverse(local)


def test_addresses_expire():
    local = local_part(srs_at(NOW).forward("bob@sender.example"))
    assert srs_at(NOW + MAX_AGE_DAYS * DAY).reverse(local) == "bob@sender.example"
    with pytest.raises(InvalidSRS):
        srs_at(NOW + (MAX_AGE_DAYS + 1) * DAY).reverse(local)


def test_another_forwarders_srs0_becomes_srs1_and_reverses_to_it():
    theirs = "SRS0=abcd=XY=origin.example=carol@forwarder.example"
    ours = srs_at(NOW).forward(theirs)
    assert ours.startswith("SRS1=") and "=forwarder.example==abcd=XY=" in ours
    assert srs_at(NOW).reverse(local_part(ours)) == theirs
    # and an SRS1 passed on again keeps the first hop instead of growing
    again = srs_at(NOW, secret="third").forward(ours.replace("@tempalias.test", "@hop.example"))
    assert again.count("SRS") == 1 and "=forwarder.example==abcd=XY=" in again


@pytest.mark.parametrize("local", ["SRS0=x", "SRS0==AA=dom=user", "SRS1=abcd=host=nope",
                                   "plain", "SRS0=AAAA=AA=dom=user"])
def test_malformed_or_forged_addresses_are_refused(local):
    with pytest.raises(InvalidSRS):
        srs_at(NOW).reverse(local)


def test_secret_is_generated_once_with_mode_0600(tmp_path):
    first = load_or_create_secret(str(tmp_path))
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "srs_secret").st_mode) == 0o600
    assert load_or_create_secret(str(tmp_path)) == first


def test_processes_starting_together_share_one_secret(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        found = set(pool.map(load_or_create_secret, [str(tmp_path)] * 8))
    assert len(found) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["srs_secret"]  # no temporary left behind
