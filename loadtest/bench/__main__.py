"""``python -m loadtest.bench``: run the chosen sections, write the JSON, print the report, draw
the charts beside the JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# charts imports matplotlib (setup.py's test extra): without it a run stops here, not at its end
from loadtest.bench import charts, report
from loadtest.bench.cases import (HTTP_WORKERS, capacity_run, cluster_run, erasure_runs,
                                  http_run, profile_missed, smtp_run)
from loadtest.bench.targets import evaluate, to_profile
from loadtest.bench.tools import raise_fd_limit
from loadtest.stack import LIMITS_OFF, interrupt_on_sigterm

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of every case (default 3)")
    parser.add_argument("--only", default="http,smtp,cluster,capacity,erasure",
                        help="comma-separated sections to run")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--smtp-scale", type=float, default=1.0, help="scales the message counts")
    parser.add_argument("--capacity", type=int, default=20000,
                        help="idle connections to try to hold (checkpoints at 1,000 and 10,000)")
    parser.add_argument("--aliases", type=int, default=1_000_000, help="aliases for the erasure case")
    parser.add_argument("--smtp-workers", type=int, default=2, help="tempalias --workers for SMTP and the cluster cases")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, py-spy tempalias during each case whose target was missed")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    fd_limit = raise_fd_limit()
    output = args.output or RESULTS / time.strftime("bench-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "loadtest.bench", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg(), "fd_limit": fd_limit},
        "abuse_limits": "all off: " + ", ".join(f"{k}={v or '(empty)'}" for k, v in LIMITS_OFF.items()),
    }
    lines: list[str] = [f"tempalias benchmark, {args.runs} runs per case; every abuse limit off; "
                        f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"]

    def save() -> None:
        result["report"] = lines
        output.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="tempalias-bench-") as scratch:
        workdir = Path(scratch)
        workdir.chmod(0o755)  # the Postfix peer's daemons run as the postfix user
        http_samples: dict[int, list] = {workers: [] for workers in HTTP_WORKERS}
        smtp_samples: list = []
        cluster_samples: list = []
        for run in range(args.runs):
            if "http" in sections:
                for workers in HTTP_WORKERS:
                    print(f"run {run + 1}/{args.runs}: http, --workers {workers}", flush=True)
                    http_samples[workers].append(http_run(workdir, workers, args.seconds))
            if "smtp" in sections:
                print(f"run {run + 1}/{args.runs}: smtp", flush=True)
                smtp_samples.append(smtp_run(workdir, args.smtp_workers, args.smtp_scale))
            if "cluster" in sections:
                print(f"run {run + 1}/{args.runs}: cluster", flush=True)
                cluster_samples.append(cluster_run(workdir, args.smtp_workers, args.seconds,
                                                   args.smtp_scale, run))
        if "http" in sections:
            result["http"] = {w: report.summarise(s) for w, s in http_samples.items()}
            report.derive_http(result["http"])
            lines += report.http_lines(result["http"])
            save()
        if "smtp" in sections:
            result["smtp"] = report.summarise(smtp_samples)
            result["smtp_workers"] = args.smtp_workers
            report.derive_smtp(result["smtp"])
            lines += report.smtp_lines(result["smtp"], args.smtp_workers)
            save()
        if "cluster" in sections:
            result["cluster"] = report.summarise(cluster_samples)
            report.derive_cluster(result["cluster"])
            lines += report.cluster_lines(result["cluster"], args.smtp_workers)
            save()
        if "capacity" in sections:
            print("capacity", flush=True)
            result["capacity"] = capacity_run(workdir, min(args.capacity, fd_limit - 200))
            lines += report.capacity_lines(result["capacity"])
            save()
        if "erasure" in sections:
            print("erasure", flush=True)
            result["erasure"] = erasure_runs(workdir, args.runs, args.aliases)
            lines += report.erasure_lines(result["erasure"])
            save()
        result["figures"] = report.key_figures(result)
        result["targets"] = evaluate(result["figures"])
        if args.profile:
            result["profiles"] = profile_missed(workdir, to_profile(result["targets"]),
                                                args.seconds)
    lines += report.target_lines(result["targets"])
    save()
    print("\n".join(lines))
    print(f"written: {output}")
    for path in charts.write_charts(result, output.parent, output.stem):
        print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    interrupt_on_sigterm()
    raise SystemExit(main())
