"""The mail-loop guard (tempalias/smtp/loops.py), fed as the proxy feeds it: blocks of lines."""

from __future__ import annotations

import pytest

from tempalias.smtp.loops import HEADER_LIMIT, MAX_HOPS, LoopGuard, delivered_to

OWN = frozenset({"k3x9qa@tempalias.test"})


def feed_in_pieces(guard: LoopGuard, message: bytes, size: int) -> str | None:
    lines = message.split(b"\r\n")
    blocks = [b"".join(line + b"\r\n" for line in lines[i:i + size])
              for i in range(0, len(lines) - 1, size)]
    verdict = None
    for block in blocks:
        verdict = guard.feed(block)
    return verdict


def hops(count: int) -> bytes:
    return b"Received: from a by b; Thu, 3 Dec 2026\r\n" * count


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_hops_are_counted_across_blocks(size):
    assert feed_in_pieces(LoopGuard(OWN), hops(MAX_HOPS) + b"\r\nbody\r\n", size) is None
    assert "hops" in feed_in_pieces(LoopGuard(OWN), hops(MAX_HOPS + 1) + b"\r\nbody\r\n", size)


def test_received_lines_in_the_body_do_not_count():
    assert LoopGuard(OWN).feed(b"Subject: x\r\n\r\n" + hops(MAX_HOPS + 1)) is None


@pytest.mark.parametrize("line", [delivered_to("k3x9qa@tempalias.test"),
                                  b"delivered-to: <K3X9QA@TEMPALIAS.TEST>\r\n"])
def test_our_own_delivered_to_is_a_loop(line):
    assert LoopGuard(OWN).feed(line + b"Subject: x\r\n\r\nbody\r\n")


def test_someone_elses_delivered_to_is_not():
    assert LoopGuard(OWN).feed(b"Delivered-To: owner@target.example\r\n\r\n") is None
    assert LoopGuard(frozenset()).feed(delivered_to("k3x9qa@tempalias.test") + b"\r\n") is None


def test_a_header_section_past_the_limit_is_judged_on_what_was_kept():
    guard = LoopGuard(OWN)
    assert guard.feed(b"X-Filler: " + b"y" * 998 + b"\r\n") is None
    assert guard.feed(hops(MAX_HOPS + 1) + b"X-Filler: z\r\n" * (HEADER_LIMIT // 13))
    assert guard.done
