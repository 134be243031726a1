"""What the store raises: connection trouble, and the refusals its scripts answer with."""

from __future__ import annotations

from dataclasses import dataclass


class StoreError(Exception):
    """Base of everything the store raises."""


class StoreUnavailable(StoreError):
    """Redis could not be reached or did not answer in time: a transient condition."""


class AliasRefused(StoreError):
    """The alias cannot take a delivery."""


class AliasNotFound(AliasRefused):
    """No live alias by that id (never existed, revoked, expired, or wrong token)."""


class AliasExhausted(AliasRefused):
    """Every remaining use is taken or reserved."""


class AliasTaken(StoreError):
    """The local part chosen at a custom domain is, or was, an alias there in the domain's life."""


class DomainNotFound(StoreError):
    """No custom domain by that name is active or suspended (never verified, erased), or no
    registration waits with that token, or the token offered is not the owner's: a wrong token
    is indistinguishable from an unknown domain."""


class DomainTaken(StoreError):
    """The custom domain is already active or suspended, with another owner's token."""


class UnknownDomain(AliasNotFound, DomainNotFound):
    """A delivery to an id at a custom domain that is neither active nor suspended: the alias is
    unknown, and so is its domain (SMTP refuses it as any domain that is not ours)."""


class DomainSuspended(AliasRefused):
    """The alias's custom domain is suspended (its DNS records are gone) since ``since_ms``: mail
    waits (4xx) during the grace period, then is refused."""

    def __init__(self, domain: str | None, since_ms: int) -> None:
        super().__init__(f"{domain} suspended since {since_ms}")
        self.domain = domain
        self.since_ms = since_ms


@dataclass(frozen=True)
class Throttled:
    """A limit said no: ``limit`` names it, ``retry_after_ms`` is when it will say yes again."""

    limit: str
    retry_after_ms: int

    @property
    def retry_after_seconds(self) -> int:
        return max(1, -(-self.retry_after_ms // 1000))


class RateLimited(StoreError):
    """A rate limit taken inside a store operation said no; nothing was taken nor reserved."""

    def __init__(self, throttled: Throttled) -> None:
        super().__init__(f"{throttled.limit}: retry after {throttled.retry_after_ms} ms")
        self.throttled = throttled
