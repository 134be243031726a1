"""The SMTP door's words for the abuse policy's verdicts (tempalias/smtp/refusals.py).

What a client reads end to end is in test_abuse_smtp.py; here, every verdict the SMTP stages can
reach has its reply, and the reply depends on where it is given."""

from __future__ import annotations

import pytest

from tempalias.abuse import (OPEN_CONNECTIONS, RATE_LIMITED, RBL_LISTED, RBL_UNAVAILABLE, STAGES,
                             Refusal)
from tempalias.smtp.refusals import refusal_reply

SMTP_STAGES = ("smtp-connection", "smtp-message", "alias-delivery")


@pytest.mark.parametrize("limit", [limit for stage in SMTP_STAGES for limit in STAGES[stage]]
                         + [OPEN_CONNECTIONS], ids=lambda limit: limit.name)
def test_every_smtp_limit_has_a_temporary_reply(limit):
    reply = refusal_reply(Refusal(RATE_LIMITED, limit.name, "192.0.2.7", 12))
    at_connect = limit in STAGES["smtp-connection"] or limit is OPEN_CONNECTIONS
    assert (reply.code, reply.status) == ((421, "4.7.0") if at_connect else (451, "4.7.1"))
    assert "{" not in reply.text


def test_a_wait_is_said_in_seconds_and_the_client_by_its_address():
    reply = refusal_reply(Refusal(RATE_LIMITED, "smtp-message", "192.0.2.7", 12))
    assert reply.encode() == b"451 4.7.1 too many messages from 192.0.2.7; try again in 12 s\r\n"


def test_a_listed_client_gets_554_naming_the_zone():
    reply = refusal_reply(Refusal(RBL_LISTED, "bl.test", "127.0.0.2"), at_connect=True)
    assert reply.encode() == b"554 5.7.1 127.0.0.2 listed in bl.test\r\n"


def test_a_block_list_that_cannot_be_asked_is_421_at_connect_and_451_later():
    refusal = Refusal(RBL_UNAVAILABLE, "silent.test", "127.0.0.5", 60)
    assert (refusal_reply(refusal, at_connect=True).code,
            refusal_reply(refusal, at_connect=True).status) == (421, "4.7.0")
    assert (refusal_reply(refusal).code, refusal_reply(refusal).status) == (451, "4.7.1")
