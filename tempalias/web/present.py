"""How an alias is shown to its owner: the JSON shapes of the API and of the original service."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tempalias.config import Config
from tempalias.store import Alias


def iso_utc(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def alias_json(config: Config, alias: Alias) -> dict[str, Any]:
    return {
        "id": alias.id,
        "address": f"{alias.id}@{config.primary_domain}",
        "target": alias.target,
        "created_at": iso_utc(alias.created_ms),
        "expires_at": iso_utc(alias.expires_ms),
        "uses_left": alias.uses_left,
    }


def legacy_alias_json(config: Config, alias: Alias, days: int, token: str) -> dict[str, Any]:
    """The original service's shape (``aid``, ``valid_until``, ``max_usage``), plus the token."""
    return {
        "aid": alias.id,
        "address": f"{alias.id}@{config.primary_domain}",
        "target": alias.target,
        "days": days,
        "max_usage": alias.uses_left,
        "valid_from": iso_utc(alias.created_ms),
        "valid_until": iso_utc(alias.expires_ms),
        "token": token,
    }
