"""Child processes that do not outlive their parent.

Linux's PR_SET_PDEATHSIG makes the kernel signal a child when its parent exits, however it exits.
Used for the embedded redis-server (before exec) and for the workers of ``tempalias serve
--workers`` (after fork): a parent killed with SIGKILL (the OOM killer, a supervisor's last
resort) must not leave workers serving its ports with nobody to stop them.
"""

from __future__ import annotations

import ctypes
import os
import signal

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
