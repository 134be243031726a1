"""The service's counts in Redis, so that ``tempalias stats`` answers for every process of every
node: aliases created, messages forwarded, transactions by outcome, per hour; and the days the
aliases created end at the latest, from which the live aliases are estimated.

Processes do not write per event: ``metrics.py`` tallies in memory and a flusher hands the tally
here every few seconds, one round trip (HINCRBY per field, one EXPIRE), never per message. Keys:
``keys.stats_hour_key`` (an hour's hash, two days' TTL) and ``keys.STATS_ENDS_KEY``. The hour is
the writing process's clock (nodes keep NTP time; an hour's edge is not worth a round trip).

An alias at the operator's domains ends by its key's expiry and nobody is told, so no count of
ended aliases can be kept: ``live_upper_bound`` counts aliases whose last day has not passed,
those revoked or used up early included. It says so wherever it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from tempalias.store import keys
from tempalias.store.runner import ScriptRunner, operation

HOUR_SECONDS = 3600
DAY_SECONDS = 86400


@dataclass(frozen=True)
class Window:
    """Counts summed over the last ``hours`` hours (the current one included)."""

    hours: int
    counts: dict[str, int]


class StatsStore:
    def __init__(self, client, runner: ScriptRunner | None = None) -> None:
        self.runner = runner or ScriptRunner(client)

    @operation
    def add(self, now: float, counts: Mapping[str, int], ends: Mapping[int, int]) -> None:
        """Add ``counts`` (field -> amount) to the hour of ``now`` (epoch seconds) and ``ends``
        (day since the epoch -> aliases ending that day) to the ends hash; one round trip."""
        hour_key = keys.stats_hour_key(int(now // HOUR_SECONDS))
        commands: list[tuple] = [("HINCRBY", hour_key, field, amount)
                                 for field, amount in counts.items() if amount]
        if commands:
            commands.append(("EXPIRE", hour_key, keys.STATS_TTL_SECONDS))
        commands += [("HINCRBY", keys.STATS_ENDS_KEY, str(day), amount)
                     for day, amount in ends.items() if amount]
        if commands:
            self.runner.send(*commands)

    @operation
    def windows(self, now: float, spans: tuple[int, ...] = (1, 24)) -> list[Window]:
        """The counts of the last ``span`` hours for each span, from one read of the hours."""
        current = int(now // HOUR_SECONDS)
        longest = max(spans)
        hashes = self.runner.send(*(("HGETALL", keys.stats_hour_key(current - back))
                                    for back in range(longest)))
        result = []
        for span in spans:
            summed: dict[str, int] = {}
            for fields in hashes[:span]:
                for field, amount in _decoded(fields).items():
                    summed[field] = summed.get(field, 0) + amount
            result.append(Window(span, summed))
        return result

    @operation
    def live_upper_bound(self, now: float) -> int:
        """Aliases created whose last day is today or later (an upper bound of the live ones:
        those revoked or used up before their end are still in it)."""
        [ends] = self.runner.send(("HGETALL", keys.STATS_ENDS_KEY))
        today = int(now // DAY_SECONDS)
        return sum(amount for day, amount in _decoded(ends).items() if int(day) >= today)


def _decoded(fields) -> dict[str, int]:
    """HGETALL's reply (a dict or a flat list, bytes or text) as text -> int."""
    if isinstance(fields, dict):
        items = fields.items()
    else:
        items = zip(fields[::2], fields[1::2])
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in items}
