"""The forwarding policy: which recipients are accepted, and what happens to their uses.

The protocol module knows SMTP; this module knows aliases. A recipient on one of our domains is
either an alias (one use reserved in the store, per alias per message) or an SRS return address
of ours. The next hop's transaction is opened at the first accepted alias, so nothing reaches the
smarthost for mail that is refused anyway; aliases that lead to one target (in any case) get the
message once. Every way an envelope ends goes through ``end_envelope``: uses of a delivered
message are committed, every other use is released, and one log line is written.

A return address takes a bounce and nothing else: from the null sender, alone in its
transaction, and only a delivery report, of which the original sender gets one that we write
ourselves (``reports.py``), a few times per address at most. Forwarded messages pass a loop guard
(``loops.py``) on their way through.
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
from tempalias.smtp.delivery import Delivery, DeliveryError, dot_stuff, dot_unstuff
from tempalias.smtp.loops import LoopGuard, delivered_to
from tempalias.smtp.replies import Reply
from tempalias.smtp.reports import NotAReport, read_report, write_report
from tempalias.smtp.session import Envelope, Recipient, Session
from tempalias.srs import MAX_AGE_DAYS, SRS, InvalidSRS, is_srs
from tempalias.store import (AliasExhausted, AliasRefused, AliasStore, StoreUnavailable,
                             normalise_id)

log = logging.getLogger("tempalias.smtp")

_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")
REPORT_READ_LIMIT = 256 * 1024  # of a bounce, what is read: its status part comes before the rest
RETURN_ADDRESS_LIFETIME_MS = (MAX_AGE_DAYS + 1) * 86_400_000


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
        self.max_reports = config.srs_max_reports

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
        if envelope.return_path is not None:
            return replies.RETURN_ADDRESS_ALONE
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
        except AliasExhausted:
            return replies.ALIAS_BUSY  # its uses are held by messages in flight, which may fail
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
        """A return address: no next hop yet, the report we send is decided after DATA."""
        if envelope.sender:
            envelope.refused += 1
            return replies.SRS_NEEDS_NULL_SENDER
        if envelope.recipients:
            return replies.RETURN_ADDRESS_ALONE
        try:
            return_path = self.srs.reverse(local)
        except InvalidSRS:
            envelope.refused += 1
            return replies.BAD_SRS
        if not return_path.sender.isascii() and not envelope.smtputf8:
            envelope.refused += 1
            return replies.TARGET_NEEDS_SMTPUTF8
        envelope.return_path = return_path
        envelope.recipients.append(Recipient("srs", return_path.sender))
        return replies.RECIPIENT_OK

    def _add(self, session: Session, envelope: Envelope, recipient: Recipient) -> Reply:
        if not recipient.target.isascii() and not envelope.smtputf8:
            envelope.refused += 1
            self._release(recipient)
            return replies.TARGET_NEEDS_SMTPUTF8
        if envelope.has_target(recipient.target):
            envelope.recipients.append(recipient)  # the target gets it once; the use counts
            return replies.RECIPIENT_OK
        try:
            if envelope.transaction is None:
                envelope.transaction, verdict = self.delivery.open(
                    self.srs.forward(envelope.sender, recipient.label), recipient.target,
                    envelope.smtputf8, envelope.eight_bit, envelope.declared_size)
            else:
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
        if envelope.return_path is not None:
            envelope.report = []  # read, not passed on: what goes back is written in end_data
            return replies.START_DATA
        aliases = sorted({r.label for r in envelope.recipients if r.reservation is not None})
        envelope.loop_guard = LoopGuard(frozenset(
            f"{alias}@{domain}" for alias in aliases for domain in self.domains))
        header = self._received(session, envelope)
        if len(aliases) == 1:
            header += delivered_to(f"{aliases[0]}@{self.primary_domain}")
        try:
            envelope.transaction.start_data(header)
        except DeliveryError as exc:
            envelope.failure = exc
            return exc.reply
        return replies.START_DATA

    def write(self, envelope: Envelope, data: bytes) -> None:
        """Pass whole lines on; after a failure, keep quiet (the client is still sending)."""
        if envelope.failure is not None:
            return
        if envelope.report is not None:
            if envelope.report_bytes < REPORT_READ_LIMIT:
                envelope.report.append(data)
                envelope.report_bytes += len(data)
            return
        guard = envelope.loop_guard
        if not guard.done and guard.feed(data):
            envelope.failure = DeliveryError(replies.MAIL_LOOP.with_text(
                f"{replies.MAIL_LOOP.text}: {guard.loop}"), f"mail loop: {guard.loop}")
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
        if envelope.report is not None:
            return self._answer_bounce(session, envelope)
        if envelope.failure is None:
            try:
                envelope.queue_id = self.delivery.finish(envelope.transaction)
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

    def _answer_bounce(self, session: Session, envelope: Envelope) -> Reply:
        """A bounce came back to a return address: send the original sender our own report."""
        return_path = envelope.return_path
        try:
            outcome = read_report(dot_unstuff(b"".join(envelope.report)[:REPORT_READ_LIMIT]))
        except NotAReport as exc:
            reply = replies.NOT_A_REPORT.with_text(f"{replies.NOT_A_REPORT.text}; this is {exc}")
            self.end_envelope(session, envelope, f"refused ({reply.code} {reply.status}: {exc})")
            return reply
        try:
            allowed = self.store.take_report(return_path.hash, self.max_reports,
                                             RETURN_ADDRESS_LIFETIME_MS)
        except StoreUnavailable as exc:
            log.warning("smtp client=%s: %s", session.peer_ip, exc)
            self.end_envelope(session, envelope, "not delivered (store unavailable)")
            return replies.STORE_UNAVAILABLE
        if not allowed:
            self.end_envelope(session, envelope, "refused (report budget used up)")
            return replies.REPORTS_USED_UP
        report = write_report(outcome, f"{return_path.alias}@{self.primary_domain}",
                              return_path.sender, self.primary_domain)
        try:
            envelope.transaction, verdict = self.delivery.open(
                "", return_path.sender, envelope.smtputf8, False, len(report))
            if verdict is not None:
                self.end_envelope(session, envelope, f"not delivered ({verdict.code} "
                                                     f"{verdict.status} for the report)")
                return verdict
            envelope.transaction.start_data(b"")  # no Received: it would name the bouncing MTA
            envelope.transaction.write(dot_stuff(report))
            envelope.queue_id = self.delivery.finish(envelope.transaction)
        except DeliveryError as exc:
            self.end_envelope(session, envelope, f"not delivered ({exc.reply.code} "
                                                 f"{exc.reply.status}: {exc.detail})")
            return exc.reply
        envelope.transaction = None
        self.end_envelope(session, envelope, f"report sent ({outcome.action})")
        return replies.QUEUED.with_text(f"OK: report sent as {envelope.queue_id}")

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
        aliases = ",".join(r.label if r.label != "srs" else f"srs:{envelope.return_path.alias}"
                           for r in envelope.recipients) or "-"
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
