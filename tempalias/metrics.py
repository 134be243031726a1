"""Prometheus metrics: every metric declared once, here, and the small functions that count.

The rest of the code calls the functions (``alias_created``, ``smtp_transaction``...), never
prometheus_client itself, so that the names, help texts and the bounded sets of label values
live in one place. A label value is a door, a route's rule, a zone the operator configured or a
word from a fixed list: never an alias id, an address or an IP (each would make a series of its
own and put personal data into the monitoring).

``tempalias serve --workers N`` runs N processes, and Prometheus must see one set: so ``serve``
calls ``use_directory`` before anything is counted (prometheus_client's multiprocess mode: each
process writes its values into files of its own there), and ``MetricsServer`` in the parent
sums them with ``MultiProcessCollector`` and serves ``/metrics`` on its own address
(``TEMPALIAS_METRICS_LISTEN``), never on the public HTTP port. A worker that died is marked
with ``worker_exited`` so that its live-only values go.

Every metric has labels, so no value exists (and no file is opened) before the first count;
that is what lets ``use_directory`` switch the value class after this module was imported.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import socket
import time
from typing import TYPE_CHECKING, Callable, Iterable

import gevent
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector,
                               ProcessCollector, make_wsgi_app, multiprocess, values)
from prometheus_client.core import GaugeMetricFamily

from tempalias.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from tempalias.store.stats import StatsStore

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # how often a process adds its tally to Redis
LIVE_REFRESH_SECONDS = 30.0  # how often the live-alias estimate is read from Redis

# --- the aliases
DOORS = ("api", "legacy", "cli")
ALIASES_CREATED = Counter(
    "tempalias_aliases_created", "aliases created, by door (api, legacy, cli) and kind "
    "(ours: at one of the operator's domains; custom: at a custom domain)", ["door", "kind"])
ALIAS_LOOKUPS = Counter(
    "tempalias_alias_lookups", "aliases shown to their owner or the operator, by door and result "
    "(found, not-found)", ["door", "result"])
ALIAS_REVOCATIONS = Counter(
    "tempalias_alias_revocations", "aliases revoked by their owner or the operator, by door and "
    "result (revoked, not-found)", ["door", "result"])

# --- SMTP
SMTP_CONNECTIONS = Counter(
    "tempalias_smtp_connections", "SMTP connections by what became of them at connect "
    "(accepted, refused-rbl, refused-rate, tempfail-rbl, too-busy)", ["outcome"])
SMTP_TRANSACTIONS = Counter(
    "tempalias_smtp_transactions", "SMTP transactions (MAIL to its end) by outcome: delivered, "
    "report-sent, refused-*/tempfail-* (why the recipients or the message were refused), "
    "client-aborted (reset, quit or gone before the end), timeout, shutting-down, local-error",
    ["outcome"])
SMTP_RECIPIENTS = Counter(
    "tempalias_smtp_recipients", "RCPT answers by verdict: accepted, or why not", ["verdict"])
MESSAGES_FORWARDED = Counter(
    "tempalias_messages_forwarded", "messages the next hop accepted, by kind (forward: to an "
    "alias's target; reply: an owner's reply through an alias; report: a bounce we answered)",
    ["kind"])
BYTES_FORWARDED = Counter(
    "tempalias_forwarded_bytes", "octets of the messages counted in "
    "tempalias_messages_forwarded_total, as the client sent them", ["kind"])

# --- block lists
RBL_LOOKUPS = Counter(
    "tempalias_rbl_lookups", "block-list look-ups sent to DNS (cached answers are not) by zone "
    "and result (listed, clean, timeout, failed: SERVFAIL and the like, refused-resolver: the "
    "list refuses our resolver)", ["zone", "result"])
RBL_SECONDS = Histogram(
    "tempalias_rbl_lookup_seconds", "time a block-list look-up took, by zone", ["zone"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0))

# --- the smarthost
SMARTHOST_CONNECT_SECONDS = Histogram(
    "tempalias_smarthost_connect_seconds", "time to a smarthost connection ready for MAIL "
    "(TCP, greeting, EHLO, TLS, AUTH), by result (ok, failed)", ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
SMARTHOST_TRANSACTION_SECONDS = Histogram(
    "tempalias_smarthost_transaction_seconds", "time the smarthost took over one message's steps "
    "(mail: MAIL and the first RCPT answered, a connection checked out or dialled included; "
    "data-end: the final dot answered), by step and result (ok, tempfail, refused); the time "
    "the message itself took to arrive is the client's and is not in it", ["step", "result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
SMARTHOST_CONNECTIONS = Gauge(
    "tempalias_smarthost_connections", "smarthost connections of the live processes, by state "
    "(open: every one dialled and not closed yet, in use or kept; idle: kept for the next "
    "message)", ["state"], multiprocess_mode="livesum")

# --- HTTP
HTTP_REQUEST_SECONDS = Histogram(
    "tempalias_http_request_seconds", "time a routed HTTP request took in its route, by the "
    "route's rule (not the path), method and status", ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

# --- Redis
REDIS_OPERATION_SECONDS = Histogram(
    "tempalias_redis_operation_seconds", "time one store operation took (its retries included), "
    "by operation (the script's or command's name)", ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 3.0))
REDIS_ERRORS = Counter(
    "tempalias_redis_errors", "store operations that failed with Redis unreachable or an "
    "unexpected error reply (not a script's refusal such as an unknown alias), by operation",
    ["operation"])


# --- the counts that also go to Redis (store/stats.py), for ``tempalias stats``


class Tally:
    """What this process counted since its last flush to Redis: fields of the hour's hash
    (created, forwarded-<kind>, the transactions' outcomes) and creations by their last day."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.ends: collections.Counter[int] = collections.Counter()

    def take(self) -> tuple[collections.Counter, collections.Counter]:
        taken = self.counts, self.ends
        self.counts, self.ends = collections.Counter(), collections.Counter()
        return taken

    def put_back(self, counts: collections.Counter, ends: collections.Counter) -> None:
        """A flush that did not reach Redis: its counts wait for the next one."""
        self.counts.update(counts)
        self.ends.update(ends)


TALLY = Tally()


class _Periodic:
    """``tick`` every ``interval`` seconds in a greenlet of its own; the first at once when
    ``eager``."""

    eager = False

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._greenlet = None

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        if self.eager:
            self.tick()
        while True:
            gevent.sleep(self.interval)
            self.tick()

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None


class StatsFlusher(_Periodic):
    """Adds the tally to Redis every ``interval`` seconds, and once more at ``stop``; a flush
    Redis did not take is kept for the next (a process killed outright loses at most one
    interval's counts)."""

    def __init__(self, stats: "StatsStore", interval: float = FLUSH_SECONDS) -> None:
        super().__init__(interval)
        self.stats = stats

    def tick(self) -> None:
        self.flush()

    def flush(self) -> None:
        counts, ends = TALLY.take()
        if not counts and not ends:
            return
        try:
            self.stats.add(time.time(), counts, ends)
        except StoreUnavailable as exc:
            log.warning("stats not flushed to redis (kept for the next try): %s", exc)
            TALLY.put_back(counts, ends)

    def stop(self) -> None:
        super().stop()
        self.flush()


def alias_created(door: str, custom: bool, expires_ms: int) -> None:
    ALIASES_CREATED.labels(door, "custom" if custom else "ours").inc()
    TALLY.counts["created"] += 1
    TALLY.ends[expires_ms // 86_400_000] += 1


def alias_looked_up(door: str, found: bool) -> None:
    ALIAS_LOOKUPS.labels(door, "found" if found else "not-found").inc()


def alias_revoked(door: str, found: bool) -> None:
    ALIAS_REVOCATIONS.labels(door, "revoked" if found else "not-found").inc()


def smtp_connection(outcome: str) -> None:
    SMTP_CONNECTIONS.labels(outcome).inc()


def smtp_recipient(verdict: str) -> None:
    SMTP_RECIPIENTS.labels(verdict).inc()


def smtp_transaction(outcome: str) -> None:
    SMTP_TRANSACTIONS.labels(outcome).inc()
    TALLY.counts[outcome] += 1


def message_forwarded(kind: str, size: int) -> None:
    MESSAGES_FORWARDED.labels(kind).inc()
    BYTES_FORWARDED.labels(kind).inc(size)
    TALLY.counts[f"forwarded-{kind}"] += 1


def rbl_lookup(zone: str, result: str, seconds: float) -> None:
    RBL_LOOKUPS.labels(zone, result).inc()
    RBL_SECONDS.labels(zone).observe(seconds)


def smarthost_connected(ok: bool, seconds: float) -> None:
    SMARTHOST_CONNECT_SECONDS.labels("ok" if ok else "failed").observe(seconds)


def smarthost_connection_opened(opened: bool) -> None:
    SMARTHOST_CONNECTIONS.labels("open").inc(1 if opened else -1)


def smarthost_idle(count: int) -> None:
    SMARTHOST_CONNECTIONS.labels("idle").set(count)


def smarthost_step(step: str, result: str, seconds: float) -> None:
    SMARTHOST_TRANSACTION_SECONDS.labels(step, result).observe(seconds)


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUEST_SECONDS.labels(route, method, str(status)).observe(seconds)


# --- what a series starts at: zero, not absent, so that rate() and alerts see it from the start

_OUTCOMES = ("delivered", "refused-unknown", "refused-relay", "refused-rbl", "refused-rate",
             "tempfail-redis", "tempfail-smarthost", "refused-smarthost", "client-aborted",
             "timeout")


def start_counting(rbl_zones: tuple[str, ...], operations: Iterable[str]) -> None:
    """Make the series of every fixed label value, at zero; in each serving process, after
    ``use_directory`` and after the fork. ``operations``: the store's (``runner.OPERATIONS``)."""
    for outcome in _OUTCOMES:
        SMTP_TRANSACTIONS.labels(outcome)
    for outcome in ("accepted", "refused-rbl", "refused-rate", "tempfail-rbl", "too-busy"):
        SMTP_CONNECTIONS.labels(outcome)
    for kind in ("forward", "reply", "report"):
        MESSAGES_FORWARDED.labels(kind)
        BYTES_FORWARDED.labels(kind)
    for door in DOORS:
        for kind in ("ours", "custom"):
            ALIASES_CREATED.labels(door, kind)
    for zone in (zone.rstrip(".") for zone in rbl_zones):  # as rbl.py names them
        RBL_SECONDS.labels(zone)
        for result in ("listed", "clean", "timeout", "failed", "refused-resolver"):
            RBL_LOOKUPS.labels(zone, result)
    for result in ("ok", "failed"):
        SMARTHOST_CONNECT_SECONDS.labels(result)
    for step in ("mail", "data-end"):
        for result in ("ok", "tempfail", "refused"):
            SMARTHOST_TRANSACTION_SECONDS.labels(step, result)
    for operation in operations:
        REDIS_ERRORS.labels(operation)


def redis_operation(operation: str, seconds: float, failed: bool) -> None:
    REDIS_OPERATION_SECONDS.labels(operation).observe(seconds)
    if failed:
        REDIS_ERRORS.labels(operation).inc()


# --- the processes


def use_directory(path: str) -> None:
    """Multiprocess mode with its files in ``path``, emptied first (a value left by a process
    of an earlier run would be summed in). Call before anything is counted, before any fork."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # prometheus_client picks the value class from that variable when it is first imported;
    # this module imported it already, with no value made yet (every metric has labels).
    values.ValueClass = values.MultiProcessValue()


def worker_exited(pid: int) -> None:
    """A worker is gone: its gauges of live processes go with it (its counters stay summed)."""
    multiprocess.mark_process_dead(pid)


def registry(extra: Iterable = ()) -> CollectorRegistry:
    """What a scrape answers: every process's values summed, the serving process's own
    process_* and python_info, and ``extra`` collectors (read in this process)."""
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    ProcessCollector(registry=collected)
    PlatformCollector(registry=collected)
    for collector in extra:
        collected.register(collector)
    return collected


def metrics_app(collected: CollectorRegistry) -> Callable:
    """``/metrics`` and nothing else (404), so the address answers one question only."""
    exposition = make_wsgi_app(collected)

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; try /metrics\n"]
        return exposition(environ, start_response)

    return app


class LiveAliases(_Periodic):
    """The ``tempalias_live_aliases`` gauge: read from Redis by a greenlet at start and every
    ``LIVE_REFRESH_SECONDS``, never by a scrape; absent until a read succeeded."""

    eager = True

    def __init__(self, stats: "StatsStore", interval: float = LIVE_REFRESH_SECONDS) -> None:
        super().__init__(interval)
        self.stats = stats
        self.value: int | None = None

    def collect(self):
        if self.value is not None:
            family = GaugeMetricFamily(
                "tempalias_live_aliases",
                "aliases created (by every node) whose last day has not passed: an upper bound "
                "of the live ones, as those revoked or used up early are still counted; read "
                f"from Redis every {self.interval:g} s")
            family.add_metric([], self.value)
            yield family

    def tick(self) -> None:
        try:
            self.value = self.stats.live_upper_bound(time.time())
        except StoreUnavailable as exc:
            log.warning("live aliases not read: %s", exc)


class MetricsServer:
    """``/metrics`` on its own listening socket, served by a small pywsgi server of the process
    that owns the directory (the parent of the workers, or the one process), with the
    live-alias gauge that process reads."""

    def __init__(self, listener: socket.socket, live: LiveAliases) -> None:
        from gevent.pywsgi import WSGIServer

        self.socket = listener
        self.live = live
        self.server = WSGIServer(listener, metrics_app(registry([live])), log=None)

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def start(self) -> None:
        self.live.start()
        self.server.start()
        log.info("metrics on %s:%d/metrics", self.socket.getsockname()[0], self.port)

    def stop(self) -> None:
        self.server.stop(timeout=1)
        self.live.stop()

    def forget(self) -> None:
        """In a worker just forked: fork copied the listening socket and the gauge's greenlet
        (with the parent's Redis connections); close the copy and kill the greenlet, so that the
        worker neither answers scrapes nor talks on the parent's connections."""
        self.live.stop()
        self.server.close()
