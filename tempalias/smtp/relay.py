"""The smarthost client: smtplib connections, kept for the next message, the message streamed.

smtplib gives us the connection, EHLO, STARTTLS and AUTH; for MAIL, RCPT and the message itself
we write on its socket directly, because ``smtplib.SMTP.data`` wants the whole message in memory.
A connection whose transaction completed is kept idle for the next one (a few per process, for a
few seconds, for a bounded number of messages) and checked with RSET before it is used again; any
other ending closes it without the final dot, so nothing half-sent is delivered.
Every wait is bounded by ``smarthost_timeout`` (the socket's timeout). The smarthost's reply texts
are never passed to our client: they may name the target address, which only the alias's owner may
see. Its reply codes and enhanced status codes are passed back.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import time

import gevent

from tempalias.config import Config
from tempalias.netio import send_all
from tempalias.smtp import replies
from tempalias.smtp.delivery import DeliveryError
from tempalias.smtp.replies import Reply

IDLE_CONNECTIONS = 16  # idle smarthost connections kept per process

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")
_QUEUE_ID = re.compile(r"queued as\s+<?([A-Za-z0-9._@-]+)", re.IGNORECASE)

STREAM_CHUNK = 65536  # bytes of message held before they are written to the smarthost
RCPT_DEFERRED = Reply(450, "4.0.0", "the next hop deferred this recipient, try again later")
RCPT_REFUSED = Reply(550, "5.0.0", "the next hop refused this recipient")


def passed_back(code: int, text: bytes | str, temporary: Reply, permanent: Reply) -> Reply:
    """Our reply for a next-hop refusal: its code and enhanced code, our own words."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    base = permanent if 500 <= code <= 599 else temporary
    if not (400 <= code <= 599):
        return temporary  # nonsense from the next hop: try again later
    if code == 421:
        code = 451  # the next hop closing its connection is no reason to close ours
    match = _ENHANCED.match(text.strip())
    status = base.status
    if match and match.group(1) == str(code // 100):
        status = ".".join(match.groups())
    return Reply(code, status, f"{base.text} ({code} {status} from the next hop)")


def queue_id_of(text: bytes) -> str:
    match = _QUEUE_ID.search(text.decode("utf-8", "replace"))
    return match.group(1) if match else "-"


class _Stale(Exception):
    """A kept connection turned out to be closed (or closing) at the smarthost's end."""


class SmarthostTransaction:
    """One message on one smarthost connection.

    With PIPELINING (RFC 2920) offered, MAIL is not sent on its own: it goes out with the first
    RCPT in one write (and, on a kept connection, after an RSET that checks the connection is
    still good), so the first recipient costs one round trip to the smarthost, not two or three.
    """

    def __init__(self, client: smtplib.SMTP, delivery: "SmarthostDelivery", mail_line: str,
                 reused: bool) -> None:
        self._client: smtplib.SMTP | None = client
        self._delivery = delivery
        self._mail_line: str | None = mail_line  # not yet sent: it goes with the first RCPT
        self._reused = reused
        self._unsent: list[bytes] = []  # header and lines not yet written: one send, not three
        self._unsent_bytes = 0
        self._data_answer_due = False  # DATA sent, its 354 not read yet

    # --- talking to the smarthost

    def _exchange(self, lines: list[str]) -> list[tuple[int, bytes]]:
        """Send ``lines`` as one write, read one reply per line. Raises OSError, SMTPException,
        UnicodeError."""
        client = self._client
        if client is None or client.sock is None:
            raise smtplib.SMTPServerDisconnected("smarthost connection closed")
        data = "".join(line + "\r\n" for line in lines).encode(client.command_encoding)
        send_all(client.sock, data)
        return [client.getreply() for _ in lines]

    def _unavailable(self, exc: BaseException) -> DeliveryError:
        self.abort()
        return DeliveryError(replies.SMARTHOST_UNAVAILABLE, f"smarthost: {exc}")

    def _command(self, line: str) -> tuple[int, bytes]:
        if self._client is None:
            raise DeliveryError(replies.SMARTHOST_UNAVAILABLE, "smarthost transaction is over")
        try:
            return self._exchange([line])[0]
        except (OSError, smtplib.SMTPException, UnicodeError) as exc:
            raise self._unavailable(exc) from None

    def _check_mail(self, code: int, text: bytes) -> None:
        if code != 250:
            self.abort()
            raise DeliveryError(passed_back(code, text, replies.SMARTHOST_TEMPFAIL,
                                            replies.SMARTHOST_REFUSED), f"smarthost MAIL {code}",
                                next_hop_code=code)

    def mail(self) -> None:
        """MAIL on its own (a smarthost without PIPELINING), after an RSET on a kept connection:
        its health check, a round trip of its own here. A kept connection that fails it raises
        SMARTHOST_UNAVAILABLE, and the delivery dials a fresh one."""
        if self._reused:
            code, _ = self._command("RSET")
            if code != 250:
                self.abort()
                raise DeliveryError(replies.SMARTHOST_UNAVAILABLE, f"smarthost RSET {code}")
        line, self._mail_line = self._mail_line, None
        self._check_mail(*self._command(line))

    def _mail_and_first_rcpt(self, rcpt_line: str) -> tuple[int, bytes]:
        """[RSET,] MAIL and RCPT in one write; a kept connection found stale is replaced once."""
        mail_line, self._mail_line = self._mail_line, None
        while True:
            lines = (["RSET"] if self._reused else []) + [mail_line, rcpt_line]
            try:
                answers = self._exchange(lines)
                if self._reused and (answers[0][0] != 250 or answers[1][0] == 421):
                    raise _Stale(f"kept connection answered {answers[0][0]}/{answers[1][0]}")
            except (OSError, smtplib.SMTPException, UnicodeError, _Stale) as exc:
                if not self._reused or isinstance(exc, UnicodeError):
                    raise self._unavailable(exc) from None
                # The smarthost closed it while it was idle: a fresh connection, once.
                self.abort()
                self._client, self._reused = self._delivery.dial(), False
                continue
            self._check_mail(*answers[-2])
            return answers[-1]

    def add_recipient(self, address: str) -> Reply | None:
        rcpt_line = f"RCPT TO:<{address}>"
        if self._mail_line is not None:
            code, text = self._mail_and_first_rcpt(rcpt_line)
        else:
            code, text = self._command(rcpt_line)
        if code in (250, 251):
            return None
        return passed_back(code, text, RCPT_DEFERRED, RCPT_REFUSED)

    def start_data(self, header: bytes) -> None:
        """Send DATA without waiting for its 354: our client may start on the message meanwhile.
        The answer is read before the first byte of the message goes out; a refusal then
        becomes the verdict on the whole message, given after the client's final dot."""
        self._send(b"DATA\r\n")
        self._data_answer_due = True
        self._unsent, self._unsent_bytes = [header], len(header)

    def _check_data_answer(self) -> None:
        self._data_answer_due = False
        try:
            code, text = self._client.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            raise self._unavailable(exc) from None
        if code != 354:
            self.abort()
            raise DeliveryError(passed_back(code, text, replies.SMARTHOST_TEMPFAIL,
                                            replies.SMARTHOST_REFUSED), f"smarthost DATA {code}")

    def write(self, data: bytes) -> None:
        # Still dot-stuffed, as the smarthost must get it (RFC 5321 section 4.5.2).
        self._unsent.append(data)
        self._unsent_bytes += len(data)
        if self._unsent_bytes >= STREAM_CHUNK:
            self._send_unsent()

    def _send_unsent(self) -> None:
        if self._data_answer_due:
            self._check_data_answer()
        data = b"".join(self._unsent)
        self._unsent, self._unsent_bytes = [], 0
        self._send(data)

    def _send(self, data: bytes) -> None:
        sock = self._client.sock if self._client is not None else None
        if sock is None:
            raise DeliveryError(replies.SMARTHOST_UNAVAILABLE, "smarthost connection closed")
        try:
            send_all(sock, data)
        except OSError as exc:
            raise self._unavailable(exc) from None

    def finish(self) -> str:
        self._unsent.append(b".\r\n")
        self._send_unsent()
        try:
            code, text = self._client.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            raise self._unavailable(exc) from None
        if code != 250:
            self.abort()
            verdict = passed_back(code, text, replies.SMARTHOST_TEMPFAIL, replies.SMARTHOST_REFUSED)
            raise DeliveryError(verdict, f"smarthost DATA end {code}")
        client, self._client = self._client, None
        self._delivery.give_back(client)  # the transaction is complete: it can take the next
        return queue_id_of(text)

    def abort(self) -> None:
        """Close without the final dot, so a half-sent message is discarded by the smarthost."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.close()
        except OSError:
            pass


class _SmarthostClient(smtplib.SMTP):
    """An smtplib connection that knows how many messages it has carried."""

    messages = 0


class SmarthostDelivery:
    def __init__(self, config: Config, helo_name: str) -> None:
        if config.smarthost is None:
            raise ValueError("no smarthost configured")
        self.host = config.smarthost.host
        self.port = config.smarthost.port
        self.timeout = config.smarthost_timeout
        self.tls = config.smarthost_tls
        self.user = config.smarthost_user
        self.password = config.smarthost_password
        self.helo_name = helo_name
        self.description = f"smarthost {config.smarthost}"
        self.local = False
        self.idle_seconds = config.smarthost_idle_seconds
        self.max_messages = config.smarthost_max_messages
        self._idle: list[tuple[float, smtplib.SMTP]] = []  # (since, connection), newest last
        self._reaper: gevent.Greenlet | None = None

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.tls == "opportunistic":
            # Opportunistic TLS guards against passive listening only (RFC 7435): no verification.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def dial(self) -> smtplib.SMTP:
        """A fresh, greeted connection; raises DeliveryError (4xx) when there is none to have."""
        try:
            return self._connect()
        except (OSError, smtplib.SMTPException, ValueError) as exc:  # ValueError: from ssl
            raise DeliveryError(replies.SMARTHOST_UNAVAILABLE,
                                f"smarthost {self.host}:{self.port}: {exc}") from None

    def _connect(self) -> smtplib.SMTP:
        # Connects and reads the greeting (SMTPConnectError unless 220); the host name given here
        # is also the one STARTTLS verifies.
        client = _SmarthostClient(self.host, self.port, timeout=self.timeout,
                                  local_hostname=self.helo_name)
        try:
            # Commands and the message go out in separate small writes: without this, Nagle's
            # algorithm and the peer's delayed ACK add ~40 ms to each (docs/performance-notes.md).
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code, _ = client.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, "EHLO refused")
            if self.tls != "off":
                if client.has_extn("starttls"):
                    client.starttls(context=self._tls_context())
                    client.ehlo()
                elif self.tls == "required":
                    raise smtplib.SMTPNotSupportedError("smarthost does not offer STARTTLS")
            if self.user is not None:
                client.login(self.user, self.password or "")
        except BaseException:
            client.close()
            raise
        return client

    # --- a few idle connections are kept: a new one per message costs about half the throughput
    # (docs/performance-notes.md). After a completed DATA a session is ready for its next MAIL.

    def give_back(self, client: smtplib.SMTP) -> None:
        self._drop_stale()
        client.messages += 1
        if (len(self._idle) >= IDLE_CONNECTIONS or client.sock is None
                or client.messages >= self.max_messages):
            _quit(client)
            return
        self._idle.append((time.monotonic(), client))
        if self._reaper is None:
            self._reaper = gevent.spawn_later(self.idle_seconds, self._reap)

    def _reap(self) -> None:
        """Close connections idle for ``idle_seconds`` even when no further message comes."""
        self._reaper = None
        self._drop_stale()
        if self._idle:
            wake = self._idle[0][0] + self.idle_seconds - time.monotonic()
            self._reaper = gevent.spawn_later(max(0.05, wake), self._reap)

    def _drop_stale(self) -> None:
        limit = time.monotonic() - self.idle_seconds
        while self._idle and self._idle[0][0] <= limit:
            _quit(self._idle.pop(0)[1])

    def _reused(self) -> smtplib.SMTP | None:
        self._drop_stale()
        return self._idle.pop()[1] if self._idle else None

    def close(self) -> None:
        """Say goodbye on every idle connection (at shutdown)."""
        if self._reaper is not None:
            self._reaper.kill(block=False)
            self._reaper = None
        while self._idle:
            _quit(self._idle.pop()[1])

    def open(self, sender: str, smtputf8: bool, eight_bit: bool,
             size: int | None) -> SmarthostTransaction:
        client = self._reused()
        if client is not None:
            try:
                return self._begin(client, True, sender, smtputf8, eight_bit, size)
            except DeliveryError as exc:
                if exc.reply is not replies.SMARTHOST_UNAVAILABLE and exc.next_hop_code != 421:
                    raise
                # The smarthost closed it while it was idle: a fresh connection, once.
        return self._begin(self.dial(), False, sender, smtputf8, eight_bit, size)

    def _begin(self, client: smtplib.SMTP, reused: bool, sender: str, smtputf8: bool,
               eight_bit: bool, size: int | None) -> SmarthostTransaction:
        options: list[str] = []
        if size is not None and client.has_extn("size"):
            options.append(f"SIZE={size}")
        if eight_bit and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if smtputf8:
            if not client.has_extn("smtputf8"):
                client.close()
                raise DeliveryError(replies.SMTPUTF8_NOT_DELIVERABLE, "smarthost lacks SMTPUTF8")
            options.append("SMTPUTF8")
        client.command_encoding = "utf-8" if smtputf8 else "ascii"
        mail_line = f"MAIL FROM:<{sender}>" + "".join(" " + o for o in options)
        transaction = SmarthostTransaction(client, self, mail_line, reused)
        if not client.has_extn("pipelining"):
            transaction.mail()  # otherwise it goes out with the first RCPT
        return transaction


def _quit(client: smtplib.SMTP) -> None:
    """Say goodbye without waiting for the answer, and close."""
    try:
        if client.sock is not None:
            client.sock.sendall(b"QUIT\r\n")
    except OSError:
        pass
    try:
        client.close()
    except OSError:
        pass
