"""The benchmark's targets, as data: which key figure (report.py) each reads, its bound, and
which way it must lie. Issues 7, 12 and 15 set them; a new target is one more row.

``profile`` names the kind of case (cases.profile_missed) that ``--profile`` runs again under
py-spy when the target is missed.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.bench import report


@dataclass(frozen=True)
class Target:
    name: str
    figure: str  # a key of report.key_figures
    bound: float
    below: bool = False  # met when the figure is below the bound, else when at or above it
    profile: str | None = None

    def met(self, value: float) -> bool:
        return value < self.bound if self.below else value >= self.bound


TARGETS = [
    Target("alias creation >= 30% of hello-world (2 workers)", report.CREATION_TO_HELLO, 0.30,
           profile="http"),
    Target("token look-up >= 40% of hello-world (2 workers)", report.LOOKUP_TO_HELLO, 0.40,
           profile="http"),
    Target("creation p99 < 50 ms at 50 connections (2 workers)", report.CREATION_P99_MS, 50,
           below=True, profile="http"),
    Target("look-up p99 < 50 ms at 50 connections (2 workers)", report.LOOKUP_P99_MS, 50,
           below=True, profile="http"),
    Target("SMTP lost or duplicated messages = 0", report.SMTP_LOST, 1, below=True),
    Target("SMTP forwarding >= 40% of the direct ceiling (2 KiB, 20 sessions)",
           report.SMTP_TO_CEILING, 0.40, profile="smtp"),
    Target("SMTP forwarding >= 5x Postfix (2 KiB, 20 sessions)", report.SMTP_TO_POSTFIX, 5.0,
           profile="smtp"),
    Target("SMTP forwarding >= 80% of the minimal gevent relay with kept smarthost connections",
           report.SMTP_TO_MINIRELAY, 0.80, profile="smtp"),
    Target("SMTP added p99 latency < 25 ms", report.SMTP_ADDED_P99_MS, 25, below=True,
           profile="smtp"),
    Target("SMTP from an untrusted client with limits on >= 85% of limits off",
           report.UNTRUSTED_TO_LIMITS_OFF, 0.85, profile="smtp"),
    Target("10,000 idle SMTP connections in one process", report.IDLE_GREETED_AT_10K, 10000),
    Target("RSS at 10,000 idle connections < 250 MB", report.IDLE_RSS_MB_AT_10K, 250, below=True),
    Target("erasure leaves every live alias untouched", report.LIVE_ALIASES_TOUCHED, 1, below=True),
    Target("a node on a Redis Cluster creates >= 85% of what it does on a single redis-server",
           report.CLUSTER_CREATION_TO_SINGLE, 0.85, profile="cluster"),
    Target("a node on a Redis Cluster forwards >= 85% of what it does on a single redis-server",
           report.CLUSTER_FORWARDING_TO_SINGLE, 0.85, profile="cluster"),
    Target("cluster cases: lost or duplicated messages = 0", report.CLUSTER_LOST, 1, below=True),
]


def evaluate(figures: dict[str, float], targets: list[Target] = TARGETS) -> list[dict]:
    """Each target whose figure was measured: ``{target, value, bound, met}``, in the table's
    order; a target of a section that did not run is left out, not counted as missed."""
    return [{"target": t.name, "value": figures[t.figure], "bound": t.bound,
             "met": t.met(figures[t.figure])} for t in targets if t.figure in figures]


def to_profile(evaluated: list[dict], targets: list[Target] = TARGETS) -> set[str]:
    """The kinds of case to run again under py-spy: those of the missed targets."""
    missed = {item["target"] for item in evaluated if not item["met"]}
    return {t.profile for t in targets if t.name in missed and t.profile}
