"""Every reply the SMTP proxy sends, as named constants shared by the server and its tests.

Each reply carries an RFC 3463 enhanced status code (RFC 2034), so a test asserts on the name and
a client sees a precise reason. Texts never contain a target address: the people who send mail to
an alias are not its owner.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    status: str  # enhanced status code, e.g. "5.1.1"
    text: str

    def encode(self) -> bytes:
        return f"{self.code} {self.status} {self.text}\r\n".encode("utf-8")

    def with_text(self, text: str) -> "Reply":
        return Reply(self.code, self.status, text)


# --- 2xx
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "recipient OK")
QUEUED = Reply(250, "2.0.0", "OK: delivered")  # text gets the smarthost's queue id
RESET = Reply(250, "2.0.0", "reset")
NOOP = Reply(250, "2.0.0", "OK")
CANNOT_VERIFY = Reply(252, "2.5.0", "cannot verify; send mail and it will be tried")
HELP = Reply(214, "2.0.0", "commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS")
READY_FOR_TLS = Reply(220, "2.0.0", "ready to start TLS")
CLOSING = Reply(221, "2.0.0", "bye")
START_DATA = Reply(354, "2.0.0", "send the message, end with <CRLF>.<CRLF>")

# --- 4xx: try again later; mail is never lost by these
TOO_BUSY = Reply(421, "4.3.2", "too many connections, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "service shutting down, try again later")
IDLE_TIMEOUT = Reply(421, "4.4.2", "timeout waiting for a command, closing")
DATA_TIMEOUT = Reply(421, "4.4.2", "timeout receiving the message, closing")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "too many bad commands, closing")
STORE_UNAVAILABLE = Reply(451, "4.3.0", "cannot look up the recipient now, try again later")
SMARTHOST_UNAVAILABLE = Reply(451, "4.4.1", "the next hop is not reachable now, try again later")
SMARTHOST_TEMPFAIL = Reply(451, "4.4.0", "the next hop deferred the message, try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "local error, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "too many recipients for one message")
RETURN_ADDRESS_ALONE = Reply(452, "4.5.3", "a bounce to a return address goes alone: "
                                           "send it in a transaction of its own")
ALIAS_BUSY = Reply(450, "4.2.1", "every use this alias has left is taken by a message in flight; "
                                 "try again later")
DOMAIN_SUSPENDED = Reply(450, "4.7.1", "this domain's DNS records for this service are gone; "
                                       "mail waits until its owner restores them")
REPLIES_ALONE = Reply(452, "4.5.3", "mail to an alias that takes replies goes alone: send it "
                                    "in a transaction of its own")
REPLY_THROTTLED = Reply(450, "4.7.1", "this alias has sent as many replies as it may for now; "
                                      "try again later")
REPLY_UNVERIFIED = Reply(451, "4.7.0", "cannot verify the sender of this reply now (DNS did not "
                                       "answer); try again later")
TOO_MANY_BAD_RECIPIENTS = Reply(421, "4.7.0", "too many refused recipients, closing")
TRANSACTION_TIMEOUT = Reply(421, "4.4.2", "no DATA in time; held uses given back, closing")

# --- 5xx
LINE_TOO_LONG = Reply(500, "5.5.2", "line too long")
COMMAND_TOO_LONG = Reply(500, "5.5.2", "command line too long (at most 512 octets)")
TEXT_LINE_TOO_LONG = Reply(500, "5.5.2", "message line too long (at most 1000 octets with CRLF)")
UNRECOGNISED = Reply(500, "5.5.1", "command not recognised")
SYNTAX = Reply(501, "5.5.4", "syntax error in parameters")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "bad recipient address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "send EHLO or HELO first")
NEED_MAIL = Reply(503, "5.5.1", "send MAIL first")
NEED_RCPT = Reply(503, "5.5.1", "no valid recipients")
NESTED_MAIL = Reply(503, "5.5.1", "sender already given")
TLS_ALREADY = Reply(503, "5.5.1", "TLS already active")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "MAIL or RCPT parameter not recognised")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
BARE_LINE_END = Reply(521, "5.5.2", "bare CR or LF received; lines must end with CRLF, closing")
NO_SUCH_ALIAS = Reply(550, "5.1.1", "no such alias (unknown, expired, used up or revoked)")
RELAY_DENIED = Reply(550, "5.7.1", "relaying denied")
DOMAIN_LAPSED = Reply(550, "5.7.1", "this domain is no longer served here: its DNS records for "
                                    "this service have been gone too long")
NO_POSTMASTER = Reply(550, "5.1.1", "no postmaster mailbox is configured here")
BAD_SRS = Reply(550, "5.1.1", "no such address (invalid or expired return address)")
SRS_NEEDS_NULL_SENDER = Reply(550, "5.7.1", "return addresses accept only bounces (MAIL FROM:<>)")
NOT_A_REPORT = Reply(550, "5.7.1", "return addresses accept only delivery reports "
                                   "(multipart/report, RFC 3464)")  # text gets what it was instead
REPORTS_USED_UP = Reply(550, "5.7.1", "this return address has carried all the reports it may")
NO_SUCH_REVERSE = Reply(550, "5.1.1", "no such address (unknown reply address, or its alias "
                                     "has ended)")
REPLY_NOT_AUTHENTIC = Reply(550, "5.7.1", "only the owner of this alias can reply through it, "
                                          "from their own address, with an SPF pass for this IP "
                                          "or an aligned DKIM signature")
REPLY_DISCLOSES = Reply(550, "5.7.1", "a reply through an alias goes to the one sender it "
                                      "answers: other recipients would learn your address")
UNPARSABLE = Reply(554, "5.6.0", "the message could not be parsed for rewriting")
MAIL_LOOP = Reply(554, "5.4.6", "mail loop detected")  # text gets the sign
SMARTHOST_REFUSED = Reply(550, "5.0.0", "the next hop refused the message")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "non-ASCII address needs the SMTPUTF8 parameter")
TARGET_NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "this alias forwards to a non-ASCII address; "
                                             "send with the SMTPUTF8 parameter")
SMTPUTF8_NOT_DELIVERABLE = Reply(553, "5.6.7", "the next hop cannot take non-ASCII addresses")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "message exceeds the size limit")


# --- each refusal in one bounded word, for the metrics and the stats kept in Redis. By code and
# enhanced status, so that a reply whose text was filled in (a rate limit's, a block list's, the
# smarthost's own) is still known; where two constants share both, the word names the commoner.
_REASONS = {
    (550, "5.1.1"): "refused-unknown",  # NO_SUCH_ALIAS, BAD_SRS, NO_SUCH_REVERSE, NO_POSTMASTER
    (550, "5.7.1"): "refused-relay",  # RELAY_DENIED, DOMAIN_LAPSED and the SRS/reply rules
    (554, "5.7.1"): "refused-rbl",  # RBL_LISTED_REPLY
    (421, "4.7.0"): "refused-rate",  # a limit at connect (also too many bad commands)
    (451, "4.7.1"): "refused-rate",  # a limit on a message or an alias (or RBL not answering)
    (450, "4.7.1"): "refused-rate",  # replies throttled, a suspended domain
    (451, "4.3.0"): "tempfail-redis",  # STORE_UNAVAILABLE (LOCAL_ERROR shares it)
    (450, "4.2.1"): "tempfail-busy",  # ALIAS_BUSY: its uses held by messages in flight
    (452, "4.5.3"): "tempfail-alone",  # too many recipients, a message that must go alone
    (451, "4.4.1"): "tempfail-smarthost",
    (451, "4.4.0"): "tempfail-smarthost",
    (451, "4.7.0"): "tempfail-dns",  # REPLY_UNVERIFIED
    (552, "5.3.4"): "refused-size",
    (554, "5.4.6"): "refused-loop",
    (554, "5.6.0"): "refused-content",
    (553, "5.6.7"): "refused-smtputf8",
    (521, "5.5.2"): "refused-syntax",
}


def reason(reply: Reply) -> str:
    """``accepted`` for a 2xx or 3xx, else a word from a small fixed set (never the text)."""
    if reply.code < 400:
        return "accepted"
    known = _REASONS.get((reply.code, reply.status))
    if known is not None:
        return known
    if reply.code == 501 or reply.code == 553:
        return "refused-syntax"
    return "tempfail-other" if reply.code < 500 else "refused-other"
