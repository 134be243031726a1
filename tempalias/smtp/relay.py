"""The smarthost client: smtplib connections, kept for the next message, the message streamed.

Two parts with one job each. ``SmarthostPool`` dials, keeps and reaps connections, and hands one
out through a single checkout that runs the transaction's first exchange on it: a kept connection
found stale there is closed and the exchange runs once more on a fresh one. ``SmarthostTransaction``
is one message on one connection and knows nothing of the pool; ``SmarthostDelivery`` opens
transactions and, when one completed, gives its connection back.

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

import contextlib
import re
import smtplib
import socket
import ssl
import time
from typing import Callable, Iterator, TypeVar

import gevent

from tempalias import metrics
from tempalias.config import SmarthostSettings
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


T = TypeVar("T")
_TALK_ERRORS = (OSError, smtplib.SMTPException, UnicodeError)


class _Stale(Exception):
    """A kept connection turned out to be closed (or closing) at the smarthost's end."""


class SmarthostConnection(smtplib.SMTP):
    """An smtplib connection that knows how many messages it has carried, and counts itself in
    the pool-size gauge from its connect to its close (smtplib's ``quit`` closes too)."""

    messages = 0
    _counted = False

    def connect(self, host: str = "localhost", port: int = 0, source_address=None):
        answer = super().connect(host, port, source_address)
        if not self._counted:
            self._counted = True
            metrics.smarthost_connection_opened(True)
        return answer

    def close(self) -> None:
        super().close()
        if self._counted:
            self._counted = False
            metrics.smarthost_connection_opened(False)


def exchange(client: smtplib.SMTP, lines: list[str]) -> list[tuple[int, bytes]]:
    """Send ``lines`` as one write, read one reply per line. Raises OSError, SMTPException,
    UnicodeError."""
    if client.sock is None:
        raise smtplib.SMTPServerDisconnected("smarthost connection closed")
    send_all(client.sock, "".join(line + "\r\n" for line in lines).encode(client.command_encoding))
    return [client.getreply() for _ in lines]


def expect(answer: tuple[int, bytes], code: int, what: str) -> None:
    """The one check of a smarthost reply: ``code``, or a DeliveryError that carries its code and
    enhanced code in our words (the caller closes the connection)."""
    got, text = answer
    if got != code:
        raise DeliveryError(passed_back(got, text, replies.SMARTHOST_TEMPFAIL,
                                        replies.SMARTHOST_REFUSED),
                            f"smarthost {what} {got}", next_hop_code=got)


def _close(client: smtplib.SMTP) -> None:
    try:
        client.close()
    except OSError:
        pass


def _quit(client: smtplib.SMTP) -> None:
    """Say goodbye without waiting for the answer, and close."""
    try:
        if client.sock is not None:
            client.sock.sendall(b"QUIT\r\n")
    except OSError:
        pass
    _close(client)


class SmarthostPool:
    """Dial, keep a few idle connections, reap them, and hand them out (see the module docstring).

    A new connection per message costs about half the throughput (docs/performance-notes.md);
    after a completed DATA a session is ready for its next MAIL.
    """

    def __init__(self, settings: SmarthostSettings, helo_name: str) -> None:
        """``settings``: the smarthost section of the Config."""
        if settings.smarthost is None:
            raise ValueError("no smarthost configured")
        self.host = settings.smarthost.host
        self.port = settings.smarthost.port
        self.timeout = settings.smarthost_timeout
        self.tls = settings.smarthost_tls
        self.user = settings.smarthost_user
        self.password = settings.smarthost_password
        self.helo_name = helo_name
        self.idle_seconds = settings.smarthost_idle_seconds
        self.max_messages = settings.smarthost_max_messages
        self._idle: list[tuple[float, SmarthostConnection]] = []  # (since, connection), newest last
        self._reaper: gevent.Greenlet | None = None

    # --- dialling

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.tls == "opportunistic":
            # Opportunistic TLS guards against passive listening only (RFC 7435): no verification.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def dial(self) -> SmarthostConnection:
        """A fresh, greeted connection; raises DeliveryError (4xx) when there is none to have."""
        started = time.monotonic()
        try:
            client = self._connect()
            metrics.smarthost_connected(True, time.monotonic() - started)
            return client
        except (OSError, smtplib.SMTPException, ValueError) as exc:  # ValueError: from ssl
            metrics.smarthost_connected(False, time.monotonic() - started)
            raise DeliveryError(replies.SMARTHOST_UNAVAILABLE,
                                f"smarthost {self.host}:{self.port}: {exc}") from None

    def _connect(self) -> SmarthostConnection:
        # Connects and reads the greeting (SMTPConnectError unless 220); the host name given here
        # is also the one STARTTLS verifies.
        client = SmarthostConnection(self.host, self.port, timeout=self.timeout,
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

    # --- the one checkout

    def checkout(self, first: Callable[[SmarthostConnection, bool], T]
                 ) -> tuple[SmarthostConnection, T]:
        """A connection with ``first(connection, reused)`` run on it: a kept one if there is one;
        if ``first`` finds it stale (or it breaks), a fresh one, once. ``first`` raises _Stale for
        a kept connection that answers as a closing one; a DeliveryError it raises ends the
        checkout (the connection is closed). Raises DeliveryError."""
        client = self._take_idle()
        if client is not None:
            try:
                return client, first(client, True)
            except (_Stale, *_TALK_ERRORS):
                _close(client)  # the smarthost closed it while it was idle
            except BaseException:
                _close(client)
                raise
        client = self.dial()
        try:
            return client, first(client, False)
        except (_Stale, *_TALK_ERRORS) as exc:
            _close(client)
            raise DeliveryError(replies.SMARTHOST_UNAVAILABLE, f"smarthost: {exc}") from None
        except BaseException:
            _close(client)
            raise

    # --- keeping and reaping

    def give_back(self, client: SmarthostConnection) -> None:
        self._drop_stale()
        client.messages += 1
        if (len(self._idle) >= IDLE_CONNECTIONS or client.sock is None
                or client.messages >= self.max_messages):
            _quit(client)
            return
        self._idle.append((time.monotonic(), client))
        metrics.smarthost_idle(len(self._idle))
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
        metrics.smarthost_idle(len(self._idle))

    def _take_idle(self) -> SmarthostConnection | None:
        self._drop_stale()
        if not self._idle:
            return None
        client = self._idle.pop()[1]
        metrics.smarthost_idle(len(self._idle))
        return client

    def close(self) -> None:
        """Say goodbye on every idle connection (at shutdown)."""
        if self._reaper is not None:
            self._reaper.kill(block=False)
            self._reaper = None
        while self._idle:
            _quit(self._idle.pop()[1])
        metrics.smarthost_idle(0)


class SmarthostTransaction:
    """One message on one smarthost connection, whose MAIL and first RCPT were already answered.

    Holds the connection and nothing else: once ``finish`` succeeded, ``connection`` is clean for
    the next message; any other ending closed it.
    """

    def __init__(self, client: SmarthostConnection) -> None:
        self.connection: SmarthostConnection | None = client
        self._unsent: list[bytes] = []  # header and lines not yet written: one send, not three
        self._unsent_bytes = 0
        self._data_answer_due = False  # DATA sent, its 354 not read yet
        self._finished = False

    def _fail(self, exc: BaseException) -> DeliveryError:
        self.abort()
        return DeliveryError(replies.SMARTHOST_UNAVAILABLE, f"smarthost: {exc}")

    def _expect(self, answer: tuple[int, bytes], code: int, what: str) -> None:
        try:
            expect(answer, code, what)
        except DeliveryError:
            self.abort()
            raise

    def _read_reply(self) -> tuple[int, bytes]:
        try:
            return self.connection.getreply()
        except (OSError, smtplib.SMTPException, AttributeError) as exc:
            raise self._fail(exc) from None

    def add_recipient(self, address: str) -> Reply | None:
        if self.connection is None:
            raise DeliveryError(replies.SMARTHOST_UNAVAILABLE, "smarthost transaction is over")
        try:
            [(code, text)] = exchange(self.connection, [f"RCPT TO:<{address}>"])
        except _TALK_ERRORS as exc:
            raise self._fail(exc) from None
        return rcpt_verdict(code, text)

    def start_data(self, header: bytes) -> None:
        """Send DATA without waiting for its 354: our client may start on the message meanwhile.
        The answer is read before the first byte of the message goes out; a refusal then
        becomes the verdict on the whole message, given after the client's final dot."""
        self._send(b"DATA\r\n")
        self._data_answer_due = True
        self._unsent, self._unsent_bytes = [header], len(header)

    def write(self, data: bytes) -> None:
        # Still dot-stuffed, as the smarthost must get it (RFC 5321 section 4.5.2).
        self._unsent.append(data)
        self._unsent_bytes += len(data)
        if self._unsent_bytes >= STREAM_CHUNK:
            self._send_unsent()

    def _send_unsent(self) -> None:
        if self._data_answer_due:
            self._data_answer_due = False
            self._expect(self._read_reply(), 354, "DATA")
        data = b"".join(self._unsent)
        self._unsent, self._unsent_bytes = [], 0
        self._send(data)

    def _send(self, data: bytes) -> None:
        sock = self.connection.sock if self.connection is not None else None
        if sock is None:
            raise DeliveryError(replies.SMARTHOST_UNAVAILABLE, "smarthost connection closed")
        try:
            send_all(sock, data)
        except OSError as exc:
            raise self._fail(exc) from None

    def finish(self) -> str:
        self._unsent.append(b".\r\n")
        self._send_unsent()
        code, text = self._read_reply()
        self._expect((code, text), 250, "DATA end")
        self._finished = True
        return queue_id_of(text)

    def detach(self) -> SmarthostConnection | None:
        """The connection, clean for the next message, once ``finish`` succeeded; else None."""
        client, self.connection = (self.connection, None) if self._finished else (None, None)
        return client

    def abort(self) -> None:
        """Close without the final dot, so a half-sent message is discarded by the smarthost."""
        client, self.connection = self.connection, None
        if client is not None and not self._finished:
            _close(client)


def rcpt_verdict(code: int, text: bytes) -> Reply | None:
    """None for an accepted recipient, else our reply in its place."""
    if code in (250, 251):
        return None
    return passed_back(code, text, RCPT_DEFERRED, RCPT_REFUSED)


class SmarthostDelivery:
    """Opens transactions on the pool's connections, and gives a connection back when its
    transaction completed.

    With PIPELINING (RFC 2920) offered, MAIL is not sent on its own: it goes out with the first
    RCPT in one write (and, on a kept connection, after an RSET that checks the connection is
    still good), so the first recipient costs one round trip to the smarthost, not two or three.
    """

    def __init__(self, settings: SmarthostSettings, helo_name: str) -> None:
        """``settings``: the smarthost section of the Config."""
        self.pool = SmarthostPool(settings, helo_name)
        self.description = f"smarthost {settings.smarthost}"
        self.local = False

    def open(self, sender: str, recipient: str, smtputf8: bool, eight_bit: bool,
             size: int | None) -> tuple[SmarthostTransaction, Reply | None]:
        """MAIL and the first RCPT; the transaction and the first recipient's verdict."""
        rcpt_line = f"RCPT TO:<{recipient}>"

        def first(client: SmarthostConnection, reused: bool) -> tuple[int, bytes]:
            mail_line = _mail_line(client, sender, smtputf8, eight_bit, size)
            lines = (["RSET"] if reused else []) + [mail_line, rcpt_line]
            if client.has_extn("pipelining"):
                answers = exchange(client, lines)
            else:  # one at a time, and no further than the first refusal
                answers = []
                for line in lines:
                    answers += exchange(client, [line])
                    if answers[-1][0] != 250:
                        break
            if reused and (answers[0][0] != 250 or (len(answers) > 1 and answers[1][0] == 421)):
                raise _Stale(f"kept connection answered {answers[0][0]}")
            if len(answers) < len(lines):  # MAIL was refused; RCPT never went out
                expect(answers[-1], 250, "MAIL")
            expect(answers[-2], 250, "MAIL")
            return answers[-1]

        with _timed("mail"):
            client, (code, text) = self.pool.checkout(first)
        return SmarthostTransaction(client), rcpt_verdict(code, text)

    def finish(self, transaction: SmarthostTransaction) -> str:
        """End the message; the connection goes back to the pool for the next one."""
        with _timed("data-end"):
            queue_id = transaction.finish()
        client = transaction.detach()
        if client is not None:
            self.pool.give_back(client)
        return queue_id

    def close(self) -> None:
        self.pool.close()


@contextlib.contextmanager
def _timed(step: str) -> Iterator[None]:
    """One step's time at the smarthost, by how it ended (ok, tempfail, refused)."""
    started, result = time.monotonic(), "tempfail"
    try:
        yield
        result = "ok"
    except DeliveryError as exc:
        result = "refused" if exc.reply.code >= 500 else "tempfail"
        raise
    finally:
        metrics.smarthost_step(step, result, time.monotonic() - started)


def _mail_line(client: smtplib.SMTP, sender: str, smtputf8: bool, eight_bit: bool,
               size: int | None) -> str:
    options: list[str] = []
    if size is not None and client.has_extn("size"):
        options.append(f"SIZE={size}")
    if eight_bit and client.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if smtputf8:
        if not client.has_extn("smtputf8"):
            raise DeliveryError(replies.SMTPUTF8_NOT_DELIVERABLE, "smarthost lacks SMTPUTF8")
        options.append("SMTPUTF8")
    client.command_encoding = "utf-8" if smtputf8 else "ascii"
    return f"MAIL FROM:<{sender}>" + "".join(" " + o for o in options)
