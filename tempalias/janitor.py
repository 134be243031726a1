"""Sweeps ended aliases out of Redis on a timer, so erasure has a bound even without cron.

Redis key expiry already makes an ended alias unreadable at once; this bounds how long its bytes
may linger until Redis reclaims them. Every process runs one; the work is idempotent and costs
in proportion to the aliases that ended, so several running side by side do no harm.
"""

from __future__ import annotations

import logging

import gevent

from tempalias.store import AliasStore, StoreUnavailable

log = logging.getLogger(__name__)


class Janitor:
    def __init__(self, store: AliasStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None

    def sweep(self) -> int:
        try:
            removed = self.store.purge()
        except StoreUnavailable as exc:
            log.warning("purge skipped: %s", exc)
            return 0
        if removed:
            log.info("purged %d ended alias%s", removed, "es" if removed != 1 else "")
        return removed

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            self.sweep()
