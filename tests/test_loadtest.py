"""The load test (loadtest/run.py): a smoke run of the Locust scenario, headless for a few seconds,
against the throwaway stack that ``make loadtest`` uses (loadtest/stack.py); and what our code
makes of Locust's figures, on figures made up here."""

from __future__ import annotations

import json

import pytest

from loadtest.run import (LIVE_SENDS, UNKNOWN_SENDS, RequestStats, load_test, read_stats,
                          verdict)


@pytest.fixture(scope="module")
def short_load_test(tmp_path_factory):
    return load_test(tmp_path_factory.mktemp("loadtest"), users=6, spawn_rate=6, seconds=6,
                     workers=1)


def test_both_doors_are_exercised_without_unexpected_failures(short_load_test):
    result = short_load_test
    assert result.ok, result.problems
    ran = {row.name: row.requests for row in result.stats}
    for name in ("POST /api/v1/aliases", "GET /api/v1/aliases/[id]", LIVE_SENDS, UNKNOWN_SENDS):
        assert ran.get(name, 0) > 0, f"{name!r} never ran: {ran}"
    assert {row.kind for row in result.stats} >= {"POST", "GET", "SMTP"}
    assert sum(row.failures for row in result.stats) == 0


def test_every_accepted_message_reached_the_sink_once(short_load_test):
    live = short_load_test.by_name(LIVE_SENDS)
    assert live.requests > 0
    assert short_load_test.sink_messages == live.requests - live.failures


def test_the_services_own_metrics_count_the_run_as_locust_and_the_sink_saw_it(short_load_test):
    """Issue 16: the run keeps tempalias's /metrics beside Locust's report, and its counters agree
    with the load: forwards with the sink, 250s and unknown recipients with Locust."""
    result = short_load_test
    assert (result.output_dir / "metrics.txt").read_text().count("tempalias_") > 50
    unknown = result.by_name(UNKNOWN_SENDS)
    assert result.own_counts == {"forwarded": result.sink_messages,
                                 "delivered": result.sink_messages,
                                 "refused-unknown": unknown.requests}
    assert result.sink_messages > 0 and unknown.requests > 0


def _locust_entry(method: str, name: str, times: dict[int, int], failures: int = 0) -> dict:
    """One entry of Locust's --json-file, as Locust writes it."""
    return {"method": method, "name": name, "num_requests": sum(times.values()),
            "num_failures": failures, "response_times": {str(ms): n for ms, n in times.items()},
            "start_time": 1000.0, "last_request_timestamp": 1010.0}


def test_locusts_final_figures_are_read_as_its_tables_show_them(tmp_path):
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(json.dumps([
        _locust_entry("SMTP", LIVE_SENDS, {12: 60, 15: 30, 40: 9, 900: 1}, failures=1),
        _locust_entry("GET", "GET /api/v1/aliases/[id]", {3: 10}),
    ]))
    rows = read_stats(stats_file)
    assert [(row.kind, row.name) for row in rows] == [("GET", "GET /api/v1/aliases/[id]"),
                                                      ("SMTP", LIVE_SENDS)]
    smtp = rows[1]
    assert (smtp.requests, smtp.failures) == (100, 1)
    assert (smtp.median_ms, smtp.p99_ms) == (12, 40)  # the 99th of 100 is the 40 ms one
    assert smtp.per_second == pytest.approx(10.0)  # 100 requests in the 10 s between its stamps
    assert (rows[0].median_ms, rows[0].p99_ms) == (3, 3)


def _row(name: str, requests: int, failures: int = 0, kind: str = "SMTP") -> RequestStats:
    return RequestStats(kind, name, requests, failures, 10.0, 20.0, 5.0)


def test_a_run_passes_only_when_nothing_failed_and_the_sink_got_each_accepted_message(tmp_path):
    clean = [_row(LIVE_SENDS, 50, failures=0), _row("POST /api/v1/aliases", 40, kind="POST")]
    assert verdict(0, clean, 50, tmp_path) == []
    lost = verdict(0, clean, 49, tmp_path)
    assert lost == ["tempalias accepted 50 messages but the sink received 49"]
    assert verdict(0, clean, 51, tmp_path) == [
        "tempalias accepted 50 messages but the sink received 51"]  # a duplicate
    failed = [_row(LIVE_SENDS, 50, failures=2)]
    assert verdict(0, failed, 48, tmp_path) == [f"2 of 50 SMTP {LIVE_SENDS!r} failed"]
    assert verdict(1, clean, 50, tmp_path) == [
        f"locust exited with 1 (see {tmp_path / 'locust.log'})"]


def test_a_run_fails_when_the_services_own_counters_disagree(tmp_path):
    rows = [_row(LIVE_SENDS, 50), _row(UNKNOWN_SENDS, 7)]
    agreeing = {"forwarded": 50, "delivered": 50, "refused-unknown": 7}
    assert verdict(0, rows, 50, tmp_path, agreeing) == []
    assert verdict(0, rows, 50, tmp_path, {**agreeing, "forwarded": 49, "refused-unknown": 8}) == [
        "tempalias's metrics count 49 forwarded but the sink received 50",
        "tempalias's metrics count 8 refused-unknown but Locust sent to unknown aliases 7"]


def test_a_cluster_run_loses_nothing_across_its_nodes(tmp_path):
    """``make loadtest LOADTEST_ARGS=--cluster``: three nodes on a Redis Cluster behind nginx."""
    result = load_test(tmp_path, users=6, spawn_rate=6, seconds=5, workers=1, cluster_nodes=3)
    assert result.ok, result.problems
    live = result.by_name(LIVE_SENDS)
    assert live is not None and live.requests > 0
    assert result.by_name("POST /api/v1/aliases").requests > 0
    assert result.own_counts["forwarded"] == result.sink_messages  # summed over the three nodes
    assert len(list(result.output_dir.glob("metrics-*.txt"))) == 3
