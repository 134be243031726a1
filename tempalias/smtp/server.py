"""The SMTP listener: a gevent StreamServer whose connections run ``SMTPProtocol``.

Shape of gevent's ``examples/portforwarder.py``: dependencies come in through ``__init__``,
connections run in a bounded ``Pool``. Over the bound, a new connection is answered ``421`` at once
and closed (StreamServer's own behaviour would be to stop accepting, leaving clients hanging).
"""

from __future__ import annotations

import logging
import ssl

import gevent
from gevent.pool import Group, Pool
from gevent.server import StreamServer

from tempalias import metrics
from tempalias.abuse import AbusePolicy, parse_ip
from tempalias.config import SmtpSettings
from tempalias.smtp import replies
from tempalias.smtp.connection import Connection
from tempalias.smtp.forwarder import Forwarder
from tempalias.smtp.protocol import Limits, SMTPProtocol
from tempalias.smtp.refusals import refusal_reason, refusal_reply
from tempalias.smtp.replies import Reply
from tempalias.smtp.session import Session

log = logging.getLogger("tempalias.smtp")

# How long what a closed connection held (its slot among the client's open connections) may wait
# to go back to Redis with the next connection of the same client, or with the others that close
# meanwhile, in one write: under load the release costs no round trip of its own. Another process
# may see the slot taken this much longer (this one's next admission of the client never does).
LEAVING_BATCH_SECONDS = 0.01


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    """The STARTTLS context, when a certificate is configured; raises OSError if unreadable."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


class SMTPServer(StreamServer):
    def __init__(self, listener, settings: SmtpSettings, banner: str, forwarder: Forwarder,
                 policy: AbusePolicy | None = None) -> None:
        super().__init__(listener, spawn=Pool(settings.smtp_max_connections))
        self.policy = policy
        self.refusal_timeout = settings.smtp_idle_timeout
        self.full = lambda: False  # never stop accepting: over the bound we answer 421 instead
        self._giving_back: gevent.Greenlet | None = None  # the next give-back, scheduled
        self._givers = Group()  # and those under way, for stop to wait for
        self.forwarder = forwarder
        self.banner = banner
        self.tls_context = tls_context(settings)
        self.limits = Limits(
            max_message_size=settings.max_message_size,
            idle_timeout=settings.smtp_idle_timeout,
            data_timeout=settings.smtp_data_timeout,
            max_bad_commands=settings.smtp_max_bad_commands,
            max_recipients=settings.smtp_max_recipients,
            max_bad_recipients=settings.smtp_max_bad_recipients,
            bad_recipient_delay=settings.smtp_bad_recipient_delay,
            transaction_timeout=settings.smtp_transaction_timeout,
        )

    @property
    def open_sessions(self) -> int:
        return len(self.pool)

    def do_handle(self, sock, address) -> None:
        if self.pool.full():
            self._refuse(sock)
            return
        super().do_handle(sock, address)

    def _refuse(self, sock) -> None:
        """Runs in the accept loop: must not wait. A fresh socket's send buffer is empty."""
        try:
            sock.setblocking(False)
            metrics.smtp_connection("too-busy")
            sock.send(replies.TOO_BUSY.encode())
        except OSError:
            pass
        finally:
            sock.close()

    def handle(self, sock, address) -> None:
        """Ask the abuse policy first (block lists, connection limits), then speak SMTP."""
        client, refusal = self.policy.on_connect(address[0]) if self.policy else (None, None)
        if refusal is not None:
            metrics.smtp_connection(refusal_reason(refusal))
            self._refuse_client(sock, refusal_reply(refusal, at_connect=True))
            return
        metrics.smtp_connection("accepted")
        try:
            # an IPv4 client of a dual-stack listener is named by its IPv4 address (greeting,
            # Received:), not as ::ffff:a.b.c.d
            session = Session(peer_ip=str(parse_ip(address[0]) or address[0]),
                              peer_port=address[1], client=client)
            connection = Connection(sock, self.limits.idle_timeout)
            SMTPProtocol(connection, session, self.forwarder, self.limits, self.banner,
                         self.tls_context).run()
        finally:
            if client is not None and self.policy.on_disconnect_later(client):
                self._give_back_soon()

    def _give_back_soon(self) -> None:
        if self._giving_back is None:
            self._giving_back = gevent.spawn_later(LEAVING_BATCH_SECONDS, self._give_back)
            self._givers.add(self._giving_back)

    def _give_back(self) -> None:
        self._giving_back = None
        self.policy.give_back_pending()

    def stop(self, timeout=None) -> None:
        """Stop serving (closed connections give back what they held), then let what is still
        pending go back to Redis before the process ends."""
        super().stop(timeout)
        self._givers.join()
        if self.policy:
            self.policy.give_back_pending()

    def _refuse_client(self, sock, reply: Reply) -> None:
        """The refusal takes the place of the greeting (RFC 5321 3.1: 554 or 421, then close)."""
        try:
            sock.settimeout(self.refusal_timeout)
            sock.sendall(reply.encode())
        except OSError:
            pass
        finally:
            sock.close()
