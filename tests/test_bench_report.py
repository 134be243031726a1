"""The benchmark's report (loadtest/bench/report.py): medians, ratios and key figures, computed on
samples made up here; no process runs."""

from __future__ import annotations

import pytest

from loadtest.bench import report
from loadtest.bench.cases import (CREATE, DIRECT, HELLO_WORLD, LEGACY_JSONP, LOOKUP, MAIN_SHAPE,
                                  MINIRELAY_KEPT, NODE_FORWARDING, POSTFIX, REDIS_CLUSTER,
                                  REDIS_WITH_REPLICA, SINGLE_REDIS, TEMPALIAS, UNTRUSTED)

OTHER_SHAPE = "100 KiB, 1 session"


def http_sample(hello: float, create: float, lookup: float, p99: float = 20.0) -> dict:
    def case(rate: float) -> dict:
        return {"req_per_s": rate, "p50_ms": 2.0, "p99_ms": p99, "requests": 1, "errors": 0}

    return {HELLO_WORLD: case(hello), CREATE: case(create), LOOKUP: case(lookup),
            LEGACY_JSONP: case(create)}


def smtp_case(rate: float, lost: int = 0, p50: float | None = None, p99: float | None = None):
    sample = {"msg_per_s": rate, "lost_or_duplicated": lost}
    if p50 is not None:
        sample.update({"probe_p50_ms": p50, "probe_p99_ms": p99})
    return sample


def smtp_sample(tempalias: float = 3000, lost: int = 0, untrusted: float = 2700,
                untrusted_lost: int = 0) -> dict:
    return {
        f"{DIRECT}, {MAIN_SHAPE}": smtp_case(10000, p50=1.0, p99=4.0),
        f"{TEMPALIAS}, {MAIN_SHAPE}": smtp_case(tempalias, lost, p50=3.0, p99=14.0),
        f"{UNTRUSTED}, {MAIN_SHAPE}": smtp_case(untrusted, untrusted_lost),
        f"{MINIRELAY_KEPT}, {MAIN_SHAPE}": smtp_case(4000),
        f"{POSTFIX}, {MAIN_SHAPE}": smtp_case(500),
        f"{DIRECT}, {OTHER_SHAPE}": smtp_case(800),
        f"{TEMPALIAS}, {OTHER_SHAPE}": smtp_case(200, lost=-1),  # a duplicate counts too
    }


def cluster_sample(single: tuple[float, float], replica: tuple[float, float],
                   cluster: tuple[float, float], lost: int = 0) -> dict:
    """(creations/s, messages/s) of the node on each deployment."""
    run = {}
    for deployment, (created, forwarded) in ((SINGLE_REDIS, single), (REDIS_WITH_REPLICA, replica),
                                             (REDIS_CLUSTER, cluster)):
        run[f"{deployment}: {CREATE}"] = {"req_per_s": created, "p50_ms": 2.0, "p99_ms": 9.0,
                                          "requests": 1, "errors": 0}
        run[f"{deployment}: {NODE_FORWARDING}"] = smtp_case(
            forwarded, lost if deployment == REDIS_CLUSTER else 0)
    return run


def summarised_cluster(runs: list[dict]) -> dict:
    cluster = report.summarise(runs)
    report.derive_cluster(cluster)
    return cluster


def summarised_run(http_runs: dict[int, list[dict]], smtp_runs: list[dict]) -> dict:
    result = {"http": {w: report.summarise(runs) for w, runs in http_runs.items()},
              "smtp": report.summarise(smtp_runs)}
    report.derive_http(result["http"])
    report.derive_smtp(result["smtp"])
    return result


def test_each_figure_gets_its_median_and_range_and_every_sample_is_kept():
    runs = [{"case": {"req_per_s": rate, "p99_ms": p99, "tool": "wrk"}}
            for rate, p99 in ((100.0, 9.0), (300.0, 30.0), (200.0, 12.0))]
    [(name, case)] = report.summarise(runs).items()
    assert name == "case"
    assert case["req_per_s"] == {"median": 200.0, "min": 100.0, "max": 300.0}
    assert case["p99_ms"] == {"median": 12.0, "min": 9.0, "max": 30.0}
    assert "tool" not in case  # only numbers are summarised
    assert [s["req_per_s"] for s in case["samples"]] == [100.0, 300.0, 200.0]


def test_a_figure_some_samples_lack_is_summarised_over_those_that_have_it():
    runs = [{"case": {"msg_per_s": 10.0, "probe_p99_ms": 5.0}},
            {"case": {"msg_per_s": 20.0}},
            {"case": {"msg_per_s": 30.0, "probe_p99_ms": 7.0}}]
    case = report.summarise(runs)["case"]
    assert case["probe_p99_ms"] == {"median": 6.0, "min": 5.0, "max": 7.0}


def test_http_cases_are_shares_of_hello_world_with_as_many_workers():
    result = summarised_run({1: [http_sample(10000, 3000, 5000)],
                             2: [http_sample(20000, 5000, 9000)]}, [])
    assert result["http"][1][CREATE]["ratio_to_baseline"] == pytest.approx(0.30)
    assert result["http"][2][CREATE]["ratio_to_baseline"] == pytest.approx(0.25)
    assert result["http"][2][LOOKUP]["ratio_to_baseline"] == pytest.approx(0.45)
    assert result["http"][2][HELLO_WORLD]["ratio_to_baseline"] == 1.0


def test_smtp_cases_are_shares_of_the_ceiling_postfix_and_the_minimal_relay_in_their_shape():
    smtp = summarised_run({}, [smtp_sample(3000), smtp_sample(5000), smtp_sample(4000)])["smtp"]
    main = smtp[f"{TEMPALIAS}, {MAIN_SHAPE}"]
    assert main["ratio_to_ceiling"] == pytest.approx(0.40)  # the median, 4000, of 10000
    assert main["ratio_to_postfix"] == pytest.approx(8.0)
    assert main["ratio_to_minirelay"] == pytest.approx(1.0)
    assert main["added_p50_ms"] == pytest.approx(2.0)
    assert main["added_p99_ms"] == pytest.approx(10.0)
    untrusted = smtp[f"{UNTRUSTED}, {MAIN_SHAPE}"]
    assert untrusted["ratio_to_limits_off"] == pytest.approx(2700 / 4000)
    assert untrusted["ratio_to_ceiling"] == pytest.approx(0.27)  # its own shape, parsed right
    other = smtp[f"{TEMPALIAS}, {OTHER_SHAPE}"]
    assert other["ratio_to_ceiling"] == pytest.approx(0.25)
    assert other["ratio_to_postfix"] is None  # Postfix ran in the main shape only


def test_key_figures_come_from_the_most_workers_and_count_every_lost_or_duplicated_message():
    result = summarised_run({1: [http_sample(10000, 9000, 9000, p99=5.0)],
                             2: [http_sample(20000, 5000, 9000, p99=80.0)]},
                            [smtp_sample(lost=2, untrusted_lost=1), smtp_sample(lost=0)])
    result["capacity"] = {"checkpoints": {"1000": {"greeted_220": 1000, "rss_mb": 60.0},
                                          "10000": {"greeted_220": 9990, "rss_mb": 210.0}}}
    result["erasure"] = {"live_expected": 990, "live_untouched": 989}
    figures = report.key_figures(result)
    assert figures[report.CREATION_TO_HELLO] == pytest.approx(0.25)
    assert figures[report.CREATION_P99_MS] == 80.0
    assert figures[report.SMTP_LOST] == 2 + 2 + 1  # 2 lost, a duplicate in each run, 1 untrusted
    assert figures[report.UNTRUSTED_TO_LIMITS_OFF] == pytest.approx(0.9)
    assert figures[report.SMTP_TO_MINIRELAY] == pytest.approx(0.75)
    assert figures[report.SMTP_ADDED_P99_MS] == pytest.approx(10.0)
    assert figures[report.IDLE_GREETED_AT_10K] == 9990
    assert figures[report.IDLE_RSS_MB_AT_10K] == 210.0
    assert figures[report.LIVE_ALIASES_TOUCHED] == 1


def test_sections_that_did_not_run_give_no_figures():
    figures = report.key_figures(summarised_run({}, [smtp_sample()]))
    assert report.CREATION_TO_HELLO not in figures and report.IDLE_GREETED_AT_10K not in figures
    assert report.SMTP_TO_CEILING in figures


def test_a_latency_the_probe_could_not_measure_is_no_figure():
    run = smtp_sample()
    run[f"{DIRECT}, {MAIN_SHAPE}"].update(probe_p50_ms=float("nan"), probe_p99_ms=float("nan"))
    figures = report.key_figures(summarised_run({}, [run]))
    assert report.SMTP_ADDED_P99_MS not in figures  # not a miss of its target: not measured
    assert report.SMTP_TO_CEILING in figures


def test_the_tables_show_every_case_with_its_median_and_range():
    result = summarised_run({2: [http_sample(20000, 5000, 9000), http_sample(22000, 6000, 9000)]},
                            [smtp_sample(3000), smtp_sample(5000)])
    http = "\n".join(report.http_lines(result["http"]))
    assert f"{CREATE:40} {'5,500 (5,000-6,000)':>24}" in http
    smtp = "\n".join(report.smtp_lines(result["smtp"], workers=2))
    assert "tempalias reaches 1.00 of the minimal gevent relay" in smtp
    assert f"{TEMPALIAS}, {OTHER_SHAPE}" in smtp


def test_cluster_cases_are_shares_of_the_single_redis_server_in_the_same_run():
    cluster = summarised_cluster([cluster_sample((1000, 400), (900, 380), (800, 360)),
                                  cluster_sample((1200, 600), (1000, 500), (960, 420), lost=2)])
    assert cluster[f"{REDIS_CLUSTER}: {CREATE}"]["ratio_to_single"] == pytest.approx(880 / 1100)
    assert cluster[f"{REDIS_WITH_REPLICA}: {NODE_FORWARDING}"]["ratio_to_single"] == \
        pytest.approx(440 / 500)
    assert cluster[f"{SINGLE_REDIS}: {CREATE}"]["ratio_to_single"] == 1.0
    figures = report.key_figures({"cluster": cluster})
    assert figures[report.CLUSTER_CREATION_TO_SINGLE] == pytest.approx(0.8)
    assert figures[report.CLUSTER_FORWARDING_TO_SINGLE] == pytest.approx(390 / 500)
    assert figures[report.CLUSTER_LOST] == 2
    table = "\n".join(report.cluster_lines(cluster, workers=2))
    assert f"{f'{REDIS_CLUSTER}: {CREATE}':84} {'880 (800-960)':>22} {'0.80':>9}" in table
