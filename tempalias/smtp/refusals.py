"""The abuse policy's verdicts in SMTP words: which reply each refusal gets, and where.

The policy (tempalias/abuse.py) says what it decided; this is the SMTP door's half. Over-limit
answers are always 4xx, so a legitimate sender's server retries later: ``421 4.7.0`` and the
connection closed when it is refused at connect, ``451 4.7.1`` for a refused message or
recipient. A listed client gets ``554 5.7.1`` in place of the greeting (RFC 5321 3.1).
"""

from __future__ import annotations

from tempalias.abuse import RATE_LIMITED, RBL_LISTED, Refusal
from tempalias.smtp.replies import Reply

# limit name -> the reply; {client} and {retry} are filled in
RATE_LIMIT_REPLIES = {
    "smtp-connect": Reply(421, "4.7.0", "too many connections from {client}; "
                                        "try again in {retry} s"),
    "open": Reply(421, "4.7.0", "too many open connections from {client}; try again later"),
    "smtp-message": Reply(451, "4.7.1", "too many messages from {client}; try again in {retry} s"),
    "alias-message": Reply(451, "4.7.1", "this alias takes no more messages for now; "
                                         "try again in {retry} s"),
}
RBL_LISTED_REPLY = Reply(554, "5.7.1", "{client} listed in {limit}")
RBL_UNAVAILABLE_AT_CONNECT = Reply(421, "4.7.0", "cannot check {client} against block lists now; "
                                                 "try again later")
RBL_UNAVAILABLE = Reply(451, "4.7.1", RBL_UNAVAILABLE_AT_CONNECT.text)


def refusal_reason(refusal: Refusal) -> str:
    """The verdict in the metrics' and stats' words (``replies.reason``'s set)."""
    if refusal.kind == RATE_LIMITED:
        return "refused-rate"
    return "refused-rbl" if refusal.kind == RBL_LISTED else "tempfail-rbl"


def refusal_reply(refusal: Refusal, at_connect: bool = False) -> Reply:
    if refusal.kind == RATE_LIMITED:
        reply = RATE_LIMIT_REPLIES[refusal.limit]
    elif refusal.kind == RBL_LISTED:
        reply = RBL_LISTED_REPLY
    else:
        reply = RBL_UNAVAILABLE_AT_CONNECT if at_connect else RBL_UNAVAILABLE
    return reply.with_text(reply.text.format(client=refusal.client, limit=refusal.limit,
                                             retry=refusal.retry_after))
