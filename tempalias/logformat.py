"""How log lines are written: ``text`` for a person at a terminal or journal, ``json`` (one object
a line) for a collector that should not parse prose.

The JSON field names are a contract a collector's queries are built on, so they are fixed here:
``time`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message, as the text format
shows it), ``pid``, and the SMTP proxy's ``client``, ``outcome`` and ``queue_id`` when the line
carries them (``extra=`` where ``tempalias/smtp`` writes its lines); ``exception`` for a
traceback. The text format's lines stay as they were.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
# what the SMTP proxy passes with extra=; a field absent or None is left out of the object
SMTP_FIELDS = ("client", "outcome", "queue_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes inside it, escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        body = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
        }
        for name in SMTP_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                body[name] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False, default=str)


def configure(level: str, log_format: str) -> None:
    """The root logger's one handler, on stderr, in ``log_format``: ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
