"""The forwarding policy: which recipients are accepted, and what happens to their uses.

The protocol module knows SMTP; this module knows aliases. ``Forwarder`` is shared by every
connection and holds what decides (our domains, the store, SRS, the abuse policy); for each
transaction the protocol asks it for an ``Outbound``, the part that acts: it holds the next hop's
transaction, the loop guard and a bounce being read. Neither writes into the protocol's Envelope:
a recipient hook answers with a reply and, when accepted, the Recipient for the protocol to add.

A recipient on one of our domains is either an alias (one use reserved in the store, per alias
per message; an alias made at one of our domains answers only there, one made before several
domains at each) or an SRS return address of ours. A recipient at any other domain may be an alias
at a custom domain (``local@DOMAIN``, in that domain's own namespace): the store says in the same
script whether the domain is active (else it is refused as any domain that is not ours, with no
DNS look-up), or suspended since when (4xx during the grace period, 5xx after). The next hop's transaction is opened at the first
accepted alias, so nothing reaches the smarthost for mail that is refused anyway; aliases that
lead to one target (in any case) get the message once. Every way a transaction ends goes through
``Outbound.end``: uses of a delivered message are committed, every other use is released, and one
log line is written.

A return address takes a bounce and nothing else: from the null sender, alone in its
transaction, and only a delivery report, of which the original sender gets one that we write
ourselves (``reports.py``), a few times per address at most. Forwarded messages pass a loop guard
(``loops.py``) on their way through.

An alias that takes replies goes alone in its transaction (``452 4.5.3`` for anything beside it):
its owner's copy is rewritten. A reverse address (``reverse.py``) takes a reply from the alias's
owner, alone too; the store finds its route and takes a token of the alias's reply limit at RCPT,
and whether the owner really sent it is judged after DATA (``shaping.py``). The reply leaves with
an SRS address that names only the alias; its bounce comes back to ``_bounce_recipient`` and is
answered to the owner. A message that is sealed (ARC on), rewritten or a reply is held whole
(``spool.py``) and shaped before any of it reaches the next hop; with ARC off the rest streams.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timezone
from email.utils import format_datetime

from tempalias import metrics
from tempalias.abuse import AbusePolicy
from tempalias.addresses import Address
from tempalias.config import Rate, SmtpSettings
from tempalias.reverse import parse_reverse
from tempalias.smtp import replies
from tempalias.smtp.delivery import Delivery, DeliveryError, Transaction, dot_stuff, dot_unstuff
from tempalias.smtp.loops import LoopGuard, delivered_to
from tempalias.smtp.refusals import refusal_reason, refusal_reply
from tempalias.smtp.replies import Reply
from tempalias.smtp.reports import NotAReport, read_report, write_report
from tempalias.smtp.session import Envelope, Recipient, Session
from tempalias.smtp.settlements import Settlements
from tempalias.smtp.shaping import Arrival, MessageShaper, Refused, ReplyContext
from tempalias.smtp.spool import Spool, stuffed_chunks
from tempalias.srs import MAX_AGE_DAYS, SRS, InvalidSRS, ReturnPath, is_srs
from tempalias.store import (AliasExhausted, AliasNotFound, AliasRefused, AliasStore,
                             DomainSuspended, RateLimited, Reservation, StoreUnavailable,
                             UnknownDomain, new_reservation_id, normalise_id)

log = logging.getLogger("tempalias.smtp")

# how the protocol ended a transaction (its words, protocol.py) -> the counted outcome; any
# other ending (reset, quit, the client gone, EHLO again) is the client's: client-aborted
_PROTOCOL_ENDINGS = {"idle timeout": "timeout", "data timeout": "timeout",
                     "transaction timeout": "timeout", "service shutting down": "shutting-down",
                     "local error": "local-error"}
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")
REPORT_READ_LIMIT = 256 * 1024  # of a bounce, what is read: its status part comes before the rest
RETURN_ADDRESS_LIFETIME_MS = (MAX_AGE_DAYS + 1) * 86_400_000


Verdict = tuple[Reply, Recipient | None]  # the reply, and the recipient to add when accepted


class Forwarder:
    """What decides, shared by every connection (see the module docstring)."""

    def __init__(self, settings: SmtpSettings, domains: tuple[str, ...], store: AliasStore,
                 srs: SRS, delivery: Delivery, policy: AbusePolicy | None = None,
                 domain_grace: float = 72 * 3600.0, shaper: MessageShaper | None = None,
                 spool_dir: str | None = None, reply_rate: Rate | None = None,
                 settlements: Settlements | None = None) -> None:
        """``settings``: the smtp section of the Config; ``domains``: ours, the first primary;
        ``domain_grace``: seconds mail to a suspended custom domain waits (4xx) before it is
        refused (the domains section's); ``shaper``: seals, rewrites and replies (None: every
        message streams through as it comes, and no alias can reply); ``spool_dir``: where a
        message held whole beyond memory goes; ``reply_rate``: replies per alias;
        ``settlements``: where a commit or release Redis could not take waits to be sent again
        (None: one of its own on ``store``)."""
        self.domains = frozenset(domains)
        self.domain_grace_ms = int(domain_grace * 1000)
        self.primary_domain = domains[0]
        self.postmaster = settings.postmaster
        self.banner = settings.banner_hostname or self.primary_domain
        self.store = store
        self.srs = srs
        self.delivery = delivery
        self.policy = policy
        self.max_reports = settings.srs_max_reports
        self.shaper = shaper
        self.spool_dir = spool_dir
        self.reply_rate = reply_rate
        self.settlements = settlements or Settlements(store)
        if shaper is not None and spool_dir is None:
            raise ValueError("a shaper holds messages whole: it needs a spool directory")

    def sender(self, session: Session) -> Reply | None:
        """MAIL FROM: may this client start one more message now? None: yes."""
        policy, client = self.policy, session.client
        refusal = policy.on_message(client) if policy and client else None
        if refusal is None:
            return None
        metrics.smtp_transaction(refusal_reason(refusal))  # refused at MAIL: no Outbound
        return refusal_reply(refusal)

    def addresses_of(self, alias_id: str) -> list[str]:
        """The addresses an alias may be written at, the one it is known by first: an id at a
        custom domain is its address; another at each of our domains, the first primary."""
        if "@" in alias_id:
            return [alias_id]
        return [f"{alias_id}@{self.primary_domain}",
                *(f"{alias_id}@{domain}" for domain in self.domains
                  if domain != self.primary_domain)]

    def address_of(self, alias_id: str, domain: str | None) -> str:
        """The address an alias goes by at ``domain`` (its own; else our primary domain)."""
        return alias_id if "@" in alias_id else f"{alias_id}@{domain or self.primary_domain}"

    def suspended_reply(self, exc: DomainSuspended) -> Reply:
        """Mail to a suspended custom domain waits (4xx) through the grace period, then is
        refused."""
        if time.time() * 1000 - exc.since_ms < self.domain_grace_ms:
            return replies.DOMAIN_SUSPENDED
        return replies.DOMAIN_LAPSED

    def outbound(self, session: Session, envelope: Envelope) -> "Outbound":
        """The part that acts for the transaction ``envelope`` begins."""
        return Outbound(self, session, envelope)

    # --- uses

    def release(self, recipient: Recipient) -> None:
        """Give the use back: the message did not go. If Redis is unreachable now, it is sent
        again once Redis answers (settlements.py)."""
        reservation, recipient.reservation = recipient.reservation, None
        if reservation is not None:
            self.settlements.release(reservation)

    def commit(self, recipient: Recipient) -> None:
        """Count the use: the message went. If Redis is unreachable now, the message is still
        delivered (saying otherwise would make the client send it twice) and the count is sent
        again once Redis answers (settlements.py)."""
        reservation, recipient.reservation = recipient.reservation, None
        if reservation is not None:
            self.settlements.commit(reservation)


class Outbound:
    """What acts for one transaction: the next hop's transaction, the loop guard, a bounce.

    Reads the protocol's Envelope (its sender, parameters and accepted recipients) and never
    writes it.
    """

    def __init__(self, forwarder: Forwarder, session: Session, envelope: Envelope) -> None:
        self.forwarder = forwarder
        self.session = session
        self.envelope = envelope
        self.transaction: Transaction | None = None
        self.failure: DeliveryError | None = None  # the next hop gave up during DATA
        self.queue_id: str | None = None  # the next hop's id once it accepted the message
        self.loop_guard: LoopGuard | None = None
        self.return_path: ReturnPath | None = None  # a bounce to one of our SRS addresses
        self.report: list[bytes] | None = None  # that bounce as it arrives (read, not passed on)
        self.report_bytes = 0
        self.replies_alias: tuple[str, str] | None = None  # (id, domain) of an alias that
        # takes replies: alone in its transaction, its message rewritten
        self.reply: ReplyContext | None = None  # a reply from an alias's owner, alone too
        self.spool: Spool | None = None  # the message held whole (sealed, rewritten, a reply)
        self.refusal: str | None = None  # why the last refused recipient was (replies.reason)
        self.next_hop_refused = False  # the RCPT being answered was refused by the next hop
        self.size = 0  # octets of the message so far, as the client sends them

    # --- recipients

    def recipient(self, address: Address) -> Verdict:
        """The answer to one RCPT and the recipient it adds, if any; counted by verdict. A
        refusal the next hop gave counts as the next hop's, whatever its code says: its 550 5.1.1
        is about the target, not an alias unknown here (a guessing run, to the metrics)."""
        self.next_hop_refused = False
        verdict = self._recipient(address)
        word = replies.reason(verdict[0])
        if word != "accepted" and self.next_hop_refused:
            word = _next_hop_failure(verdict[0])
        metrics.smtp_recipient(word)
        if word != "accepted":
            self.refusal = word
        return verdict

    def _recipient(self, address: Address) -> Verdict:
        ours = address.domain in self.forwarder.domains
        if self.return_path is not None:
            return (replies.RETURN_ADDRESS_ALONE if ours else replies.RELAY_DENIED), None
        if self.reply is not None:
            return replies.REPLIES_ALONE, None
        reverse = parse_reverse(address.local, address.domain, ours)
        if reverse is not None and self.forwarder.shaper is not None:
            return self._reply_recipient(*reverse, f"{address.local}@{address.domain}")
        if not ours and is_srs(address.local):
            # a return address of a reply through an alias at a custom domain
            return self._bounce_recipient(address.local)
        if not ours:
            # perhaps an alias at a custom domain: the store knows, no DNS is asked
            alias_id = normalise_id(f"{address.local}@{address.domain}")
            if alias_id is None:
                return replies.RELAY_DENIED, None
            return self._alias_recipient(alias_id, address.domain)
        if is_srs(address.local):
            return self._bounce_recipient(address.local)
        if address.local.lower() == "postmaster":
            return self._postmaster_recipient()
        alias_id = normalise_id(address.local)
        if alias_id is None:
            return replies.NO_SUCH_ALIAS, None
        return self._alias_recipient(alias_id, address.domain)

    def _alias_recipient(self, alias_id: str, domain: str) -> Verdict:
        """One use of ``alias_id`` reserved for this message, as the recipient at ``domain``."""
        forwarder, envelope = self.forwarder, self.envelope
        if envelope.has_alias(alias_id):
            return replies.RECIPIENT_OK, None  # the same alias twice in one message is one use
        policy, client = forwarder.policy, self.session.client
        reservation_id = new_reservation_id()
        try:
            # the alias's rate limits are taken in the same round trip as its use
            reservation = forwarder.store.reserve(
                alias_id, policy.alias_limits(client) if policy and client else None, domain,
                reservation_id)
        except RateLimited as exc:
            return refusal_reply(policy.on_alias_throttled(alias_id, client, exc.throttled)), None
        except AliasExhausted:
            return replies.ALIAS_BUSY, None  # its uses are held by messages in flight
        except UnknownDomain:
            return replies.RELAY_DENIED, None  # a custom domain not active: not ours
        except DomainSuspended as exc:
            return forwarder.suspended_reply(exc), None
        except AliasRefused:
            return replies.NO_SUCH_ALIAS, None
        except StoreUnavailable as exc:
            log.warning("smtp client=%s: %s", self.session.peer_ip, exc,
                        extra={"client": self.session.peer_ip})
            # its answer may have been lost after Redis held the use: give that back too
            forwarder.settlements.release_later(
                Reservation(normalise_id(alias_id) or alias_id, "", reservation_id))
            return replies.STORE_UNAVAILABLE, None
        recipient = Recipient(alias_id, reservation.target, reservation)
        if self.replies_alias is not None or (reservation.replies and envelope.recipients):
            forwarder.release(recipient)  # its message differs from the others': alone
            return replies.REPLIES_ALONE, None
        verdict = self._add(recipient)
        if verdict[1] is not None and reservation.replies:
            self.replies_alias = (alias_id, reservation.domain or domain)
        return verdict

    def _reply_recipient(self, alias_id: str, random: str, address: str) -> Verdict:
        """A reverse address: the alias's owner replies to one of its senders. Who sends is
        judged after DATA (``shaping.py`` says why not here); the reply's own limit is taken."""
        forwarder, envelope = self.forwarder, self.envelope
        if envelope.recipients:
            return replies.REPLIES_ALONE, None
        if not envelope.sender:
            return replies.REPLY_NOT_AUTHENTIC, None
        try:
            route = forwarder.store.reply_route(alias_id, random, forwarder.reply_rate)
        except RateLimited:
            return replies.REPLY_THROTTLED, None
        except DomainSuspended as exc:
            return forwarder.suspended_reply(exc), None
        except AliasNotFound:
            return replies.NO_SUCH_REVERSE, None
        except StoreUnavailable as exc:
            log.warning("smtp client=%s: %s", self.session.peer_ip, exc,
                        extra={"client": self.session.peer_ip})
            return replies.STORE_UNAVAILABLE, None
        at_domain = address.rpartition("@")[2]
        alias_domain = route.domain or at_domain
        if alias_domain != at_domain:
            return replies.NO_SUCH_REVERSE, None  # an alias answers at its own domain only
        alias_address = forwarder.address_of(alias_id, alias_domain)
        context = ReplyContext(alias_id, alias_address, alias_domain, route.target,
                               route.sender, address)
        # bounces of the reply come back to an SRS address that names only the alias; they
        # are answered to the owner (``_bounce_recipient``)
        return_address = forwarder.srs.forward(alias_address, alias_id, alias_domain)
        verdict = self._add(Recipient(f"reply:{alias_id}", route.sender), return_address)
        if verdict[1] is not None:
            self.reply = context
        return verdict

    def _postmaster_recipient(self) -> Verdict:
        """RFC 5321 4.5.1: postmaster (any case) at each of our domains reaches a person: the
        configured address, or, when mail stays on this machine (Maildir), the Maildir itself."""
        forwarder = self.forwarder
        if self.replies_alias is not None:
            return replies.REPLIES_ALONE, None  # that message is rewritten for its owner
        target = forwarder.postmaster
        if target is None and forwarder.delivery.local:
            target = f"postmaster@{forwarder.primary_domain}"
        if target is None:
            return replies.NO_POSTMASTER, None
        if self.envelope.has_target(target):
            return replies.RECIPIENT_OK, None
        return self._add(Recipient("postmaster", target))

    def _bounce_recipient(self, local: str) -> Verdict:
        """A return address: no next hop yet, the report we send is decided after DATA."""
        envelope = self.envelope
        if envelope.sender:
            return replies.SRS_NEEDS_NULL_SENDER, None
        if envelope.recipients:
            return replies.RETURN_ADDRESS_ALONE, None
        forwarder = self.forwarder
        try:
            return_path = forwarder.srs.reverse(local)
        except InvalidSRS:
            return replies.BAD_SRS, None
        if return_path.sender.casefold() in map(str.casefold,
                                                forwarder.addresses_of(return_path.alias)):
            # a reply's bounce: the report goes to the alias's owner, while the alias lives
            try:
                owner = forwarder.store.lookup(return_path.alias).target
            except AliasNotFound:
                return replies.BAD_SRS, None
            except StoreUnavailable as exc:
                log.warning("smtp client=%s: %s", self.session.peer_ip, exc,
                            extra={"client": self.session.peer_ip})
                return replies.STORE_UNAVAILABLE, None
            return_path = ReturnPath(owner, return_path.alias, return_path.hash, True)
        if not return_path.sender.isascii() and not envelope.smtputf8:
            return replies.TARGET_NEEDS_SMTPUTF8, None
        self.return_path = return_path
        return replies.RECIPIENT_OK, Recipient("srs", return_path.sender)

    def _add(self, recipient: Recipient, return_address: str | None = None) -> Verdict:
        """At the next hop too; a recipient it refuses gives its use back. ``return_address``:
        the envelope sender the next hop gets, if not the SRS form of the client's."""
        forwarder, envelope = self.forwarder, self.envelope
        if not recipient.target.isascii() and not envelope.smtputf8:
            forwarder.release(recipient)
            return replies.TARGET_NEEDS_SMTPUTF8, None
        if envelope.has_target(recipient.target):
            return replies.RECIPIENT_OK, recipient  # the target gets it once; the use counts
        try:
            if self.transaction is None:
                if return_address is None:
                    return_address = forwarder.srs.forward(envelope.sender, recipient.label)
                self.transaction, verdict = forwarder.delivery.open(
                    return_address, recipient.target,
                    envelope.smtputf8, envelope.eight_bit, envelope.declared_size)
            else:
                verdict = self.transaction.add_recipient(recipient.target)
        except DeliveryError as exc:
            log.warning("smtp client=%s id=%s: %s", self.session.peer_ip, recipient.label,
                        exc.detail, extra={"client": self.session.peer_ip})
            if not envelope.recipients:
                self.transaction = None  # the next recipient may try a fresh connection
            forwarder.release(recipient)
            self.next_hop_refused = exc.next_hop_code is not None  # e.g. its MAIL refused
            return exc.reply, None
        if verdict is not None:
            forwarder.release(recipient)
            self.next_hop_refused = True
            return verdict, None
        return replies.RECIPIENT_OK, recipient

    # --- the message

    def begin_data(self) -> Reply:
        if self.return_path is not None:
            self.report = []  # read, not passed on: what goes back is written in end_data
            return replies.START_DATA
        forwarder, envelope = self.forwarder, self.envelope
        aliases = sorted({r.label for r in envelope.recipients if r.reservation is not None})
        if self.reply is not None:
            aliases = [self.reply.alias_id]
        self.loop_guard = LoopGuard(frozenset(
            address for alias in aliases for address in forwarder.addresses_of(alias)))
        # a reply carries nothing of how it reached us: that would name the owner's provider
        header = b"" if self.reply is not None else self._received()
        if len(aliases) == 1 and self.reply is None:
            header += delivered_to(forwarder.addresses_of(aliases[0])[0])
        if self.reply is not None or self.replies_alias is not None or \
                (forwarder.shaper is not None and forwarder.shaper.arc):
            self.spool = Spool(forwarder.spool_dir)  # held whole: see shaping.py
            self.spool.write(header)
            return replies.START_DATA
        try:
            self.transaction.start_data(header)
        except DeliveryError as exc:
            self.failure = exc
            return exc.reply
        return replies.START_DATA

    def write(self, data: bytes) -> None:
        """Pass whole lines on; after a failure, keep quiet (the client is still sending)."""
        self.size += len(data)
        if self.failure is not None:
            return
        if self.report is not None:
            if self.report_bytes < REPORT_READ_LIMIT:
                self.report.append(data)
                self.report_bytes += len(data)
            return
        guard = self.loop_guard
        if not guard.done and guard.feed(data):
            self.failure = DeliveryError(replies.MAIL_LOOP.with_text(
                f"{replies.MAIL_LOOP.text}: {guard.loop}"), f"mail loop: {guard.loop}")
            return
        if self.spool is not None:
            self.spool.write(dot_unstuff(data))
            return
        try:
            self.transaction.write(data)
        except DeliveryError as exc:
            self.failure = exc

    def end_data(self, problem: Reply | None) -> Reply:
        """The client sent the final dot: finish at the next hop, or give up and say why."""
        if problem is not None:
            self.end(f"refused ({problem.code} {problem.status})", replies.reason(problem))
            return problem
        if self.report is not None:
            return self._answer_bounce()
        if self.spool is not None and self.failure is None:
            try:
                self._send_held()
            except Refused as exc:
                self.end(f"refused ({exc.reply.code} {exc.reply.status}: {exc.detail})",
                         replies.reason(exc.reply))
                return exc.reply
        if self.failure is None:
            try:
                self.queue_id = self.forwarder.delivery.finish(self.transaction)
            except DeliveryError as exc:
                self.failure = exc
        if self.failure is not None:
            reply = self.failure.reply
            self.end(f"not delivered ({reply.code} {reply.status}: "
                     f"{self.failure.detail or reply.text})", _next_hop_failure(reply))
            return reply
        self.transaction = None  # finished: nothing to abort
        for recipient in self.envelope.recipients:
            self.forwarder.commit(recipient)
        metrics.message_forwarded("reply" if self.reply is not None else "forward", self.size)
        self.end("delivered", "delivered")
        return replies.QUEUED.with_text(f"OK: delivered as {self.queue_id}")

    def _send_held(self) -> None:
        """The held message, shaped (sealed, rewritten, a reply), to the next hop; raises
        Refused, or leaves a DeliveryError in ``failure``."""
        spool, self.spool = self.spool, None
        try:
            message = spool.read()
        finally:
            spool.close()
        shaper, session = self.forwarder.shaper, self.session
        arrival = Arrival(session.peer_ip, session.helo or "", self.envelope.sender)
        if self.reply is not None:
            message = shaper.reply(message, arrival, self.reply)
        elif self.replies_alias is not None:
            message = shaper.forward_with_replies(message, arrival, *self.replies_alias)
        else:
            message = shaper.pass_through(message, arrival)
        try:
            self.transaction.start_data(b"")
            for chunk in stuffed_chunks(message):
                self.transaction.write(chunk)
        except DeliveryError as exc:
            self.failure = exc

    def _answer_bounce(self) -> Reply:
        """A bounce came back to a return address: send the original sender our own report."""
        forwarder, return_path = self.forwarder, self.return_path
        try:
            outcome = read_report(dot_unstuff(b"".join(self.report)[:REPORT_READ_LIMIT]))
        except NotAReport as exc:
            reply = replies.NOT_A_REPORT.with_text(f"{replies.NOT_A_REPORT.text}; this is {exc}")
            self.end(f"refused ({reply.code} {reply.status}: {exc})", "refused-not-report")
            return reply
        try:
            allowed = forwarder.store.take_report(return_path.hash, forwarder.max_reports,
                                                  RETURN_ADDRESS_LIFETIME_MS)
        except StoreUnavailable as exc:
            log.warning("smtp client=%s: %s", self.session.peer_ip, exc,
                        extra={"client": self.session.peer_ip})
            self.end("not delivered (store unavailable)", "tempfail-redis")
            return replies.STORE_UNAVAILABLE
        if not allowed:
            self.end("refused (report budget used up)", "refused-rate")
            return replies.REPORTS_USED_UP
        report = write_report(outcome, forwarder.addresses_of(return_path.alias)[0],
                              return_path.sender, forwarder.primary_domain,
                              about_reply=return_path.reply)
        try:
            self.transaction, verdict = forwarder.delivery.open(
                "", return_path.sender, self.envelope.smtputf8, False, len(report))
            if verdict is not None:
                self.end(f"not delivered ({verdict.code} {verdict.status} for the report)",
                         _next_hop_failure(verdict))
                return verdict
            self.transaction.start_data(b"")  # no Received: it would name the bouncing MTA
            self.transaction.write(dot_stuff(report))
            self.queue_id = forwarder.delivery.finish(self.transaction)
        except DeliveryError as exc:
            self.end(f"not delivered ({exc.reply.code} {exc.reply.status}: {exc.detail})",
                     _next_hop_failure(exc.reply))
            return exc.reply
        self.transaction = None
        metrics.message_forwarded("report", len(report))
        self.end(f"report sent ({outcome.action})", "report-sent")
        return replies.QUEUED.with_text(f"OK: report sent as {self.queue_id}")

    def _received(self) -> bytes:
        session, envelope = self.session, self.envelope
        helo = _HELO_UNSAFE.sub("", session.helo or "")[:255] or "unknown"
        protocol = ("UTF8SMTP" if envelope.smtputf8 else "ESMTP" if session.esmtp else "SMTP")
        if session.tls:
            protocol += "S"
        stamp = format_datetime(datetime.now(timezone.utc))
        return (f"Received: from {helo} ([{session.peer_ip}])\r\n"
                f"\tby {self.forwarder.banner} (tempalias) with {protocol} id "
                f"{envelope.local_id};\r\n\t{stamp}\r\n").encode("ascii")

    # --- the end of every transaction

    def end(self, outcome: str, counted: str | None = None) -> None:
        """Abort what is still open, release uses not committed, write the transaction's line.

        ``outcome``: the log's words; ``counted``: the metrics' (one of a fixed few), else
        derived here for a transaction the protocol ended before its message was through."""
        metrics.smtp_transaction(counted or self._unfinished(outcome))
        if self.transaction is not None:
            self.transaction.abort()
            self.transaction = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        envelope = self.envelope
        for recipient in envelope.recipients:
            self.forwarder.release(recipient)
        aliases = ",".join(r.label if r.label != "srs" else f"srs:{self.return_path.alias}"
                           for r in envelope.recipients) or "-"
        log.info("smtp transaction client=%s id=%s aliases=%s refused=%d outcome=%s queue_id=%s",
                 self.session.peer_ip, envelope.local_id or "-", aliases, envelope.refused,
                 outcome, self.queue_id or "-",
                 extra={"client": self.session.peer_ip, "outcome": outcome,
                        "queue_id": self.queue_id})

    def _unfinished(self, outcome: str) -> str:
        """The counted outcome of a transaction the protocol ended (``outcome``: its words)."""
        if not self.envelope.recipients and self.refusal is not None:
            return self.refusal  # nobody taken: as refused as its last recipient was
        return _PROTOCOL_ENDINGS.get(outcome, "client-aborted")


def _next_hop_failure(reply: Reply) -> str:
    """A message the next hop (or the loop guard on the way there) did not take."""
    if replies.reason(reply) == "refused-loop":
        return "refused-loop"
    return "tempfail-smarthost" if reply.code < 500 else "refused-smarthost"
