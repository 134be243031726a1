"""The benchmark's charts (loadtest/bench/charts.py), drawn from a result made of samples shaped as
the benchmark takes them (tests/test_bench_report.py's), summarised by report.py and read back
from JSON as a file of loadtest/results/ would be."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

from test_bench_report import OTHER_SHAPE, cluster_sample, http_sample, smtp_sample

from harness.processes import PROJECT_ROOT
from loadtest.bench import charts, report
from loadtest.bench.cases import (CREATE, DIRECT, HELLO_WORLD, MAIN_SHAPE, POSTFIX,
                                  REDIS_CLUSTER, SINGLE_REDIS, TEMPALIAS)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench_result() -> dict:
    result = {
        "command": "python -m loadtest.bench --runs 3", "started": "2026-12-03T21:18:22Z",
        "http": {workers: report.summarise([http_sample(hello * workers, 3000, 5000)
                                            for hello in (9000, 10000, 11000)])
                 for workers in (1, 2)},
        "smtp": report.summarise([smtp_sample(3000), smtp_sample(5000), smtp_sample(4000)]),
        "cluster": report.summarise([cluster_sample((1000, 400), (900, 380), (800, 360)),
                                     cluster_sample((1200, 600), (1000, 500), (960, 420))]),
    }
    report.derive_http(result["http"])
    report.derive_smtp(result["smtp"])
    report.derive_cluster(result["cluster"])
    return json.loads(json.dumps(result))  # as read from the file: the workers become strings


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def rows(panels, title_part: str) -> dict[str, str]:
    """{case: text written after its bar} of the one panel whose title names ``title_part``."""
    [panel] = [p for p in panels if title_part in p.title]
    return {row.label: row.bars[0].text for row in panel.rows}


def test_every_section_gets_its_charts_as_pngs_of_a_sane_size(tmp_path):
    paths = charts.write_charts(bench_result(), tmp_path / "out", "bench-x")
    assert sorted(p.name for p in paths) == sorted(
        [f"bench-x-{section}-{kind}.png" for section in ("http", "smtp", "cluster")
         for kind in ("throughput", "latency")] + ["bench-x-main-throughput.png"])
    sizes = {p.name.removeprefix("bench-x-"): png_size(p) for p in paths}
    for name, (width, height) in sizes.items():
        assert 600 <= width <= 2000 and 200 <= height <= 3000, (name, width, height)
    # each panel as tall as its bars need: 8 HTTP cases against the cluster's 6
    assert sizes["http-throughput.png"][1] > sizes["cluster-throughput.png"][1]


def test_each_bar_carries_its_ratio_to_each_baseline_of_its_panel():
    made = charts.charts(bench_result())
    http = rows(made["http-throughput"], "--workers 2")
    assert http[HELLO_WORLD] == "baseline"
    assert http[CREATE] == "0.15× hello-world"  # 3000 of 20000
    smtp = rows(made["smtp-throughput"], f"SMTP, {MAIN_SHAPE} (")
    assert smtp["tempalias"] == "0.40× direct, 1.00× minimal relay, 8.00× Postfix"
    assert smtp["direct"] == "baseline"
    assert smtp["Postfix"] == "baseline; 0.05× direct, 0.12× minimal relay"
    assert rows(made["smtp-throughput"], OTHER_SHAPE)["tempalias"] == "0.25× direct"
    cluster = rows(made["cluster-throughput"], CREATE)
    assert cluster[REDIS_CLUSTER] == "0.80× single"


def test_the_main_chart_holds_tempalias_against_hello_world_the_minimal_relay_and_postfix():
    """Issue 16: the README's one picture: HTTP with the most workers against hello-world, and the
    main SMTP shape against the minimal relay and Postfix, without the direct ceiling."""
    http, smtp = charts.charts(bench_result())["main-throughput"]
    assert "--workers 2" in http.title
    assert rows([http], "HTTP")[CREATE] == "0.15× hello-world"
    assert f"SMTP, {MAIN_SHAPE} (" in smtp.title
    forwarding = rows([smtp], "SMTP")
    assert "direct" not in forwarding
    assert forwarding["tempalias"] == "1.00× minimal relay, 8.00× Postfix"
    assert forwarding["Postfix"] == "baseline; 0.12× minimal relay"


def test_latency_shows_p50_and_p99_of_the_cases_that_measured_them():
    made = charts.charts(bench_result())
    [smtp] = made["smtp-latency"]  # only the main shape's cases ran the probe
    assert [row.label for row in smtp.rows] == ["direct", "tempalias"]
    assert [(bar.series, bar.text) for bar in smtp.rows[1].bars] == [("p50", "3.0 ms"),
                                                                    ("p99", "14.0 ms")]
    [cluster] = made["cluster-latency"]  # creation only: forwarding has no percentiles
    assert CREATE in cluster.title and len(cluster.rows) == 3


def test_a_case_missing_from_the_result_is_absent_and_the_rest_is_drawn(tmp_path):
    result = bench_result()
    del result["http"]["2"][HELLO_WORLD]
    del result["smtp"][f"{POSTFIX}, {MAIN_SHAPE}"]
    del result["cluster"][f"{SINGLE_REDIS}: {CREATE}"]
    result["smtp"][f"{DIRECT}, {MAIN_SHAPE}"]["probe_p99_ms"]["median"] = float("nan")
    made = charts.charts(result)
    http = rows(made["http-throughput"], "--workers 2")
    assert HELLO_WORLD not in http and http[CREATE] == ""  # nothing to be a ratio of
    smtp = rows(made["smtp-throughput"], f"SMTP, {MAIN_SHAPE} (")
    assert "Postfix" not in smtp
    assert smtp["tempalias"] == "0.40× direct, 1.00× minimal relay"
    assert SINGLE_REDIS not in rows(made["cluster-throughput"], CREATE)
    [smtp_latency] = made["smtp-latency"]
    assert [row.label for row in smtp_latency.rows] == ["tempalias"]  # the probe's NaN: no bar
    assert len(charts.write_charts(result, tmp_path)) == 7


def test_only_the_sections_that_ran_get_charts(tmp_path):
    result = bench_result()
    del result["http"], result["cluster"]
    result["smtp"] = {name: case for name, case in result["smtp"].items()
                      if name.startswith(TEMPALIAS)}
    assert sorted(charts.charts(result)) == ["main-throughput", "smtp-latency", "smtp-throughput"]
    assert charts.write_charts({"command": "x", "erasure": {}}, tmp_path) == []


def test_the_command_draws_the_charts_of_a_kept_json_beside_it(tmp_path):
    kept = tmp_path / "bench-20261203-211822.json"
    result = bench_result()
    del result["http"], result["smtp"]
    kept.write_text(json.dumps(result), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "loadtest.bench.charts", str(kept)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = [tmp_path / f"bench-20261203-211822-cluster-{kind}.png"
               for kind in ("throughput", "latency")]
    assert done.stdout.split() == [word for path in written for word in ("chart:", str(path))]
    assert all(png_size(path) for path in written)
