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
