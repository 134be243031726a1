"""Child processes that do not outlive their parent, and that their parent brings back.

Linux's PR_SET_PDEATHSIG makes the kernel signal a child when its parent exits, however it exits.
Used for the embedded redis-server (before exec) and for the workers of ``tempalias serve
--workers`` (after fork): a parent killed with SIGKILL (the OOM killer, a supervisor's last
resort) must not leave workers serving its ports with nobody to stop them. The other way round,
a parent restarts either child when it dies, after ``RestartBackoff``'s delay.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

RESTART_BACKOFF_MAX = 5.0  # seconds between restarts of a child that keeps dying at once
QUICK_DEATH = 2.0  # a child that dies sooner than this after its start counts as crashing

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask for ``signum`` when our parent exits (a no-op where prctl is missing)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    except OSError:
        pass


def parent_is(pid: int) -> bool:
    """After ``die_with_parent``: False if the parent had already gone before it was asked."""
    return os.getppid() == pid


class RestartBackoff:
    """How long to wait before restarting one child: not at all after a good run, then doubling
    from 0.2 s up to ``RESTART_BACKOFF_MAX`` while it keeps dying within ``QUICK_DEATH`` of its
    start, so a child that cannot start does not make its parent spin."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._failures = 0

    def started(self) -> None:
        self._started = time.monotonic()

    def died(self) -> float:
        """The delay before the next start, in seconds."""
        lived = time.monotonic() - self._started
        self._failures = self._failures + 1 if lived < QUICK_DEATH else 0
        return min(RESTART_BACKOFF_MAX, 0.1 * 2 ** self._failures) if self._failures else 0.0
