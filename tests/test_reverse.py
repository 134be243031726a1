"""The shape of reverse (reply) addresses: made, read back in any case, and nothing else read."""

from __future__ import annotations

import pytest

from tempalias.reverse import RANDOM_SHAPE, is_reverse, new_random, parse_reverse, reverse_local

RANDOM = "abcdefghijklmnop"


def test_a_fresh_random_is_16_characters_of_base32():
    made = {new_random() for _ in range(200)}
    assert len(made) == 200
    assert all(RANDOM_SHAPE.fullmatch(random) for random in made)


def test_an_alias_at_our_domain_is_named_by_its_id():
    local = reverse_local(RANDOM, "k3x9qa")
    assert local == "r=abcdefghijklmnop=k3x9qa"
    assert parse_reverse(local, "tempalias.test", ours=True) == ("k3x9qa", RANDOM)
    assert parse_reverse(local.upper(), "TEMPALIAS.test", ours=True) == ("k3x9qa", RANDOM)


@pytest.mark.parametrize("alias_local", ["shop", "a.b+c=d", "x", "a{b}*c", "z" * 64])
def test_an_alias_at_a_custom_domain_is_named_by_its_local_part_in_base32(alias_local):
    local = reverse_local(RANDOM, f"{alias_local}@own.example")
    field = local.split("=", 2)[2]
    assert set(field) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert parse_reverse(local, "Own.Example", ours=False) == (f"{alias_local}@own.example",
                                                               RANDOM)
    assert parse_reverse(local.upper(), "own.example", ours=False) == (
        f"{alias_local}@own.example", RANDOM)


@pytest.mark.parametrize("local, ours", [
    ("k3x9qa", True),
    ("r=abcdefghijklmnop", True),
    ("r=abcdefghijklmno=k3x9qa", True),  # RANDOM one short
    ("r=abcdefghijklmno1=k3x9qa", True),  # 1 is not base32
    ("r=abcdefghijklmnop=k3x9-qa", True),
    ("r=abcdefghijklmnop=", True),
    ("x=abcdefghijklmnop=k3x9qa", True),
    ("r=abcdefghijklmnop=onxw", False),  # base32 with stray bits: not a spelling we write
    ("r=abcdefghijklmnop=k3x9qa", False),  # 1, 9 are not base32
    ("r=abcdefghijklmnop=7777", False),  # decodes to no ASCII
])
def test_anything_else_is_not_a_reverse_address(local, ours):
    assert parse_reverse(local, "own.example", ours) is None


def test_every_local_part_starting_with_r_equals_belongs_to_reply_addresses():
    assert is_reverse("r=anything") and is_reverse("R=abc") and is_reverse("r=")
    assert not is_reverse("r") and not is_reverse("shop") and not is_reverse("rr=x")
