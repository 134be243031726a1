"""From samples to the benchmark's report: medians and ranges, the ratios between cases, the key
figures the targets are read off, and the tables printed at the end.

Pure functions of the samples (no processes, no clock), so that tests/test_bench_report.py can
check them on samples it makes up.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from loadtest.bench.cases import (ARC_OFF, CREATE, DIRECT, HELLO_WORLD, LOOKUP, MAIN_SHAPE,
                                  MINIRELAY_KEPT, NODE_FORWARDING, POSTFIX, REDIS_CLUSTER,
                                  REPLIES, SIGNING_SHAPES, SINGLE_REDIS, TEMPALIAS, UNTRUSTED)
from loadtest.bench.tools import WRK_CONNECTIONS, Sample

# The key figures (``key_figures``); the targets (targets.py) name the one each reads.
CREATION_TO_HELLO = "alias creation / hello-world, req/s"
LOOKUP_TO_HELLO = "token look-up / hello-world, req/s"
CREATION_P99_MS = "alias creation p99, ms"
LOOKUP_P99_MS = "token look-up p99, ms"
SMTP_LOST = "messages tempalias lost or duplicated"
SMTP_TO_CEILING = "tempalias / direct to the sink, msg/s"
SMTP_TO_POSTFIX = "tempalias / Postfix, msg/s"
SMTP_TO_MINIRELAY = "tempalias / minimal relay (upstream kept), msg/s"
UNTRUSTED_TO_LIMITS_OFF = "untrusted client with limits on / limits off, msg/s"
SMTP_ADDED_P99_MS = "added p99 latency under load, ms"
IDLE_GREETED_AT_10K = "idle connections greeted of 10,000"
IDLE_RSS_MB_AT_10K = "RSS at 10,000 idle connections, MB"
LIVE_ALIASES_TOUCHED = "live aliases touched by purge"
CLUSTER_CREATION_TO_SINGLE = "node on a Redis Cluster / on a single redis-server, creation req/s"
CLUSTER_FORWARDING_TO_SINGLE = "node on a Redis Cluster / on a single redis-server, forwarding msg/s"
CLUSTER_LOST = "messages lost or duplicated by the nodes of the cluster cases"


def median_and_range(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(samples: list[dict[str, Sample]]) -> dict[str, dict[str, Any]]:
    """Per case: every sample, and the median and range of each numeric figure."""
    cases: dict[str, dict[str, Any]] = {}
    for run in samples:
        for name, sample in run.items():
            cases.setdefault(name, {"samples": []})["samples"].append(sample)
    for case in cases.values():
        keys = [k for k, v in case["samples"][0].items() if isinstance(v, (int, float))]
        for key in keys:
            values = [s[key] for s in case["samples"] if isinstance(s.get(key), (int, float))]
            if values:
                case[key] = median_and_range(values)
    return cases


def _median(case: dict | None, figure: str) -> float | None:
    return case[figure]["median"] if case and figure in case else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


# --- ratios between the cases of one run, added to the summaries


def derive_http(http: dict[int, dict[str, dict]]) -> None:
    """Each case's req/s as a share of hello-world's with as many workers."""
    for cases in http.values():
        baseline = _median(cases.get(HELLO_WORLD), "req_per_s")
        for case in cases.values():
            case["ratio_to_baseline"] = _ratio(_median(case, "req_per_s"), baseline)


def derive_smtp(smtp: dict[str, dict]) -> None:
    """Each case's msg/s as a share of the direct ceiling and of Postfix in the same shape; for
    tempalias in the main shape, its share of the minimal relay's and the latency it adds."""
    for name, case in smtp.items():
        shape = name.split(", ", 1)[1]
        rate = _median(case, "msg_per_s")
        case["ratio_to_ceiling"] = _ratio(rate, _median(smtp.get(f"{DIRECT}, {shape}"),
                                                        "msg_per_s"))
        case["ratio_to_postfix"] = _ratio(rate, _median(smtp.get(f"{POSTFIX}, {shape}"),
                                                        "msg_per_s"))
    main = smtp.get(f"{TEMPALIAS}, {MAIN_SHAPE}")
    direct = smtp.get(f"{DIRECT}, {MAIN_SHAPE}")
    if main is None:
        return
    untrusted = smtp.get(f"{UNTRUSTED}, {MAIN_SHAPE}")
    if untrusted is not None:
        untrusted["ratio_to_limits_off"] = _ratio(_median(untrusted, "msg_per_s"),
                                                  _median(main, "msg_per_s"))
    for path in (REPLIES, ARC_OFF):
        for shape in SIGNING_SHAPES:
            case, plain = smtp.get(f"{path}, {shape}"), smtp.get(f"{TEMPALIAS}, {shape}")
            if case is not None and plain is not None:
                case["ratio_to_plain_forwarding"] = _ratio(_median(case, "msg_per_s"),
                                                           _median(plain, "msg_per_s"))
    main["ratio_to_minirelay"] = _ratio(_median(main, "msg_per_s"),
                                        _median(smtp.get(f"{MINIRELAY_KEPT}, {MAIN_SHAPE}"),
                                                "msg_per_s"))
    for figure in ("p50", "p99"):
        ours, floor = _median(main, f"probe_{figure}_ms"), _median(direct, f"probe_{figure}_ms")
        main[f"added_{figure}_ms"] = ours - floor if ours is not None and floor is not None \
            else None


def derive_cluster(cluster: dict[str, dict]) -> None:
    """Each "DEPLOYMENT: WHAT" case's rate as a share of the single redis-server's for WHAT."""
    for name, case in cluster.items():
        what = name.split(": ", 1)[1]
        rate = _cluster_rate(case)
        case["ratio_to_single"] = _ratio(_median(case, rate),
                                         _median(cluster.get(f"{SINGLE_REDIS}: {what}"), rate))


def _cluster_rate(case: dict) -> str:
    return "req_per_s" if "req_per_s" in case else "msg_per_s"


def key_figures(result: dict[str, Any]) -> dict[str, float]:
    """The figures the targets are read off, from whichever sections ran (after ``derive_*``);
    a figure that was not measured is left out rather than counted as a miss."""
    figures: dict[str, float | None] = {}
    if result.get("http"):
        cases = result["http"][max(result["http"])]  # the most workers
        figures[CREATION_TO_HELLO] = cases.get(CREATE, {}).get("ratio_to_baseline")
        figures[LOOKUP_TO_HELLO] = cases.get(LOOKUP, {}).get("ratio_to_baseline")
        figures[CREATION_P99_MS] = _median(cases.get(CREATE), "p99_ms")
        figures[LOOKUP_P99_MS] = _median(cases.get(LOOKUP), "p99_ms")
    smtp = result.get("smtp")
    if smtp:
        figures[SMTP_LOST] = sum(abs(sample["lost_or_duplicated"])
                                 for name, case in smtp.items()
                                 if name.startswith((TEMPALIAS, UNTRUSTED, REPLIES, ARC_OFF))
                                 for sample in case["samples"])
        main = smtp.get(f"{TEMPALIAS}, {MAIN_SHAPE}", {})
        figures[SMTP_TO_CEILING] = main.get("ratio_to_ceiling")
        figures[SMTP_TO_POSTFIX] = main.get("ratio_to_postfix")
        figures[SMTP_TO_MINIRELAY] = main.get("ratio_to_minirelay")
        figures[SMTP_ADDED_P99_MS] = main.get("added_p99_ms")
        figures[UNTRUSTED_TO_LIMITS_OFF] = smtp.get(f"{UNTRUSTED}, {MAIN_SHAPE}", {}).get(
            "ratio_to_limits_off")
    cluster = result.get("cluster")
    if cluster:
        figures[CLUSTER_CREATION_TO_SINGLE] = cluster.get(f"{REDIS_CLUSTER}: {CREATE}", {}).get(
            "ratio_to_single")
        figures[CLUSTER_FORWARDING_TO_SINGLE] = cluster.get(
            f"{REDIS_CLUSTER}: {NODE_FORWARDING}", {}).get("ratio_to_single")
        figures[CLUSTER_LOST] = sum(abs(sample.get("lost_or_duplicated", 0))
                                    for case in cluster.values() for sample in case["samples"])
    at_10k = result.get("capacity", {}).get("checkpoints", {}).get("10000")
    if at_10k:
        figures[IDLE_GREETED_AT_10K] = at_10k["greeted_220"]
        figures[IDLE_RSS_MB_AT_10K] = at_10k["rss_mb"]
    if result.get("erasure"):
        erasure = result["erasure"]
        figures[LIVE_ALIASES_TOUCHED] = erasure["live_expected"] - erasure["live_untouched"]
    # None: not measured; NaN: too few samples to say (a probe that got under two answers)
    return {name: value for name, value in figures.items()
            if value is not None and not math.isnan(value)}


# --- the tables


def fmt(figure: dict[str, float] | None, digits: int = 0) -> str:
    if not figure:
        return "-"
    return (f"{figure['median']:,.{digits}f} ({figure['min']:,.{digits}f}-"
            f"{figure['max']:,.{digits}f})")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def http_lines(http: dict[int, dict[str, dict]]) -> list[str]:
    lines = [f"HTTP (wrk -t1 -c{WRK_CONNECTIONS}, keep-alive): median (min-max)",
             f"{'workers':>7} {'case':40} {'req/s':>24} {'ratio':>6} {'p50 ms':>18} "
             f"{'p99 ms':>20} errors"]
    for workers, cases in http.items():
        for name, case in cases.items():
            errors = sum(s["errors"] for s in case["samples"])
            lines.append(f"{workers:>7} {name:40} {fmt(case['req_per_s']):>24} "
                         f"{_share(case.get('ratio_to_baseline')):>6} "
                         f"{fmt(case['p50_ms'], 1):>18} {fmt(case['p99_ms'], 1):>20} {errors}")
    return lines


def smtp_lines(smtp: dict[str, dict], workers: int) -> list[str]:
    lines = [f"(tempalias --workers {workers})",
             "SMTP (smtp-source -> ... -> smtp-sink, a new connection per message unless "
             "'kept connections' (-d); only messages the sink counted): median (min-max)",
             f"{'case':58} {'msg/s':>22} {'to ceiling':>10} {'to Postfix':>10} "
             f"{'lost/dup':>8} {'probe p50 ms':>14} {'probe p99 ms':>14}"]
    for name, case in smtp.items():
        lost = sum(abs(s["lost_or_duplicated"]) for s in case["samples"])
        lines.append(f"{name:58} {fmt(case['msg_per_s']):>22} "
                     f"{_share(case.get('ratio_to_ceiling')):>10} "
                     f"{_share(case.get('ratio_to_postfix')):>10} {lost:>8} "
                     f"{fmt(case.get('probe_p50_ms'), 1):>14} "
                     f"{fmt(case.get('probe_p99_ms'), 1):>14}")
    main = smtp.get(f"{TEMPALIAS}, {MAIN_SHAPE}", {})
    floor = smtp.get(f"{MINIRELAY_KEPT}, {MAIN_SHAPE}", {})
    if main.get("ratio_to_minirelay") is not None:
        lines.append(f"tempalias reaches {main['ratio_to_minirelay']:.2f} of the minimal gevent "
                     f"relay with kept smarthost connections ({MAIN_SHAPE}), which itself reaches "
                     f"{_share(floor.get('ratio_to_ceiling'))} of the ceiling")
    for path, what in ((REPLIES, "an alias with replies (rewritten, DKIM-signed, sealed)"),
                       (ARC_OFF, "ARC off (streamed through, nothing held or sealed)")):
        for shape in sorted(SIGNING_SHAPES):
            ratio = smtp.get(f"{path}, {shape}", {}).get("ratio_to_plain_forwarding")
            if ratio is not None:
                lines.append(f"{what}: {ratio:.2f} of plain forwarding as deployed (ARC on), "
                             f"{shape}")
    if main.get("added_p99_ms") is not None:
        lines.append(f"tempalias's added latency under load (probe through tempalias minus probe "
                     f"straight to the sink): p50 {main['added_p50_ms']:.1f} ms, "
                     f"p99 {main['added_p99_ms']:.1f} ms")
    return lines


def cluster_lines(cluster: dict[str, dict], workers: int) -> list[str]:
    lines = [f"One node (--workers {workers}, ARC on, an untrusted client with every limit on) on "
             "each Redis deployment; creation by wrk, forwarding by smtp-source: median (min-max)",
             f"{'case':84} {'per s':>22} {'to single':>9} {'p99 ms / lost':>20}"]
    for name, case in cluster.items():
        rate = _cluster_rate(case)
        tail = fmt(case.get("p99_ms"), 1) if rate == "req_per_s" else \
            str(sum(abs(s["lost_or_duplicated"]) for s in case["samples"]))
        lines.append(f"{name:84} {fmt(case.get(rate)):>22} "
                     f"{_share(case.get('ratio_to_single')):>9} {tail:>20}")
    return lines


def capacity_lines(capacity: Sample) -> list[str]:
    lines = [f"Capacity (idle SMTP connections, one tempalias process): idle RSS "
             f"{capacity['rss_mb_idle']:.0f} MB; held {capacity['held']:,} connections"]
    for count, point in capacity["checkpoints"].items():
        lines.append(f"  {int(count):>6,} opened: {point['greeted_220']:,} greeted, RSS "
                     f"{point['rss_mb']:.0f} MB ({point['kb_per_connection']:.1f} KB each)")
    return lines


def erasure_lines(erasure: Sample) -> list[str]:
    lines = [f"Erasure: {erasure['aliases']:,} aliases, {erasure['ended_per_purge']:,} ended "
             f"(1%) per purge; filled in {erasure['fill_seconds']:.0f} s"]
    for how in sorted({s["how"] for s in erasure["samples"]}, reverse=True):
        runs = [s for s in erasure["samples"] if s["how"] == how]
        seconds = median_and_range([s["seconds"] for s in runs])
        lines.append(f"  {how:24} {fmt(seconds, 2)} s; purged {[s['purged'] for s in runs]}; "
                     f"ended sampled gone {[s['ended_sampled_gone'] for s in runs]}")
    lines.append(f"  live aliases untouched afterwards: {erasure['live_untouched']:,} of "
                 f"{erasure['live_expected']:,}")
    return lines


def target_lines(evaluated: list[dict]) -> list[str]:
    return ["Targets:"] + [
        f"  [{'met' if item['met'] else 'MISSED'}] {item['target']}: {item['value']:,.2f} "
        f"(bound {item['bound']:,})" for item in evaluated]
