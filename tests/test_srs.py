"""SRS rewriting (tempalias/srs.py): forward, reverse, and what a forger cannot do."""

from __future__ import annotations

import os
import stat

import pytest

from tempalias.srs import HASH_LENGTH, MAX_AGE_DAYS, SRS, InvalidSRS, ReturnPath, \
    load_or_create_secret

DAY = 86400.0
NOW = 1_796_000_000.0


def srs_at(now: float, secret: str = "s3cret") -> SRS:
    return SRS(secret, "tempalias.test", clock=lambda: now)


def local_part(address: str) -> str:
    return address.rpartition("@")[0]


def test_forward_then_reverse_gives_the_sender_and_the_alias_back():
    srs = srs_at(NOW)
    rewritten = srs.forward("Alice.Smith@Sender.example", "k3x9qa")
    assert rewritten.startswith("SRS0=") and rewritten.endswith("@tempalias.test")
    back = srs.reverse(local_part(rewritten))
    assert (back.sender, back.alias) == ("Alice.Smith@Sender.example", "k3x9qa")


@pytest.mark.parametrize("alias", ["shop-news@temp.example.org", "a.b+c=d/e@xn--bcher-kva.example"])
def test_an_alias_at_a_custom_domain_travels_in_the_address_and_comes_back(alias):
    """Its id has dots, dashes and even '=', the field separator: it travels encoded, in one
    case, and an MTA that changes the case of the local part loses nothing."""
    srs = srs_at(NOW)
    rewritten = srs.forward("someone@sender.example", alias)
    fields = local_part(rewritten).split("=")
    assert len(fields) == 6 and "@" not in local_part(rewritten)
    for spelling in (local_part(rewritten), local_part(rewritten).upper()):
        back = srs.reverse(spelling)
        assert (back.sender.lower(), back.alias) == ("someone@sender.example", alias)
    resent = srs_at(NOW, secret="other").forward(rewritten, alias)  # through us again: SRS1
    assert srs_at(NOW, secret="other").reverse(local_part(resent)).alias == alias


def test_null_sender_stays_null():
    assert srs_at(NOW).forward("", "k3x9qa") == ""


def test_hash_has_at_least_40_bits_in_one_case():
    local = local_part(srs_at(NOW).forward("bob@sender.example", "k3x9qa"))
    given = local.split("=")[1]
    assert len(given) == HASH_LENGTH and HASH_LENGTH * 5 >= 40
    assert given == given.lower() and given.isalnum()


def test_hash_is_checked_case_insensitively_but_must_match():
    srs = srs_at(NOW)
    local = local_part(srs.forward("bob@sender.example", "k3x9qa"))
    assert srs.reverse(local.upper()).sender.lower() == "bob@sender.example"
    assert srs.reverse(local.lower().replace("srs0", "SRS0")).sender == "bob@sender.example"
    for tampered in (local.replace("=sender.example=", "=victim.example="),
                     local.replace("=k3x9qa=", "=other1="),
                     local.replace("=sender.example=bob", "=sender.example.bob=")):
        with pytest.raises(InvalidSRS):
            srs.reverse(tampered)
    with pytest.raises(InvalidSRS):
        srs_at(NOW, secret="another").reverse(local)


def test_addresses_expire_after_the_queue_lifetime_of_mtas():
    local = local_part(srs_at(NOW).forward("bob@sender.example", "k3x9qa"))
    assert srs_at(NOW + MAX_AGE_DAYS * DAY).reverse(local).sender == "bob@sender.example"
    with pytest.raises(InvalidSRS):
        srs_at(NOW + (MAX_AGE_DAYS + 1) * DAY).reverse(local)
    assert MAX_AGE_DAYS <= 7


def test_another_forwarders_srs0_becomes_srs1_and_reverses_to_it():
    theirs = "SRS0=abcd=XY=origin.example=carol@forwarder.example"
    ours = srs_at(NOW).forward(theirs, "k3x9qa")
    assert ours.startswith("SRS1=") and "=forwarder.example==abcd=XY=" in ours
    assert srs_at(NOW).reverse(local_part(ours)) == ReturnPath(
        theirs, "k3x9qa", local_part(ours).split("=")[1])
    # and an SRS1 passed on again keeps the first hop instead of growing
    again = srs_at(NOW, secret="third").forward(ours.replace("@tempalias.test", "@hop.example"),
                                                "other1")
    assert again.count("SRS") == 1 and "=forwarder.example==abcd=XY=" in again
    assert srs_at(NOW, secret="third").reverse(local_part(again)).sender == theirs


@pytest.mark.parametrize("local", ["SRS0=x", "SRS0==AA=k3x9qa=dom=user", "SRS1=abcd=host=nope",
                                   "plain", "SRS0=aaaaaaaaaa=AA=k3x9qa=dom=user",
                                   "SRS0=AAAA=AA=dom=user"])
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
