"""The no-smarthost default: deliveries become files in one Maildir under the data directory.

For ``make run`` on a laptop: mail sent to an alias can be read without any other mail server.
The Maildir rules (tmp/ then an atomic rename into new/, unique names) make each file complete
the moment it appears. The message is streamed into tmp/ as it arrives, never held whole.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from typing import BinaryIO

from tempalias.smtp import replies
from tempalias.smtp.delivery import DeliveryError, dot_unstuff
from tempalias.smtp.replies import Reply

_counter = itertools.count()


def ensure_maildir(path: str) -> str:
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    return path


def unique_name() -> str:
    """``time.MusecPpidQn.host`` as in https://cr.yp.to/proto/maildir.html."""
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{host}"


class MaildirTransaction:
    def __init__(self, path: str, sender: str) -> None:
        self._path = path
        self._sender = sender
        self._recipients: list[str] = []
        self._name = unique_name()
        self._tmp = os.path.join(path, "tmp", self._name)
        self._file: BinaryIO | None = None

    def add_recipient(self, address: str) -> Reply | None:
        self._recipients.append(address)
        return None

    def start_data(self, header: bytes) -> None:
        try:
            descriptor = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise DeliveryError(replies.LOCAL_ERROR, f"maildir: {exc}") from None
        self._file = os.fdopen(descriptor, "wb")
        # What a delivery agent adds: the envelope, since a Maildir file has no other place for it.
        envelope = [f"Return-Path: <{self._sender}>\r\n"]
        envelope += [f"Delivered-To: {address}\r\n" for address in self._recipients]
        self._write("".join(envelope).encode("utf-8") + header)

    def write(self, data: bytes) -> None:
        self._write(dot_unstuff(data))  # RFC 5321 4.5.2: a file holds what the client meant

    def _write(self, data: bytes) -> None:
        if self._file is None:
            raise DeliveryError(replies.LOCAL_ERROR, "maildir: file not open")
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise DeliveryError(replies.LOCAL_ERROR, f"maildir: {exc}") from None

    def finish(self) -> str:
        if self._file is None:
            raise DeliveryError(replies.LOCAL_ERROR, "maildir: file not open")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.rename(self._tmp, os.path.join(self._path, "new", self._name))
        except OSError as exc:
            self.abort()
            raise DeliveryError(replies.LOCAL_ERROR, f"maildir: {exc}") from None
        return self._name

    def abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass
        except OSError:
            pass


class MaildirDelivery:
    def __init__(self, path: str) -> None:
        self.path = ensure_maildir(os.path.abspath(path))
        self.description = f"Maildir {self.path} (no smarthost configured)"
        self.local = True

    def close(self) -> None:
        pass

    def open(self, sender: str, recipient: str, smtputf8: bool, eight_bit: bool,
             size: int | None) -> tuple[MaildirTransaction, Reply | None]:
        transaction = MaildirTransaction(self.path, sender)
        return transaction, transaction.add_recipient(recipient)

    def finish(self, transaction: MaildirTransaction) -> str:
        return transaction.finish()
