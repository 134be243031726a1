"""A message held whole before it goes on: what a signature or a seal covers must be complete.

Streaming is the proxy's rule (the client's bytes go to the next hop as they come), but a DKIM
signature and an ARC seal sign a hash of the whole body, and a reply is rewritten and checked
before any of it may leave. Such a message is held here while the client sends it: in memory up to
``MEMORY_LIMIT``, beyond it in an anonymous temporary file in the spool directory (mode 0600,
unlinked as soon as it is made, so no path, not even a crash, leaves a file behind). It is never
larger than the message size limit: the reader refuses a message past it and hands nothing more on.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

from tempalias.smtp.delivery import dot_stuff

MEMORY_LIMIT = 1024 * 1024  # octets held in memory; beyond it the message goes to a file
SPOOL_DIRECTORY = "spool"  # under the data directory
SEND_CHUNK = 64 * 1024  # octets per write to the next hop (whole lines)


def spool_directory(data_dir: str) -> str:
    """DATA_DIR/spool, made (mode 0700) when missing."""
    path = os.path.join(data_dir, SPOOL_DIRECTORY)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class Spool:
    """One message's lines as the client meant them (dot-stuffing undone), CRLF line ends."""

    def __init__(self, directory: str, memory_limit: int = MEMORY_LIMIT) -> None:
        # SpooledTemporaryFile rolls over to tempfile.TemporaryFile: mkstemp (0600) and unlinked
        # at once (O_TMPFILE where the file system has it).
        self._file = tempfile.SpooledTemporaryFile(max_size=memory_limit, dir=directory)
        self.size = 0

    def write(self, lines: bytes) -> None:
        self._file.write(lines)
        self.size += len(lines)

    def read(self) -> bytes:
        """The whole message (signing needs it whole; one message at a time per process)."""
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        """Idempotent; the file, if any, is gone with its descriptor."""
        self._file.close()


def stuffed_chunks(message: bytes, chunk: int = SEND_CHUNK) -> Iterator[bytes]:
    """``message`` dot-stuffed for the next hop, in blocks of whole lines of about ``chunk``."""
    start, length = 0, len(message)
    while start < length:
        end = message.find(b"\n", min(start + chunk, length) - 1)
        end = length if end < 0 else end + 1
        yield dot_stuff(message[start:end])
        start = end
