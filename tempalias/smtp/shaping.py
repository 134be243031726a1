"""What leaves when a message is not passed on byte for byte: sealed, rewritten, or a reply.

The forwarder decides what a message is (its recipients say so); this module acts on one message
held whole (``spool.py``), and answers with the bytes the next hop gets or a ``Refused`` with the
reply the client gets. Three shapes:

- a pass-through forward, ARC on: our ``Authentication-Results`` (SPF, DKIM, DMARC and ARC of the
  message as it arrived) and an ARC seal in front; the message's own bytes, and so its DKIM
  signature, unchanged.
- a forward through an alias that takes replies: each distinct sender (From, Reply-To) gets its
  reverse address at the alias's domain, ``From``/``Reply-To`` name those (``rewrite.py``), the
  result is DKIM-signed with d = the alias's domain (DMARC aligns with the new From) and sealed,
  so a receiver can see the original signature was valid on arrival.
- a reply from the alias's owner to a reverse address: accepted only when it authenticates as the
  owner (``mailauth.py``: MAIL FROM is the owner and SPF passes, or an aligned DKIM signature
  verifies); then everything that would name the owner is taken out (``rewrite.py``) and the
  result is DKIM-signed at the alias's domain. No Authentication-Results and no seal: they would
  name the owner's provider.

A wrong MAIL FROM and a failed authentication get the same reply, after DATA, and cost the same
DNS work: otherwise a stranger holding a reverse address could try MAIL FROM addresses one by one
and learn the owner's by the answer or its delay (the alias's reply limit bounds the tries too).

ARC seals are made with d = our primary domain (a sealer signs as itself; no alignment is asked
of a seal); DKIM signatures with d = the alias's domain, whose owner publishes our key there
(``tempalias dns-records DOMAIN``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tempalias.mailauth import Authenticity, MailAuthenticator
from tempalias.reverse import reverse_local
from tempalias.signing import Signer, SigningError
from tempalias.smtp import replies
from tempalias.smtp.replies import Reply
from tempalias.smtp.rewrite import (DisclosesOwner, rewrite_forward, sanitise_reply, senders,
                                    without_claimed_results)
from tempalias.store import AliasNotFound, AliasStore, StoreUnavailable

log = logging.getLogger("tempalias.smtp")


class Refused(Exception):
    """The message does not leave; ``reply`` is what the client gets."""

    def __init__(self, reply: Reply, detail: str) -> None:
        super().__init__(detail)
        self.reply = reply
        self.detail = detail


@dataclass(frozen=True)
class Arrival:
    """How a message reached us: what SPF and the reply check judge."""

    peer_ip: str
    helo: str
    mail_from: str


@dataclass(frozen=True)
class ReplyContext:
    """A reply on its way: through which alias, from whom, to whom."""

    alias_id: str
    alias_address: str  # what the original sender sees as the sender
    alias_domain: str
    owner: str  # the alias's target
    original_sender: str  # whom the reply goes to
    reverse_address: str  # the address the owner wrote to


class MessageShaper:
    """Shared by every connection: the store, the checks, the keys."""

    def __init__(self, store: AliasStore, authenticator: MailAuthenticator, signer: Signer,
                 seal_domain: str, arc: bool) -> None:
        self.store = store
        self.authenticator = authenticator
        self.signer = signer
        self.authserv_id = signer.authserv_id
        self.seal_domain = seal_domain
        self.arc = arc

    def pass_through(self, message: bytes, arrival: Arrival) -> bytes:
        """With ARC on: our findings and a seal in front. A seal that cannot be made (a message
        dkimpy cannot parse) is left off: the message goes as it came, as without ARC."""
        if not self.arc:
            return message
        return self._sealed(message, arrival, message)

    def forward_with_replies(self, message: bytes, arrival: Arrival, alias_id: str,
                             alias_domain: str) -> bytes:
        found = senders(message)
        addresses = list(dict.fromkeys(
            address.lower() for address in (found.from_address, *found.reply_to) if address))
        rewritten = message
        if addresses:
            try:
                randoms = self.store.reverse_addresses(alias_id, addresses)
            except AliasNotFound:
                raise Refused(replies.NO_SUCH_ALIAS, "alias ended during the message") from None
            except StoreUnavailable as exc:
                raise Refused(replies.STORE_UNAVAILABLE, str(exc)) from None
            reverse = {address: f"{reverse_local(randoms[address], alias_id)}@{alias_domain}"
                       for address in addresses}
            rewritten = rewrite_forward(message, reverse)
        try:
            signed = self.signer.sign(rewritten, alias_domain) + rewritten
        except SigningError as exc:
            raise Refused(replies.UNPARSABLE, f"cannot sign: {exc}") from None
        if not self.arc:
            return signed
        return self._sealed(message, arrival, signed)

    def reply(self, message: bytes, arrival: Arrival, context: ReplyContext) -> bytes:
        mail_from = arrival.mail_from
        is_owner = mail_from.casefold() == context.owner.casefold()
        # the same work whoever MAIL FROM names (see the module docstring)
        authenticity = self.authenticator.owner_check(
            message, arrival.peer_ip, arrival.helo, mail_from,
            context.owner if is_owner else mail_from)
        if authenticity is Authenticity.UNKNOWN and is_owner:
            raise Refused(replies.REPLY_UNVERIFIED, "reply: DNS did not answer")
        if authenticity is not Authenticity.AUTHENTIC or not is_owner:
            raise Refused(replies.REPLY_NOT_AUTHENTIC, "reply: not authenticated as the owner")
        try:
            clean = sanitise_reply(
                message, alias_address=context.alias_address,
                original_sender=context.original_sender,
                reverse_address=context.reverse_address, owner_address=context.owner,
                message_id_domain=context.alias_domain)
        except DisclosesOwner as exc:
            reply = replies.REPLY_DISCLOSES.with_text(f"{replies.REPLY_DISCLOSES.text} ({exc})")
            raise Refused(reply, "reply: other recipients") from None
        except ValueError as exc:
            raise Refused(replies.UNPARSABLE, f"reply: {exc}") from None
        try:
            return self.signer.sign(clean, context.alias_domain) + clean
        except SigningError as exc:
            raise Refused(replies.UNPARSABLE, f"cannot sign: {exc}") from None

    def _sealed(self, received: bytes, arrival: Arrival, outgoing: bytes) -> bytes:
        """``outgoing`` with our Authentication-Results about ``received`` and a seal over both
        (none when dkimpy declines: a chain that already failed is not sealed again)."""
        results = self.authenticator.check(received, arrival.peer_ip, arrival.helo,
                                           arrival.mail_from).header()
        outgoing = without_claimed_results(outgoing, self.authserv_id)
        try:
            seal = self.signer.seal(results + outgoing, self.seal_domain)
        except SigningError as exc:
            log.warning("smtp: forwarded without an ARC seal: %s", exc)
            seal = b""
        return seal + results + outgoing
