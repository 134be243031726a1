"""The SMTP server state machine (RFC 5321, with RFC 1870 SIZE, RFC 2920 PIPELINING, RFC 6152
8BITMIME, RFC 2034 ENHANCEDSTATUSCODES, RFC 6531 SMTPUTF8, RFC 3207 STARTTLS).

The shape is aiosmtpd's: one ``smtp_VERB`` method per command found by name, the state of the
connection and of the transaction in plain objects (``session.py``), the forwarding policy in its
own module, and one error funnel (``run``) through which every way a connection can end passes,
so that every reservation is released and the socket closed on every path. Per-connection
budgets bound what one client can cost: line lengths, bad commands, recipients, idle time per
command, the time from the first accepted recipient to DATA (uses are held meanwhile), the total
time of one DATA, and refused recipients: past ``max_bad_recipients`` each RCPT waits before its
answer, and at twice as many the connection is closed, so guessing addresses is slow and short.
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import time
from dataclasses import dataclass

import gevent
from gevent import GreenletExit

from tempalias.addresses import MAX_ADDRESS_OCTETS, Address, InvalidAddress, parse_address
from tempalias.smtp import replies
from tempalias.smtp.connection import ClientGone, Connection, LineTooLong
from tempalias.smtp.data import BareLineEnd, MessageReader
from tempalias.smtp.forwarder import Forwarder, Outbound
from tempalias.smtp.replies import Reply
from tempalias.smtp.session import Envelope, Session

log = logging.getLogger("tempalias.smtp")

COMMAND_LINE_LIMIT = 512  # octets with CRLF, RFC 5321 section 4.5.3.1.4
_BAD_COMMAND_CODES = frozenset((500, 501, 502, 503, 555))


@dataclass(frozen=True)
class Limits:
    max_message_size: int
    idle_timeout: float
    data_timeout: float
    max_bad_commands: int
    max_recipients: int
    max_bad_recipients: int
    bad_recipient_delay: float
    transaction_timeout: float


class Closing(Exception):
    """End the connection after sending ``reply``; ``reason`` goes into the transaction's log."""

    def __init__(self, reply: Reply | None, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


class _DataTimeout(Exception):
    pass


def _split_path(argument: str, keyword: str) -> tuple[str, list[str]] | None:
    """``FROM:<path> PARAMS`` -> (path without brackets and source route, params); None if bad."""
    if argument[:len(keyword)].upper() != keyword:
        return None
    rest = argument[len(keyword):].lstrip(" ")
    if not rest.startswith("<"):
        return None
    end = rest.find(">")
    if end < 0:
        return None
    path, params = rest[1:end], rest[end + 1:]
    if params and not params.startswith(" "):
        return None
    if path.startswith("@"):  # a source route: accepted and ignored (RFC 5321 section 3.3)
        _, colon, path = path.partition(":")
        if not colon:
            return None
    return path, params.split()


class SMTPProtocol:
    def __init__(self, connection: Connection, session: Session, forwarder: Forwarder,
                 limits: Limits, banner: str, tls_context: ssl.SSLContext | None) -> None:
        self.connection = connection
        self.session = session
        self.forwarder = forwarder
        self.limits = limits
        self.banner = banner
        self.tls_context = tls_context
        self.envelope: Envelope | None = None  # the transaction under way, as the client said it
        self.outbound: Outbound | None = None  # and what the forwarder does with it

    # --- the error funnel: every way out of a connection passes here

    def run(self) -> None:
        reason = "connection closed"
        farewell: Reply | None = None
        try:
            self.connection.queue(f"220 {self.banner} ESMTP tempalias\r\n".encode("ascii"))
            while True:
                self._dispatch(self._read_command())
        except Closing as exc:
            farewell, reason = exc.reply, exc.reason
        except socket.timeout:
            farewell, reason = replies.IDLE_TIMEOUT, "idle timeout"
        except _DataTimeout:
            farewell, reason = replies.DATA_TIMEOUT, "data timeout"
        except ClientGone:
            reason = "client disconnected"
        except GreenletExit:
            farewell, reason = replies.SHUTTING_DOWN, "service shutting down"
        except Exception:
            log.exception("smtp client=%s: unexpected error", self.session.peer_ip,
                          extra={"client": self.session.peer_ip})
            farewell, reason = replies.LOCAL_ERROR.with_text("local error, closing"), "local error"
        finally:
            try:
                self._end_envelope(reason)
            finally:
                if farewell is not None:
                    self.connection.queue(farewell.encode())
                self.connection.close()

    def _read_command(self) -> bytes:
        # A deadline rather than a gevent.Timeout: the same bound (a command trickling in byte by
        # byte still ends at idle_timeout), without a timer started and stopped per command.
        deadline = time.monotonic() + self.limits.idle_timeout
        hold_until = self.envelope.hold_until if self.envelope is not None else None
        holding = hold_until is not None and hold_until < deadline
        if holding and hold_until <= time.monotonic():
            raise Closing(replies.TRANSACTION_TIMEOUT, "transaction timeout")
        while True:
            try:
                return self.connection.read_line(COMMAND_LINE_LIMIT,
                                                 hold_until if holding else deadline)
            except LineTooLong:
                self._reply(replies.COMMAND_TOO_LONG)
            except socket.timeout:
                if holding:  # uses held for a client that does not get on with it (NOOPs...)
                    raise Closing(replies.TRANSACTION_TIMEOUT, "transaction timeout") from None
                raise

    def _dispatch(self, line: bytes) -> None:
        try:
            text = line.rstrip(b"\r\n").decode("utf-8")
        except UnicodeDecodeError:
            self._reply(replies.SYNTAX.with_text("command is not valid UTF-8"))
            return
        verb, _, argument = text.partition(" ")
        handler = getattr(self, "smtp_" + verb.upper(), None) if verb.isascii() else None
        if handler is None or not verb.isalpha():
            self._reply(replies.NOT_IMPLEMENTED)
            return
        try:
            handler(argument.strip(" "))
        except (Closing, ClientGone, socket.timeout, _DataTimeout, GreenletExit):
            raise
        except Exception:
            log.exception("smtp client=%s: error in %s", self.session.peer_ip, verb.upper(),
                          extra={"client": self.session.peer_ip})
            self._end_envelope("local error")
            self._reply(replies.LOCAL_ERROR)

    def _reply(self, reply: Reply) -> None:
        """Answer a command; command errors count against the connection's budget."""
        if reply.code in _BAD_COMMAND_CODES:
            self.session.bad_commands += 1
            if self.session.bad_commands >= self.limits.max_bad_commands:
                raise Closing(replies.TOO_MANY_ERRORS, "too many bad commands")
        self.connection.queue(reply.encode())

    def _end_envelope(self, outcome: str, counted: str | None = None) -> None:
        outbound, self.envelope, self.outbound = self.outbound, None, None
        if outbound is not None:
            outbound.end(outcome, counted)

    # --- greeting commands

    def smtp_EHLO(self, argument: str) -> None:
        if not argument:
            self._reply(replies.SYNTAX.with_text("EHLO needs your domain name"))
            return
        self._end_envelope("reset by EHLO")
        self.session.helo, self.session.esmtp = argument, True
        lines = [f"{self.banner} greets {self.session.peer_ip}",
                 f"SIZE {self.limits.max_message_size}", "8BITMIME", "PIPELINING",
                 "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        if self.tls_context is not None and not self.session.tls:
            lines.append("STARTTLS")
        lines.append("HELP")
        text = "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self.connection.queue(text.encode("ascii"))

    def smtp_HELO(self, argument: str) -> None:
        if not argument:
            self._reply(replies.SYNTAX.with_text("HELO needs your domain name"))
            return
        self._end_envelope("reset by HELO")
        self.session.helo, self.session.esmtp = argument, False
        self.connection.queue(f"250 {self.banner}\r\n".encode("ascii"))

    def smtp_STARTTLS(self, argument: str) -> None:
        if self.tls_context is None:
            self._reply(replies.NOT_IMPLEMENTED)
        elif self.session.tls:
            self._reply(replies.TLS_ALREADY)
        elif argument:
            self._reply(replies.SYNTAX)
        else:
            self._end_envelope("reset by STARTTLS")
            self._reply(replies.READY_FOR_TLS)
            self.connection.start_tls(self.tls_context)
            self.session.helo, self.session.esmtp, self.session.tls = None, False, True

    # --- the transaction

    def smtp_MAIL(self, argument: str) -> None:
        if self.session.helo is None:
            return self._reply(replies.NEED_HELO)
        if self.envelope is not None:
            return self._reply(replies.NESTED_MAIL)
        parsed = _split_path(argument, "FROM:")
        if parsed is None:
            return self._reply(replies.SYNTAX.with_text("syntax: MAIL FROM:<address> [parameters]"))
        path, params = parsed
        envelope = Envelope(sender=path)
        for param in params:
            key, _, value = param.partition("=")
            key = key.upper()
            if key == "SIZE" and value.isdigit() and value.isascii():
                envelope.declared_size = int(value)
            elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                envelope.eight_bit = value.upper() == "8BITMIME"
            elif key == "SMTPUTF8" and not value:
                envelope.smtputf8 = True
            elif key in ("SIZE", "BODY", "SMTPUTF8"):
                return self._reply(replies.SYNTAX.with_text(f"bad value for {key}"))
            else:
                return self._reply(replies.UNKNOWN_PARAMETER)
        if envelope.declared_size is not None and \
                envelope.declared_size > self.limits.max_message_size:
            return self._reply(replies.MESSAGE_TOO_BIG)
        if path:
            _, problem = self._parse(path, envelope, replies.BAD_SENDER_SYNTAX,
                                     fully_qualified=False)
            if problem is not None:
                return self._reply(problem)
        refused = self.forwarder.sender(self.session)
        if refused is not None:
            return self._reply(refused)
        self.envelope = envelope
        self.outbound = self.forwarder.outbound(self.session, envelope)
        self._reply(replies.SENDER_OK)

    def _parse(self, path: str, envelope: Envelope, syntax: Reply,
               fully_qualified: bool = True) -> tuple[Address, None] | tuple[None, Reply]:
        """The address, or the reply that says what is wrong with it."""
        if not path.isascii() and not envelope.smtputf8:
            return None, replies.NEEDS_SMTPUTF8
        try:
            return parse_address(path, fully_qualified, MAX_ADDRESS_OCTETS), None
        except InvalidAddress as exc:
            return None, syntax.with_text(f"{syntax.text}: {exc}")

    def smtp_RCPT(self, argument: str) -> None:
        envelope = self.envelope
        if envelope is None:
            return self._reply(replies.NEED_MAIL)
        parsed = _split_path(argument, "TO:")
        if parsed is None:
            return self._reply(replies.SYNTAX.with_text("syntax: RCPT TO:<address>"))
        path, params = parsed
        if params:
            return self._reply(replies.UNKNOWN_PARAMETER)
        if envelope.accepted >= self.limits.max_recipients:
            return self._reply(replies.TOO_MANY_RECIPIENTS)
        if path.lower() == "postmaster":  # RFC 5321 4.5.1: <Postmaster> with no domain is ours
            path = f"postmaster@{self.forwarder.primary_domain}"
        address, problem = self._parse(path, envelope, replies.BAD_RECIPIENT_SYNTAX)
        if problem is not None:
            return self._reply(problem)
        verdict, recipient = self.outbound.recipient(address)
        if recipient is not None:
            envelope.recipients.append(recipient)
        if verdict.code == 250:
            envelope.accepted += 1
            if envelope.hold_until is None:
                envelope.hold_until = time.monotonic() + self.limits.transaction_timeout
        else:
            envelope.refused += 1
        self._reply_to_recipient(verdict)

    def _reply_to_recipient(self, verdict: Reply) -> None:
        """Refused recipients cost the client: past the limit each answer waits, and at twice the
        limit the connection ends. A guesser gets a handful of tries per connection."""
        session, limit = self.session, self.limits.max_bad_recipients
        if verdict.code >= 500:
            session.bad_recipients += 1
        if session.bad_recipients > limit:
            self.connection.flush()
            gevent.sleep(self.limits.bad_recipient_delay)
            if session.bad_recipients >= 2 * limit:
                raise Closing(replies.TOO_MANY_BAD_RECIPIENTS, "too many refused recipients")
        self._reply(verdict)

    def smtp_DATA(self, argument: str) -> None:
        envelope = self.envelope
        if argument:
            return self._reply(replies.SYNTAX.with_text("DATA takes no parameters"))
        if envelope is None:
            return self._reply(replies.NEED_MAIL)
        if not envelope.recipients:
            return self._reply(replies.NEED_RCPT)
        outbound = self.outbound
        envelope.local_id = secrets.token_hex(6)
        verdict = outbound.begin_data()
        if verdict.code != 354:
            self._end_envelope(f"not delivered ({verdict.code} {verdict.status} at DATA)",
                               replies.reason(verdict))
            return self._reply(verdict)
        self.connection.queue(verdict.encode())
        problem = self._receive_message(outbound)
        self.envelope = self.outbound = None  # end_data ends it, whatever the outcome
        self.connection.queue(outbound.end_data(problem).encode())

    def _receive_message(self, outbound: Outbound) -> Reply | None:
        """Read to the final dot, handing blocks of lines on (data.py says what a message must
        keep to); returns why the message is refused, if so."""
        reader = MessageReader(self.connection, self.limits.max_message_size)
        write = outbound.write
        with gevent.Timeout(self.limits.data_timeout, _DataTimeout):
            try:
                for block in reader.blocks():
                    write(block)
            except BareLineEnd:
                raise Closing(replies.BARE_LINE_END, "bare CR or LF in the message") from None
        return reader.problem

    def smtp_RSET(self, argument: str) -> None:
        if argument:
            return self._reply(replies.SYNTAX.with_text("RSET takes no parameters"))
        self._end_envelope("reset")
        self._reply(replies.RESET)

    # --- the rest

    def smtp_NOOP(self, argument: str) -> None:
        self._reply(replies.NOOP)

    def smtp_VRFY(self, argument: str) -> None:
        if not argument:
            return self._reply(replies.SYNTAX.with_text("VRFY needs an argument"))
        self._reply(replies.CANNOT_VERIFY)

    def smtp_HELP(self, argument: str) -> None:
        self._reply(replies.HELP)

    def smtp_QUIT(self, argument: str) -> None:
        if argument:
            return self._reply(replies.SYNTAX.with_text("QUIT takes no parameters"))
        raise Closing(replies.CLOSING, "quit")
