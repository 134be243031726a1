"""The benchmark's targets (loadtest/bench/targets.py), checked on figures made up here."""

from __future__ import annotations

from loadtest.bench import report
from loadtest.bench.cases import DIRECT, MINIRELAY_KEPT, POSTFIX, SMTP_SHAPES, TEMPALIAS, UNTRUSTED
from loadtest.bench.targets import TARGETS, Target, evaluate, to_profile
from test_bench_report import (cluster_sample, http_sample, smtp_case, summarised_cluster,
                               summarised_run)


def test_a_target_is_met_on_its_side_of_the_bound():
    at_least = Target("share >= 0.8", "share", 0.8)
    below = Target("p99 < 50 ms", "p99", 50, below=True)
    figures = {"share": 0.8, "p99": 50.0}
    assert evaluate(figures, [at_least, below]) == [
        {"target": "share >= 0.8", "value": 0.8, "bound": 0.8, "met": True},
        {"target": "p99 < 50 ms", "value": 50.0, "bound": 50, "met": False}]
    assert [item["met"] for item in evaluate({"share": 0.79, "p99": 49.9},
                                             [at_least, below])] == [False, True]


def test_the_targets_of_a_section_that_did_not_run_are_left_out():
    figures = report.key_figures(summarised_run({1: [http_sample(10000, 5000, 5000)],
                                                 2: [http_sample(20000, 5000, 9000)]}, []))
    names = [item["target"] for item in evaluate(figures)]
    assert names and all("SMTP" not in name for name in names)


def test_every_target_reads_a_figure_a_full_run_produces():
    smtp_run = {}
    for shape, *_ in SMTP_SHAPES:
        for path in (DIRECT, TEMPALIAS, UNTRUSTED, MINIRELAY_KEPT, POSTFIX):
            smtp_run[f"{path}, {shape}"] = smtp_case(1000, p50=1.0, p99=2.0)
    result = summarised_run({1: [http_sample(10000, 5000, 5000)],
                             2: [http_sample(20000, 5000, 9000)]}, [smtp_run])
    result["capacity"] = {"checkpoints": {"10000": {"greeted_220": 10000, "rss_mb": 200.0}}}
    result["erasure"] = {"live_expected": 10, "live_untouched": 10}
    result["cluster"] = summarised_cluster([cluster_sample((1000, 400), (900, 380), (800, 360))])
    evaluated = evaluate(report.key_figures(result))
    assert [item["target"] for item in evaluated] == [t.name for t in TARGETS]


def test_issue_12s_relay_target_is_read_off_the_minimal_relay_with_kept_connections():
    figures = {report.SMTP_TO_MINIRELAY: 0.79}
    [item] = evaluate(figures)
    assert "minimal gevent relay" in item["target"] and item["bound"] == 0.80
    assert not item["met"]


def test_missed_targets_choose_which_cases_run_again_under_the_profiler():
    evaluated = evaluate({report.CREATION_P99_MS: 80.0, report.SMTP_TO_CEILING: 0.5,
                          report.IDLE_RSS_MB_AT_10K: 300.0})
    assert to_profile(evaluated) == {"http"}  # SMTP met; memory has no profiling pass
    assert to_profile(evaluate({report.SMTP_ADDED_P99_MS: 40.0})) == {"smtp"}


def test_a_cluster_below_85_percent_of_a_single_redis_is_profiled():
    evaluated = evaluate({report.CLUSTER_CREATION_TO_SINGLE: 0.84,
                          report.CLUSTER_FORWARDING_TO_SINGLE: 0.9})
    assert [item["met"] for item in evaluated] == [False, True]
    assert to_profile(evaluated) == {"cluster"}
