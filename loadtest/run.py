"""``make loadtest``: Locust, headless, against a throwaway stack; HTML report and CSV stats kept.

Starts loadtest/stack.py's stack (every abuse limit off; with ``--cluster`` loadtest/cluster_demo.py's
nodes on a Redis Cluster, Locust's HTTP users through their nginx front and its SMTP users spread
over the nodes' SMTP ports, so that every node takes load at once), runs loadtest/locustfile.py for a set time
and user count, stops the stack, and writes Locust's HTML report and CSV files into a results
folder. Before the stack stops it scrapes every node's ``/metrics`` into ``metrics.txt`` (with
several nodes ``metrics-NAME.txt``) beside the report: the service's own view of the same run.
Exits non-zero when any request failed that should not have, when the sink did not receive exactly
the messages tempalias accepted (a lost or duplicated message), or when tempalias's own counters
disagree with what Locust and the sink saw.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.cluster_demo import ClusterStack
from loadtest.stack import Stack, ThrowawayStack, interrupt_on_sigterm

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
RESULTS = Path(__file__).resolve().parent / "results"
LIVE_SENDS = "send to a live alias (expects 250)"
UNKNOWN_SENDS = "send to an unknown alias (expects 550)"


@dataclass
class RequestStats:
    kind: str
    name: str
    requests: int
    failures: int
    median_ms: float
    p99_ms: float
    per_second: float


@dataclass
class LoadTestResult:
    locust_status: int
    stats: list[RequestStats]
    sink_messages: int
    output_dir: Path
    problems: list[str] = field(default_factory=list)
    own_counts: dict[str, float] = field(default_factory=dict)

    def by_name(self, name: str) -> RequestStats | None:
        return next((row for row in self.stats if row.name == name), None)

    @property
    def ok(self) -> bool:
        return not self.problems


def _percentile(response_times: dict[str, int], fraction: float) -> float:
    """From Locust's histogram (rounded ms -> count), as Locust's own tables compute it."""
    total = sum(response_times.values())
    if not total:
        return 0.0
    seen = 0
    for milliseconds, count in sorted((float(ms), n) for ms, n in response_times.items()):
        seen += count
        if seen >= total * fraction:
            return milliseconds
    return 0.0


def read_stats(json_path: Path) -> list[RequestStats]:
    """Locust's final figures (its CSV is written every few seconds, so may miss the last ones)."""
    entries = json.loads(json_path.read_text(encoding="utf-8"))
    stats = []
    for entry in entries:
        elapsed = max(1e-9, entry["last_request_timestamp"] - entry["start_time"])
        stats.append(RequestStats(entry["method"], entry["name"], entry["num_requests"],
                                  entry["num_failures"], _percentile(entry["response_times"], 0.5),
                                  _percentile(entry["response_times"], 0.99),
                                  entry["num_requests"] / elapsed))
    return sorted(stats, key=lambda row: (row.kind, row.name))


def run_locust(stack: ThrowawayStack, output_dir: Path, users: int, spawn_rate: float, seconds: int,
               message_bytes: int = 2048) -> int:
    """Locust as a child process (it monkey-patches; we do not); returns its exit status."""
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
               "--host", stack.http_url,
               "--smtp-port", ",".join(str(port) for port in stack.smtp_ports),
               "--message-bytes", str(message_bytes),
               "-u", str(users), "-r", str(spawn_rate), "-t", f"{seconds}s", "--stop-timeout", "10",
               "--csv", str(output_dir / "locust"), "--html", str(output_dir / "report.html"),
               "--json-file", str(output_dir / "stats"), "--only-summary", "--loglevel", "WARNING"]
    with open(output_dir / "locust.log", "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            return process.wait(timeout=seconds + 120)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(30)


# What the run reads back from every node's /metrics: (family, label, value) summed over nodes.
OWN_COUNTS = {
    "forwarded": ("tempalias_messages_forwarded", "kind", "forward"),
    "delivered": ("tempalias_smtp_transactions", "outcome", "delivered"),
    "refused-unknown": ("tempalias_smtp_recipients", "verdict", "refused-unknown"),
}


def scrape(stack: ThrowawayStack, output_dir: Path) -> list[str]:
    """Every node's ``/metrics`` as text, each kept in ``output_dir``; read after Locust stopped
    and before the stack stops, so the counts are those of the whole run."""
    texts = []
    for service in stack.services:
        url = f"http://127.0.0.1:{service.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            texts.append(answer.read().decode("utf-8"))
        name = "metrics.txt" if len(stack.services) == 1 else f"metrics-{service.name}.txt"
        (output_dir / name).write_text(texts[-1], encoding="utf-8")
    return texts


def own_counts(texts: list[str]) -> dict[str, float]:
    """``OWN_COUNTS`` summed over the nodes' scrapes (prometheus_client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = dict.fromkeys(OWN_COUNTS, 0.0)
    for text in texts:
        for family in text_string_to_metric_families(text):
            for what, (name, label, value) in OWN_COUNTS.items():
                if family.name == name:
                    counts[what] += sum(sample.value for sample in family.samples
                                        if sample.name == f"{name}_total"
                                        and sample.labels.get(label) == value)
    return counts


def verdict(locust_status: int, stats: list[RequestStats], sink_messages: int,
            output_dir: Path, counts: dict[str, float] | None = None) -> list[str]:
    """What went wrong, if anything: Locust's own failure, a request that failed that should
    not have, a difference between the messages tempalias accepted and those the sink got, or
    tempalias's own ``counts`` (from /metrics) not matching what Locust and the sink saw."""
    problems = []
    if locust_status != 0:
        problems.append(f"locust exited with {locust_status} (see {output_dir / 'locust.log'})")
    for row in stats:
        if row.failures:
            problems.append(f"{row.failures} of {row.requests} {row.kind} {row.name!r} failed")
    live = next((row for row in stats if row.name == LIVE_SENDS), None)
    accepted = live.requests - live.failures if live else 0
    if accepted != sink_messages:
        problems.append(f"tempalias accepted {accepted} messages but the sink received "
                        f"{sink_messages}")
    if counts is not None:
        unknown = next((row for row in stats if row.name == UNKNOWN_SENDS), None)
        for what, seen, by in (("forwarded", sink_messages, "the sink received"),
                               ("delivered", accepted, "Locust saw answered 250"),
                               ("refused-unknown", unknown.requests if unknown else 0,
                                "Locust sent to unknown aliases")):
            if counts[what] != seen:
                problems.append(f"tempalias's metrics count {counts[what]:.0f} {what} but "
                                f"{by} {seen}")
    return problems


def load_test(output_dir: Path, users: int = 50, spawn_rate: float = 10, seconds: int = 60,
              workers: int = 1, message_bytes: int = 2048,
              cluster_nodes: int = 0) -> LoadTestResult:
    """``cluster_nodes``: that many nodes on a Redis Cluster behind nginx; 0: one Stack."""
    stack = ClusterStack(output_dir / "stack", nodes=cluster_nodes, workers=workers) \
        if cluster_nodes else Stack(workdir=output_dir / "stack", workers=workers)
    with stack:
        status = run_locust(stack, output_dir, users, spawn_rate, seconds, message_bytes)
        counts = own_counts(scrape(stack, output_dir))
    stats = read_stats(output_dir / "stats.json")
    sink_messages = stack.sink_counts["messages"]
    return LoadTestResult(status, stats, sink_messages, output_dir,
                          verdict(status, stats, sink_messages, output_dir, counts), counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=0, help="tempalias --workers; 0: one per CPU")
    parser.add_argument("--message-bytes", type=int, default=2048)
    parser.add_argument("--cluster", action="store_true",
                        help="several nodes on a Redis Cluster behind nginx (make cluster-demo's "
                             "stack) instead of one tempalias on its embedded Redis")
    parser.add_argument("--nodes", type=int, default=3, help="with --cluster: how many nodes")
    parser.add_argument("--results", type=Path, default=None,
                        help="output folder (default loadtest/results/locust-TIMESTAMP)")
    args = parser.parse_args()
    output_dir = args.results or RESULTS / time.strftime("locust-%Y%m%d-%H%M%S")
    nodes = args.nodes if args.cluster else 0
    where = f"{nodes} nodes on a Redis Cluster behind nginx, each" if nodes else "tempalias"
    print(f"load test: {args.users} users for {args.seconds} s, {where} --workers "
          f"{args.workers or 'one per CPU'}, every abuse limit off; results in {output_dir}",
          flush=True)
    result = load_test(output_dir, args.users, args.spawn_rate, args.seconds, args.workers,
                       args.message_bytes, nodes)
    print(f"{'type':6} {'name':48} {'requests':>9} {'failed':>7} {'req/s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7}")
    for row in result.stats:
        print(f"{row.kind:6} {row.name:48} {row.requests:9d} {row.failures:7d} "
              f"{row.per_second:8.1f} {row.median_ms:7.0f} {row.p99_ms:7.0f}")
    print(f"messages received by the sink: {result.sink_messages}")
    print("tempalias's own counts (/metrics, kept beside the report): "
          + ", ".join(f"{what} {count:.0f}" for what, count in result.own_counts.items()))
    print(f"HTML report: {output_dir / 'report.html'}")
    for problem in result.problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    interrupt_on_sigterm()
    raise SystemExit(main())
