"""Uses owed to the store: commits and releases Redis could not take when they were due.

Once the next hop has a message, its use must be counted: a commit that fails (Redis restarting,
a primary dying and a replica not yet promoted) would otherwise leave the use held until the
reservation lapses, and then hand it out again: the alias would carry one message more than it
was given. A release that fails holds a use nobody needs for as long. And a reservation whose
answer never came (the connection broke after the script was sent) may or may not exist.

So each of these waits here and is sent again, with a growing pause, until it lands or
``give_up_after`` seconds have passed (the store's reservation time: by then a held use has
lapsed by itself). Both are safe to repeat: a commit of a reservation already gone still counts
the use exactly once (``COMMIT_USE`` takes it out of the held set first, then counts), a release
of a reservation that is not held changes nothing. One greenlet per process sends them; what a
process owed when it died is settled by the lapse, as before.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import gevent

from tempalias.store import AliasStore, Reservation, StoreUnavailable

log = logging.getLogger("tempalias.smtp")

FIRST_PAUSE = 0.2  # seconds before the first retry; doubled each round
LONGEST_PAUSE = 2.0


@dataclass
class _Owed:
    act: str  # "commit" or "release"
    reservation: Reservation
    until: float  # time.monotonic() after which it is dropped


class Settlements:
    def __init__(self, store: AliasStore, give_up_after: float | None = None) -> None:
        self.store = store
        self.give_up_after = (store.reservation_ms / 1000 if give_up_after is None
                              else give_up_after)
        self._owed: list[_Owed] = []
        self._worker: gevent.Greenlet | None = None

    def commit(self, reservation: Reservation) -> None:
        """Count the use now, or as soon as Redis takes it."""
        self._settle("commit", reservation)

    def release(self, reservation: Reservation) -> None:
        """Give the use back now, or as soon as Redis takes it."""
        self._settle("release", reservation)

    def release_later(self, reservation: Reservation) -> None:
        """Give back a use that may or may not be held (a reserve whose answer never came), once
        Redis answers: not now, while the client waits for its reply."""
        self._owe("release", reservation)

    def pending(self) -> int:
        return len(self._owed)

    def _act(self, act: str) -> Callable[[Reservation], object]:
        return self.store.commit if act == "commit" else self.store.release

    def _settle(self, act: str, reservation: Reservation) -> None:
        try:
            self._act(act)(reservation)
        except StoreUnavailable as exc:
            log.warning("smtp: %s of a use of %s owed, sent again once Redis answers: %s",
                        act, reservation.alias_id, exc)
            self._owe(act, reservation)

    def _owe(self, act: str, reservation: Reservation) -> None:
        self._owed.append(_Owed(act, reservation, time.monotonic() + self.give_up_after))
        if self._worker is None or self._worker.dead:
            self._worker = gevent.spawn(self._settle_owed)

    def _settle_owed(self) -> None:
        pause = FIRST_PAUSE
        while self._owed:
            gevent.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
            for owed in list(self._owed):
                try:
                    self._act(owed.act)(owed.reservation)
                except StoreUnavailable:
                    if time.monotonic() > owed.until:
                        self._owed.remove(owed)
                        log.warning("smtp: %s of a use of %s given up: its reservation has "
                                    "lapsed", owed.act, owed.reservation.alias_id)
                    continue
                self._owed.remove(owed)
                pause = FIRST_PAUSE
                log.info("smtp: owed %s of a use of %s done", owed.act,
                         owed.reservation.alias_id)

    def close(self, timeout: float = 0.0) -> None:
        """Give what is owed ``timeout`` seconds to land (a drain), then stop trying."""
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker.kill(block=False)
