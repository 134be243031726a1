"""Upkeep on a timer, so that it has a bound even without cron: ended aliases swept out of Redis,
and the DNS records of custom domains checked again when their check is due. Should Redis not
have answered when ``serve`` started, the migration of an older tempalias's keys runs here.

Redis key expiry already makes an ended alias unreadable at once; the sweep bounds how long its
bytes may linger until Redis reclaims them. Custom domains are checked on their own schedule
(``TEMPALIAS_DOMAIN_RECHECK``, kept in Redis): each round checks those that are due, at most
``RECHECKS_PER_ROUND`` of them, so a round of one interval is a few minutes late at worst, which
against a schedule of hours and a grace period of days is nothing, and one setting
(``TEMPALIAS_PURGE_INTERVAL``) times both. Every process runs one; the work is idempotent and
costs in proportion to what ended or is due, so several running side by side do no harm (of
the processes that see a domain due at once, the one that claims it first looks it up).
"""

from __future__ import annotations

import logging

import gevent

from tempalias.domains import DomainService
from tempalias.store import AliasStore, StoreUnavailable
from tempalias.store.migration import Migration

log = logging.getLogger(__name__)


def migrate_schema(store: AliasStore) -> bool:
    """Bring the keys to the store's schema unless they are (``store/migration.py``), saying so
    in the log; False when Redis did not answer, and it must be tried again."""
    try:
        migrated = Migration(store).ensure()
    except StoreUnavailable as exc:
        log.warning("schema migration put off, the janitor tries again: %s", exc)
        return False
    if migrated is not None:
        log.info("schema migration: %s", migrated)
    return True


class Janitor:
    def __init__(self, store: AliasStore, interval: float,
                 domains: DomainService | None = None) -> None:
        self.store = store
        self.interval = interval
        self.domains = domains
        self._schema_current = False
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None

    def migrate(self) -> None:
        """The migration ``serve`` could not run (Redis did not answer then), until it ran."""
        self._schema_current = self._schema_current or migrate_schema(self.store)

    def sweep(self) -> int:
        try:
            removed = self.store.purge()
        except StoreUnavailable as exc:
            log.warning("purge skipped: %s", exc)
            return 0
        if removed:
            log.info("purged %d ended alias%s", removed, "es" if removed != 1 else "")
        return removed

    def recheck(self) -> dict[str, str]:
        """Check the custom domains that are due; domain -> what happened."""
        if self.domains is None:
            return {}
        try:
            return self.domains.recheck_due()
        except StoreUnavailable as exc:
            log.warning("domain checks skipped: %s", exc)
        except Exception:  # noqa: BLE001 - the sweeps must go on whatever one round met
            log.exception("domain checks failed")
        return {}

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            self.migrate()
            self.sweep()
            self.recheck()
