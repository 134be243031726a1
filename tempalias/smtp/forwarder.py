"""The forwarding policy: which recipients are accepted, and what happens to their uses.

The protocol module knows SMTP; this module knows aliases. A recipient on one of our domains is
either an alias (one use reserved in the store, per alias per message) or an SRS return address
of ours (a bounce, sent back to the original sender). The next hop's transaction is opened at the
first accepted recipient, so nothing reaches the smarthost for mail that is refused anyway. Every
way an envelope ends goes through ``end_envelope``: uses of a delivered message are committed,
every other use is released, and one log line is written.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timezone
from email.utils import format_datetime

from tempalias.abuse import AbusePolicy, Refusal
from tempalias.addresses import Address
from tempalias.config import Config
from tempalias.smtp import replies
from tempalias.smtp.delivery import Delivery, DeliveryError
from tempalias.smtp.replies import Reply
from tempalias.smtp.session import Envelope, Recipient, Session
from tempalias.srs import SRS, InvalidSRS, is_srs
from tempalias.store import AliasRefused, AliasStore, StoreUnavailable, normalise_id

log = logging.getLogger("tempalias.smtp")

_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")


def refusal_reply(refusal: Refusal) -> Reply:
    return Reply(refusal.code, refusal.enhanced, refusal.text)


class Forwarder:
    def __init__(self, config: Config, store: AliasStore, srs: SRS, delivery: Delivery,
                 policy: AbusePolicy | None = None) -> None:
        self.domains = frozenset(config.domains)
        self.primary_domain = config.primary_domain
        self.postmaster = config.postmaster
        self.banner = config.banner_hostname or config.primary_domain
        self.store = store
        self.srs = srs
        self.delivery = delivery
        self.policy = policy

    # --- senders

    def sender(self, session: Session) -> Reply | None:
        """MAIL FROM: may this client start one more message now? None: yes."""
        refusal = self.policy.on_message(session.peer_ip) if self.policy else None
        return refusal_reply(refusal) if refusal else None

    # --- recipients

    def recipient(self, session: Session, envelope: Envelope, address: Address) -> Reply:
        if address.domain not in self.domains:
            envelope.refused += 1
            return replies.RELAY_DENIED
        if is_srs(address.local):
            return self._bounce_recipient(session, envelope, address.local)
        if address.local.lower() == "postmaster":
            return self._postmaster_recipient(session, envelope)
        alias_id = normalise_id(address.local)
        if alias_id is None:
            envelope.refused += 1
            return replies.NO_SUCH_ALIAS
        if envelope.has_alias(alias_id):
            return replies.RECIPIENT_OK  # the same alias twice in one message is one use
        try:
            reservation = self.store.reserve(alias_id)
        except AliasRefused:
            envelope.refused += 1
            return replies.NO_SUCH_ALIAS
        except StoreUnavailable as exc:
            log.warning("smtp client=%s: %s", session.peer_ip, exc)
            return replies.STORE_UNAVAILABLE
        recipient = Recipient(alias_id, reservation.target, reservation)
        refusal = self.policy.on_alias_delivery(alias_id, session.peer_ip) if self.policy else None
        if refusal:
            envelope.refused += 1
            self._release(recipient)
            return refusal_reply(refusal)
        return self._add(session, envelope, recipient)

    def _postmaster_recipient(self, session: Session, envelope: Envelope) -> Reply:
        """RFC 5321 4.5.1: postmaster (any case) at each of our domains reaches a person: the
        configured address, or, when mail stays on this machine (Maildir), the Maildir itself."""
        target = self.postmaster
        if target is None and self.delivery.local:
            target = f"postmaster@{self.primary_domain}"
        if target is None:
            envelope.refused += 1
            return replies.NO_POSTMASTER
        if envelope.has_target(target):
            return replies.RECIPIENT_OK
        return self._add(session, envelope, Recipient("postmaster", target))

    def _bounce_recipient(self, session: Session, envelope: Envelope, local: str) -> Reply:
        if envelope.sender:
            envelope.refused += 1
            return replies.SRS_NEEDS_NULL_SENDER
        try:
            original = self.srs.reverse(local)
        except InvalidSRS:
            envelope.refused += 1
            return replies.BAD_SRS
        if envelope.has_target(original):
            return replies.RECIPIENT_OK
        return self._add(session, envelope, Recipient("srs", original))

    def _add(self, session: Session, envelope: Envelope, recipient: Recipient) -> Reply:
        if not recipient.target.isascii() and not envelope.smtputf8:
            envelope.refused += 1
            self._release(recipient)
            return replies.TARGET_NEEDS_SMTPUTF8
        try:
            if envelope.transaction is None:
                envelope.transaction = self.delivery.open(
                    self.srs.forward(envelope.sender), envelope.smtputf8, envelope.eight_bit,
                    envelope.declared_size)
            verdict = envelope.transaction.add_recipient(recipient.target)
        except DeliveryError as exc:
            log.warning("smtp client=%s id=%s: %s", session.peer_ip, recipient.label, exc.detail)
            if not envelope.recipients:
                envelope.transaction = None  # the next recipient may try a fresh connection
            self._release(recipient)
            return exc.reply
        if verdict is not None:
            envelope.refused += 1
            self._release(recipient)
            return verdict
        envelope.recipients.append(recipient)
        return replies.RECIPIENT_OK

    # --- the message

    def begin_data(self, session: Session, envelope: Envelope) -> Reply:
        envelope.local_id = secrets.token_hex(6)
        try:
            envelope.transaction.start_data(self._received(session, envelope))
        except DeliveryError as exc:
            envelope.failure = exc
            return exc.reply
        return replies.START_DATA

    def write(self, envelope: Envelope, data: bytes) -> None:
        """Pass whole lines on; after a failure, keep quiet (the client is still sending)."""
        if envelope.failure is not None:
            return
        try:
            envelope.transaction.write(data)
        except DeliveryError as exc:
            envelope.failure = exc

    def end_data(self, session: Session, envelope: Envelope, problem: Reply | None) -> Reply:
        """The client sent the final dot: finish at the next hop, or give up and say why."""
        if problem is not None:
            self.end_envelope(session, envelope, f"refused ({problem.code} {problem.status})")
            return problem
        if envelope.failure is None:
            try:
                envelope.queue_id = envelope.transaction.finish()
            except DeliveryError as exc:
                envelope.failure = exc
        if envelope.failure is not None:
            reply = envelope.failure.reply
            self.end_envelope(session, envelope, f"not delivered ({reply.code} {reply.status}: "
                                                 f"{envelope.failure.detail or reply.text})")
            return reply
        envelope.transaction = None  # finished: nothing to abort
        self._commit_all(envelope)
        self.end_envelope(session, envelope, "delivered")
        return replies.QUEUED.with_text(f"OK: delivered as {envelope.queue_id}")

    def _received(self, session: Session, envelope: Envelope) -> bytes:
        helo = _HELO_UNSAFE.sub("", session.helo or "")[:255] or "unknown"
        protocol = ("UTF8SMTP" if envelope.smtputf8 else "ESMTP" if session.esmtp else "SMTP")
        if session.tls:
            protocol += "S"
        stamp = format_datetime(datetime.now(timezone.utc))
        return (f"Received: from {helo} ([{session.peer_ip}])\r\n"
                f"\tby {self.banner} (tempalias) with {protocol} id {envelope.local_id};\r\n"
                f"\t{stamp}\r\n").encode("ascii")

    # --- the end of every envelope

    def end_envelope(self, session: Session, envelope: Envelope, outcome: str) -> None:
        """Abort what is still open, release uses not committed, write the transaction's line."""
        if envelope.transaction is not None:
            envelope.transaction.abort()
            envelope.transaction = None
        for recipient in envelope.recipients:
            self._release(recipient)
        aliases = ",".join(r.label for r in envelope.recipients) or "-"
        log.info("smtp transaction client=%s id=%s aliases=%s refused=%d outcome=%s queue_id=%s",
                 session.peer_ip, envelope.local_id or "-", aliases, envelope.refused, outcome,
                 envelope.queue_id or "-")
        envelope.recipients = []

    def _release(self, recipient: Recipient) -> None:
        reservation, recipient.reservation = recipient.reservation, None
        if reservation is None:
            return
        try:
            self.store.release(reservation)
        except StoreUnavailable as exc:
            # The reservation lapses by itself (store.reservation_seconds); nothing is lost.
            log.warning("smtp: could not release a use of %s now: %s", reservation.alias_id, exc)

    def _commit_all(self, envelope: Envelope) -> None:
        for recipient in envelope.recipients:
            reservation, recipient.reservation = recipient.reservation, None
            if reservation is None:
                continue
            try:
                self.store.commit(reservation)
            except StoreUnavailable as exc:
                # The message is delivered; saying otherwise would make the client send it twice.
                log.warning("smtp: delivered for %s but could not count it: %s",
                            reservation.alias_id, exc)
