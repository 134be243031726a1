"""The benchmark's cases: what is measured, against what, in which shapes.

- http: hello-world on the same stack (loadtest/hello.py), ``POST /api/v1/aliases``, ``GET`` with
  token, the legacy JSONP create; req/s, p50/p99; ``--workers`` 1 and 2.
- smtp: smtp-source -> smtp-sink (the ceiling); -> tempalias -> smtp-sink (2 KiB and 100 KiB,
  1 and 20 sessions); -> a minimal gevent relay (loadtest/minirelay.py: no Redis, no rules; with
  kept smarthost connections and with one per message) -> smtp-sink, the floor for any relay on
  gevent; -> Postfix forwarding (virtual_alias_maps, relayhost the sink) -> smtp-sink.
  smtp-source opens a new connection per message, its default and the way the reference figures
  of issue 7 (docs/performance-notes.md) were taken; the 2 KiB, 20 sessions cases run once more
  with each session's connection kept (``-d``). Only messages the sink counted count. Added
  latency from a probe sending single messages. The tempalias cases run as deployed (ARC on:
  each message held, checked and sealed); beside them an alias that takes replies (rewritten and
  DKIM-signed as well) and the same service with ARC off (streamed through).
- capacity: idle SMTP connections one tempalias process holds; its RSS at 1,000 and 10,000.
- cluster: one node, as deployed (ARC on, an untrusted client with every limit on), on a single
  redis-server, on one with a replica (WAIT) and on a Redis Cluster of 3 primaries and 3 replicas
  (WAIT), same machine, same run: ``POST /api/v1/aliases`` req/s (wrk) and forwarding msg/s
  (2 KiB, 20 sessions); the issue 15 target is the Cluster at 85% of the single redis-server.
- erasure: 1,000,000 aliases in a private Redis, 1% ended: ``tempalias purge`` time and a check
  that the other 99% are untouched.

Each ``*_run`` returns one sample per case: a flat dict of figures (report.py summarises them).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import psutil
import requests

from harness.processes import PROJECT_ROOT, environment_without_tempalias, python_child
from harness.redis_topology import ClusterSet, ReplicatedRedis, Topology
from loadtest.bench.tools import (TARGET, LatencyProbe, PostfixPeer, PostfixSink, Sample,
                                  create_script, hold_connections, jsonp_script, lookup_script,
                                  profile, smtp_source, wrk)
from loadtest.stack import Stack
from tempalias.embedded_redis import RedisServer, free_loopback_port
from tempalias.store import keys

NO_SMARTHOST = "127.0.0.1:9"  # the HTTP cases never forward mail
HTTP_WORKERS = (1, 2)
HELLO_WORLD = "hello-world (baseline)"
CREATE = "POST /api/v1/aliases"
LOOKUP = "GET /api/v1/aliases/ID (token)"
LEGACY_JSONP = "GET /aliases?callback (legacy JSONP)"


def create_alias(http_url: str, replies: bool = False) -> dict:
    order = {"target": TARGET, "days": 30, **({"replies": True} if replies else {})}
    response = requests.post(f"{http_url}/api/v1/aliases", json=order, timeout=30)
    response.raise_for_status()
    return response.json()



# --- HTTP


class HelloWorld:
    """loadtest/hello.py as a child: the baseline of the same server stack."""

    def __init__(self, workdir: Path, workers: int) -> None:
        ready = workdir / "hello.ready"
        self.child = python_child("hello", ["loadtest.hello", "--workers", str(workers),
                                            "--ready-file", str(ready)], workdir, ready_file=ready)

    def __enter__(self) -> str:
        return f"http://127.0.0.1:{self.child.start()['http']}/hello"

    def __exit__(self, *exc_info) -> None:
        self.child.stop()


class MiniRelay:
    """loadtest/minirelay.py as a child: the least a gevent relay does per message."""

    def __init__(self, workdir: Path, workers: int, smarthost: str, keep: bool) -> None:
        ready = workdir / "minirelay.ready"
        self.child = python_child("minirelay", ["loadtest.minirelay", "--workers", str(workers),
                                                "--smarthost", smarthost, "--ready-file",
                                                str(ready), *(["--keep"] if keep else [])],
                                  workdir, ready_file=ready)

    def __enter__(self) -> str:
        return f"127.0.0.1:{self.child.start()['smtp']}"

    def __exit__(self, *exc_info) -> None:
        self.child.stop()



def http_run(workdir: Path, workers: int, seconds: int) -> dict[str, Sample]:
    samples: dict[str, Sample] = {}
    with HelloWorld(workdir, workers) as url:
        samples[HELLO_WORLD] = wrk(url, seconds, "", workdir, "hello")
    with Stack(workdir / f"stack-http-{workers}", workers=workers, smarthost=NO_SMARTHOST) as stack:
        aliases = [create_alias(stack.http_url) for _ in range(200)]
        samples[CREATE] = wrk(f"{stack.http_url}/api/v1/aliases", seconds,
                                              create_script(), workdir, "create")
        samples[LOOKUP] = wrk(stack.http_url, seconds,
                                                        lookup_script(aliases), workdir, "lookup")
        samples[LEGACY_JSONP] = wrk(stack.http_url, seconds,
                                                              jsonp_script(), workdir, "jsonp")
    return samples



# --- SMTP


def wait_for_sink(sink: PostfixSink, before: int, expected: int, timeout: float) -> int:
    """Wait until the sink counted ``expected`` more messages, or time ran out; how many it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sink.messages() - before < expected:
        time.sleep(0.02)
    return sink.messages() - before


def smtp_case(sink: PostfixSink, address: str, recipient: str, messages: int, sessions: int,
              size: int, keep: bool = False, probe_port: int | None = None,
              drain_timeout: float = 10.0) -> Sample:
    """Messages/s from smtp-source's start until the sink counted the last one (end to end)."""
    before = sink.messages()
    probe = LatencyProbe(probe_port, recipient) if probe_port else None
    started = time.monotonic()
    with probe if probe else contextlib.nullcontext():
        smtp_source(address, recipient, messages, sessions, size, keep)
    probed = len(probe.samples_ms) if probe else 0
    count = wait_for_sink(sink, before, messages + probed, drain_timeout) - probed
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # a duplicate arriving late would show in this second look
    late = sink.messages() - before - probed - count
    sample: Sample = {"msg_per_s": count / elapsed, "sent": messages, "received": count + late,
                      "lost_or_duplicated": count + late - messages, "seconds": elapsed}
    if probe:
        sample.update({f"probe_{k}": v for k, v in probe.percentiles().items()})
    return sample


# Where the messages go, first part of every SMTP case's name: "PATH, SHAPE".
DIRECT = "direct -> sink"  # the ceiling: smtp-source straight into smtp-sink
TEMPALIAS = "tempalias -> sink"
MINIRELAY_KEPT = "minimal gevent relay (upstream kept) -> sink"
MINIRELAY_PER_MESSAGE = "minimal gevent relay (upstream per message) -> sink"
POSTFIX = "Postfix -> sink"

SMTP_SHAPES = [  # (name, size, sessions, messages, kept connections)
    ("2 KiB, 20 sessions", 2048, 20, 8000, False),
    ("2 KiB, 1 session", 2048, 1, 1000, False),
    ("100 KiB, 20 sessions", 102400, 20, 1500, False),
    ("100 KiB, 1 session", 102400, 1, 300, False),
    ("2 KiB, 20 sessions, kept connections", 2048, 20, 8000, True),
]
MAIN_SHAPE = SMTP_SHAPES[0][0]  # the targets of issue 7 are read off this one
# The path real deployments take (issue 12): smtp-source outside TEMPALIAS_TRUSTED_NETWORKS and
# every SMTP limit on, each raised so that nothing is refused: every check runs, none says no.
UNTRUSTED = "tempalias (untrusted client with limits on) -> sink"  # no comma: "PATH, SHAPE"
UNTRUSTED_LIMITS_ON = {
    "TEMPALIAS_TRUSTED_NETWORKS": "192.0.2.1/32",  # not 127.0.0.1, where smtp-source connects from
    "TEMPALIAS_SMTP_CONNECTIONS_PER_IP": "100000000/1h",
    "TEMPALIAS_SMTP_CONCURRENT_PER_IP": "100000",
    "TEMPALIAS_SMTP_MESSAGES_PER_IP": "100000000/1h",
    "TEMPALIAS_ALIAS_MESSAGE_RATE": "100000000/1h",
}
UNTRUSTED_SHAPES = {"2 KiB, 20 sessions", "2 KiB, 20 sessions, kept connections"}
# Issue 14: by default (ARC on) every forward is held whole, checked (SPF, DKIM, DMARC) and
# sealed; an alias that takes replies also has its From rewritten and a DKIM signature added.
# Beside them, the stream-through path the service takes with ARC off.
REPLIES = "tempalias (alias with replies: rewrite + DKIM + ARC) -> sink"
ARC_OFF = "tempalias (ARC off: streamed as it comes) -> sink"
SIGNING_SHAPES = {"2 KiB, 20 sessions", "100 KiB, 20 sessions"}


def smtp_run(workdir: Path, workers: int, scale: float) -> dict[str, Sample]:
    samples: dict[str, Sample] = {}
    with PostfixSink(workdir) as sink:
        with Stack(workdir / "stack-smtp", workers=workers, smarthost=sink.address) as stack, \
                Stack(workdir / "stack-smtp-untrusted", workers=workers, smarthost=sink.address,
                      env=UNTRUSTED_LIMITS_ON) as untrusted, \
                Stack(workdir / "stack-smtp-arc-off", workers=workers, smarthost=sink.address,
                      env={"TEMPALIAS_ARC": "no"}) as streamed:
            alias = create_alias(stack.http_url)["address"]
            replies_alias = create_alias(stack.http_url, replies=True)["address"]
            untrusted_alias = create_alias(untrusted.http_url)["address"]
            streamed_alias = create_alias(streamed.http_url)["address"]
            tempalias = f"127.0.0.1:{stack.smtp_port}"
            for name, size, sessions, messages, keep in SMTP_SHAPES:
                messages = max(50, int(messages * scale))
                probe = name == MAIN_SHAPE
                samples[f"{DIRECT}, {name}"] = smtp_case(
                    sink, sink.address, alias, messages, sessions, size, keep,
                    probe_port=sink.port if probe else None)
                samples[f"{TEMPALIAS}, {name}"] = smtp_case(
                    sink, tempalias, alias, messages, sessions, size, keep,
                    probe_port=stack.smtp_port if probe else None)
                if name in UNTRUSTED_SHAPES:
                    samples[f"{UNTRUSTED}, {name}"] = smtp_case(
                        sink, f"127.0.0.1:{untrusted.smtp_port}", untrusted_alias, messages,
                        sessions, size, keep, probe_port=untrusted.smtp_port if probe else None)
                if name in SIGNING_SHAPES:
                    samples[f"{REPLIES}, {name}"] = smtp_case(
                        sink, tempalias, replies_alias, messages, sessions, size, keep)
                    samples[f"{ARC_OFF}, {name}"] = smtp_case(
                        sink, f"127.0.0.1:{streamed.smtp_port}", streamed_alias, messages,
                        sessions, size, keep)
        for keep, path in ((True, MINIRELAY_KEPT), (False, MINIRELAY_PER_MESSAGE)):
            with MiniRelay(workdir, workers, sink.address, keep) as relay:
                for name, size, sessions, messages, keep_client in SMTP_SHAPES:
                    if "2 KiB, 20 sessions" not in name or (keep_client and not keep):
                        continue
                    messages = max(50, int(messages * scale))
                    samples[f"{path}, {name}"] = smtp_case(
                        sink, relay, alias, messages, sessions, size, keep_client)
        with PostfixPeer(workdir, sink.address, alias) as postfix:
            for name, size, sessions, messages, keep in SMTP_SHAPES:
                if "2 KiB, 20 sessions" not in name:
                    continue
                messages = max(50, int(messages * scale / 4))
                samples[f"{POSTFIX}, {name}"] = smtp_case(
                    sink, f"127.0.0.1:{postfix.port}", alias, messages, sessions, size, keep,
                    drain_timeout=300)
    return samples



# --- cluster: one node on a single redis-server beside one node on a Redis Cluster (issue 15)

# Where the node's Redis is, first part of every cluster case's name: "DEPLOYMENT: WHAT". All three
# are redis-servers of harness/redis_topology.py, configured alike (no persistence), on this
# machine. With a replica the node waits for it on every write that must survive a failover
# (TEMPALIAS_REDIS_WAIT_REPLICAS=auto), so the second case parts the price of WAIT from the price
# of the Cluster.
SINGLE_REDIS = "single redis-server"
REDIS_WITH_REPLICA = "redis-server + 1 replica (WAIT)"
REDIS_CLUSTER = "Redis Cluster, 3 primaries + 3 replicas (WAIT)"
CLUSTER_DEPLOYMENTS: list[tuple[str, Callable[[Path], Topology]]] = [
    (SINGLE_REDIS, lambda workdir: ReplicatedRedis(workdir, replicas=0)),
    (REDIS_WITH_REPLICA, lambda workdir: ReplicatedRedis(workdir, replicas=1)),
    (REDIS_CLUSTER, lambda workdir: ClusterSet(workdir)),
]
NODE_FORWARDING = f"forwarding, {MAIN_SHAPE}"
# The node as deployed: ARC on, the client outside the trusted networks with every limit on,
# creation's as well, raised so that nothing is refused: each check's Redis work is measured too.
NODE_AS_DEPLOYED = {
    **UNTRUSTED_LIMITS_ON,
    "TEMPALIAS_CREATE_RATE_PER_IP": "100000000/1h",
    "TEMPALIAS_CREATE_DAILY_PER_IP": "100000000/1h",
    "TEMPALIAS_CREATE_DAILY_PER_TARGET": "100000000/1h",
}


@contextlib.contextmanager
def nodes_on_each_deployment(workdir: Path, workers: int, smarthost: str):
    """A tempalias node on each of CLUSTER_DEPLOYMENTS, all up at once: {deployment: Stack}."""
    with contextlib.ExitStack() as running:
        stacks = {}
        for index, (deployment, topology) in enumerate(CLUSTER_DEPLOYMENTS):
            redis_set = running.enter_context(topology(workdir / f"redis-{index}"))
            stacks[deployment] = running.enter_context(Stack(
                workdir / f"stack-node-{index}", workers=workers, smarthost=smarthost,
                env={**NODE_AS_DEPLOYED, "TEMPALIAS_REDIS_URL": redis_set.url}))
        yield stacks


def cluster_run(workdir: Path, workers: int, seconds: int, scale: float,
                run: int = 0) -> dict[str, Sample]:
    """Alias creation (wrk) and forwarding (smtp-source, the main shape) through one node on each
    deployment; run ``run`` starts with deployment ``run`` (mod 3), so that none is always first
    on a machine still settling or last on one that got busier. Each run's deployments get
    fresh directories: a cluster node finding the last run's nodes.conf would refuse to form a
    new cluster."""
    samples: dict[str, Sample] = {}
    _, size, sessions, messages, keep = SMTP_SHAPES[0]
    with PostfixSink(workdir) as sink, \
            nodes_on_each_deployment(workdir / f"cluster-run-{run}", workers,
                                     sink.address) as stacks:
        order = list(stacks.items())
        first = run % len(order)
        for deployment, stack in order[first:] + order[:first]:
            samples[f"{deployment}: {CREATE}"] = wrk(f"{stack.http_url}/api/v1/aliases", seconds,
                                                     create_script(), workdir, "create")
            samples[f"{deployment}: {NODE_FORWARDING}"] = smtp_case(
                sink, f"127.0.0.1:{stack.smtp_port}", create_alias(stack.http_url)["address"],
                max(50, int(messages * scale)), sessions, size, keep)
    return samples


# --- capacity: idle SMTP connections held by one tempalias process


def capacity_run(workdir: Path, limit: int) -> Sample:
    result: Sample = {"checkpoints": {}}
    held: list[socket.socket] = []
    with Stack(workdir / "stack-capacity", workers=1, smarthost=NO_SMARTHOST) as stack:
        process = psutil.Process(stack.service_pid)
        result["rss_mb_idle"] = process.memory_info().rss / 2**20
        greeted = 0
        try:
            for checkpoint in sorted({1000, 10000, limit}):
                if checkpoint > limit:
                    continue
                greeted += hold_connections(stack.smtp_port, checkpoint - len(held), held)
                time.sleep(1.0)  # let the service finish setting up the last sessions
                rss = process.memory_info().rss / 2**20
                result["checkpoints"][str(checkpoint)] = {
                    "opened": len(held), "greeted_220": greeted, "rss_mb": rss,
                    "kb_per_connection": (rss - result["rss_mb_idle"]) * 1024 / max(1, greeted),
                    "service_alive": stack.service.process.poll() is None}
                if greeted < len(held):
                    break
            result["held"] = greeted
        finally:
            for sock in held:
                sock.close()
    return result


# --- erasure: 1,000,000 aliases of which 1% ended, written with the store's key layout
# Aliases at custom domains, the ones purge erases (an alias at the operator's domains goes by its
# own expiry): ERASURE_DOMAINS domains, each listing its aliases with their ends.

ERASURE_DOMAINS = 100


def write_aliases(client, ids: list[str], expires_ms: int, with_ttl: bool = True) -> None:
    """The keys AliasStore.create writes at a custom domain (tempalias/store/keys.py), in
    pipelined batches, the domains in ``ta:domains``; but for the ids' reservations, which purge
    never reads."""
    now_ms = int(time.time() * 1000)
    field = keys.ALIAS_FIELDS
    client.zadd(keys.DOMAINS_KEY, {domain_of(i): now_ms + 86_400_000
                                   for i in range(ERASURE_DOMAINS)})
    for start in range(0, len(ids), 5000):
        pipe = client.pipeline(transaction=False)
        for alias_id in ids[start:start + 5000]:
            pipe.hset(keys.alias_key(alias_id), mapping={
                field["target"]: f"{alias_id}.example.org", field["token"]: "A" * 22,
                field["created"]: now_ms})
            if with_ttl:
                pipe.pexpireat(keys.alias_key(alias_id), expires_ms)
            local, domain = keys.split_id(alias_id)
            pipe.zadd(keys.domain_aliases_key(domain), {local: expires_ms})
        pipe.execute()


def domain_of(index: int) -> str:
    return f"d{index}.erasure.example"


def fresh_ids(count: int, taken: set[str]) -> list[str]:
    """``local@DOMAIN`` ids never used before, spread over the ERASURE_DOMAINS domains."""
    ids: list[str] = []
    while len(ids) < count:
        local = secrets.token_hex(5)  # 10 characters of [0-9a-f]: a valid local part
        alias_id = f"{local}@{domain_of(len(taken) % ERASURE_DOMAINS)}"
        if alias_id not in taken:
            taken.add(alias_id)
            ids.append(alias_id)
    return ids


def untouched(client, ids: list[str]) -> int:
    """How many of ``ids`` still have their hash (target intact) and their domain's entry."""
    intact = 0
    for start in range(0, len(ids), 10000):
        pipe = client.pipeline(transaction=False)
        batch = ids[start:start + 10000]
        for alias_id in batch:
            local, domain = keys.split_id(alias_id)
            pipe.hget(keys.alias_key(alias_id), keys.ALIAS_FIELDS["target"])
            pipe.zscore(keys.domain_aliases_key(domain), local)
        replies = pipe.execute()
        for index, alias_id in enumerate(batch):
            if replies[2 * index] == f"{alias_id}.example.org" and replies[2 * index + 1]:
                intact += 1
    return intact


def ended_entries(client) -> int:
    """Entries of ended aliases still listed by their domains."""
    now_ms = int(time.time() * 1000)
    return sum(client.zcount(keys.domain_aliases_key(domain_of(i)), "-inf", now_ms)
               for i in range(ERASURE_DOMAINS))


def erasure_runs(workdir: Path, runs: int, total: int) -> Sample:
    from tempalias.store import AliasStore, connect

    ended_count = total // 100
    samples: list[Sample] = []
    with RedisServer(str(workdir / "erasure-redis"), port=free_loopback_port(),
                     persistent=False) as redis_server:
        client = connect(redis_server.url, timeout=60)
        try:
            taken: set[str] = set()
            live = fresh_ids(total - ended_count, taken)
            started = time.monotonic()
            write_aliases(client, live, int(time.time() * 1000) + 30 * 86_400_000)
            fill_seconds = time.monotonic() - started
            env = environment_without_tempalias(
                TEMPALIAS_REDIS_URL=redis_server.url, TEMPALIAS_DATA_DIR=str(workdir),
                PYTHONPATH=str(PROJECT_ROOT))
            for run in range(runs):
                for how in ("tempalias purge (CLI)", "AliasStore.purge()"):
                    ended = fresh_ids(ended_count, taken)
                    # Ended a moment from now; written without their Redis TTL so that every byte
                    # is still there for purge to erase (the worst case: Redis has reclaimed none).
                    ends_at = int(time.time() * 1000) + 500
                    write_aliases(client, ended, ends_at, with_ttl=False)
                    memory_before = int(client.info("memory")["used_memory"])
                    time.sleep(max(0.0, ends_at / 1000 - time.time()) + 0.1)
                    started = time.monotonic()
                    if how.startswith("tempalias"):
                        done = subprocess.run([sys.executable, "-m", "tempalias", "purge"], env=env,
                                              capture_output=True, text=True, timeout=600,
                                              check=False)
                        match = re.search(r"purged (\d+)", done.stdout)
                        purged = int(match.group(1)) if match else -1
                    else:
                        purged = AliasStore(client).purge()
                    seconds = time.monotonic() - started
                    sampled = ended[:1000]
                    gone = sum(client.exists(keys.alias_key(i)) == 0 for i in sampled)
                    samples.append({
                        "how": how, "run": run, "seconds": seconds, "purged": purged,
                        "expected": ended_count, "ended_sampled_gone": f"{gone}/{len(sampled)}",
                        "ends_left": ended_entries(client),
                        "memory_freed_mb": (memory_before - int(
                            client.info("memory")["used_memory"])) / 2**20})
            started = time.monotonic()
            intact = untouched(client, live)
            check_seconds = time.monotonic() - started
        finally:
            client.close()
    return {"aliases": total, "ended_per_purge": ended_count, "fill_seconds": fill_seconds,
            "samples": samples, "live_untouched": intact, "live_expected": len(live),
            "check_seconds": check_seconds}


# --- profiling, after the measured runs


def profile_missed(workdir: Path, kinds: set[str], seconds: int) -> dict[str, list]:
    """One extra, profiled pass of each kind of case ("http", "smtp", "cluster") whose target was
    missed (never a measured run)."""
    profiles: dict[str, list] = {}
    seconds = max(5, seconds)
    if "http" in kinds:
        with Stack(workdir / "stack-profile", workers=1, smarthost=NO_SMARTHOST) as stack:
            aliases = [create_alias(stack.http_url) for _ in range(200)]
            profiles.update(_profiled_http(stack, seconds, workdir, "", [
                (CREATE, f"{stack.http_url}/api/v1/aliases", create_script()),
                ("GET /api/v1/aliases/ID", stack.http_url, lookup_script(aliases))]))
    if "smtp" in kinds:
        with PostfixSink(workdir) as sink, Stack(workdir / "stack-profile-smtp", workers=1,
                                                 smarthost=sink.address) as stack:
            profiles.update(_profiled_smtp(stack, seconds, workdir, ""))
    if "cluster" in kinds:
        with PostfixSink(workdir) as sink, ClusterSet(workdir / "redis-profile") as cluster, \
                Stack(workdir / "stack-profile-cluster", workers=1, smarthost=sink.address,
                      env={**NODE_AS_DEPLOYED, "TEMPALIAS_REDIS_URL": cluster.url}) as stack:
            profiles.update(_profiled_http(stack, seconds, workdir, f"{REDIS_CLUSTER}: ", [
                (CREATE, f"{stack.http_url}/api/v1/aliases", create_script())]))
            profiles.update(_profiled_smtp(stack, seconds, workdir, f"{REDIS_CLUSTER}: "))
    return profiles


def _profiled_http(stack: Stack, seconds: int, workdir: Path, prefix: str,
                   cases: list[tuple[str, str, str]]) -> dict[str, list]:
    """Each (name, url, wrk script) under py-spy, its profile named ``prefix + name``."""
    profiles = {}
    for name, url, script in cases:
        print(f"profiling {prefix}{name}", flush=True)
        profiles[prefix + name] = _profiled(stack.service_pid, seconds, workdir / "profile.txt",
                                            lambda: wrk(url, seconds + 2, script, workdir, "prof"))
    return profiles


def _profiled_smtp(stack: Stack, seconds: int, workdir: Path, prefix: str) -> dict[str, list]:
    alias = create_alias(stack.http_url)["address"]
    name = f"{prefix}SMTP 2 KiB, 20 sessions"
    print(f"profiling {name}", flush=True)
    return {name: _profiled(stack.service_pid, seconds, workdir / "profile-smtp.txt",
                            lambda: smtp_source(f"127.0.0.1:{stack.smtp_port}", alias, 6000, 20,
                                                2048))}


def _profiled(pid: int, seconds: int, output: Path, load: Callable[[], object]) -> list:
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(1.0)  # the load has reached its steady state
    try:
        return profile(pid, seconds, output)
    finally:
        worker.join(600)

