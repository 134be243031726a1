"""A secret file made once: the SRS secret, the DKIM keys.

Written whole under a temporary name (mode 0600) and then linked into place, so that worker
processes starting at the same moment all end up with the one file that won, never a
half-written one; an existing file is kept (what was made from it, addresses or published keys,
must stay valid across restarts).
"""

from __future__ import annotations

import os
import secrets
from typing import Callable


def create_once(path: str, make: Callable[[], bytes]) -> None:
    """Write ``make()`` to ``path`` (mode 0600, its directory made 0700) unless it exists; the
    first of several processes doing so at once wins. Raises OSError."""
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process was first: its file is the one
    finally:
        os.unlink(temporary)
