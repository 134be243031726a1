"""Smoke test of the load test: the Locust scenario, headless for a few seconds, against the
throwaway stack that ``make loadtest`` uses (loadtest/run.py, loadtest/stack.py)."""

from __future__ import annotations

import pytest

from loadtest.run import LIVE_SENDS, load_test


@pytest.fixture(scope="module")
def short_load_test(tmp_path_factory):
    return load_test(tmp_path_factory.mktemp("loadtest"), users=6, spawn_rate=6, seconds=6,
                     workers=1)


def test_both_doors_are_exercised_without_unexpected_failures(short_load_test):
    result = short_load_test
    assert result.ok, result.problems
    ran = {row.name: row.requests for row in result.stats}
    for name in ("POST /api/v1/aliases", "GET /api/v1/aliases/[id]", LIVE_SENDS,
                 "send to an unknown alias (expects 550)"):
        assert ran.get(name, 0) > 0, f"{name!r} never ran: {ran}"
    assert {row.kind for row in result.stats} >= {"POST", "GET", "SMTP"}
    assert sum(row.failures for row in result.stats) == 0


def test_every_accepted_message_reached_the_sink_once(short_load_test):
    live = short_load_test.by_name(LIVE_SENDS)
    assert live.requests > 0
    assert short_load_test.sink_messages == live.requests - live.failures


def test_reports_are_written(short_load_test):
    report = short_load_test.output_dir / "report.html"
    assert report.exists() and "Locust" in report.read_text(encoding="utf-8")
    stats_csv = (short_load_test.output_dir / "locust_stats.csv").read_text(encoding="utf-8")
    assert "SMTP" in stats_csv and "/api/v1/aliases" in stats_csv
