"""/metrics end to end: a running service (one process, or a parent with two workers), real
traffic through its HTTP and SMTP ports (clients on block lists, over their limits, a smarthost
down or refusing), a scrape of its own metrics address parsed as Prometheus parses it; and the
Grafana dashboard and the alert rules select only what such a scrape exposes."""

from __future__ import annotations

import json
import os
import re
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness.processes import wait_for
from harness.smtp_peer import RawClient, Script

APPLIANCE = Path(__file__).resolve().parent.parent / "appliance"
DASHBOARD = APPLIANCE / "grafana-dashboard.json"
ALERT_RULES = APPLIANCE / "prometheus-alerts.yml"
BODY = b"From: alice@sender.example\r\nSubject: counted\r\n\r\nhello\r\n"


def scrape(service) -> dict[str, list]:
    """Every sample of one scrape, by family name."""
    answer = requests.get(f"http://127.0.0.1:{service.ports['metrics']}/metrics", timeout=10)
    assert answer.status_code == 200
    return {family.name: family.samples
            for family in text_string_to_metric_families(answer.text)}


def value(families: dict[str, list], sample_name: str, **labels: str) -> float:
    """The sum of the samples named ``sample_name`` whose labels include ``labels`` (0 if none)."""
    return sum(sample.value for samples in families.values() for sample in samples
               if sample.name == sample_name
               and all(sample.labels.get(key) == wanted for key, wanted in labels.items()))


def moved(before: dict[str, list], after: dict[str, list], sample_name: str,
          **labels: str) -> float:
    """How far the samples ``value`` sums went from one scrape to the next."""
    return value(after, sample_name, **labels) - value(before, sample_name, **labels)


def create_alias(service) -> str:
    answer = requests.post(f"{service.http_url}/api/v1/aliases",
                           json={"target": "owner@target.example", "uses": 10}, timeout=10)
    assert answer.status_code == 201
    return answer.json()["id"]


def deliver(port: int, address: str, source: str | None = None) -> None:
    """One message from ``source`` (a loopback address; 127.0.0.1 if None)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30,
                      source_address=(source, 0) if source else None) as client:
        client.ehlo("client.example")
        client.sendmail("alice@sender.example", [address], BODY)


def stats_output(service, *args: str) -> str:
    """``tempalias stats`` on the service's own (embedded) Redis."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEMPALIAS_")}
    environment["TEMPALIAS_DATA_DIR"] = str(service.workdir / "data")
    done = subprocess.run([sys.executable, "-m", "tempalias", "stats", *args],
                          env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def stats(service) -> dict:
    return json.loads(stats_output(service, "--json"))


def two_workers(service_factory, smarthost: str, **env: str):
    """Two workers behind one parent, relaying to ``smarthost``; a Redis of its own (the
    embedded one), so that the counts and limits kept there are this test's alone; a block list
    (harness/dns_server.py: it lists 127.0.0.2, not 127.0.0.1), asked about loopback as about
    anyone; ``env``: more settings."""
    return service_factory(env={"TEMPALIAS_WORKERS": "2", "TEMPALIAS_ARC": "no",
                                "TEMPALIAS_RBL_ZONES": "bl.test",
                                "TEMPALIAS_TRUSTED_NETWORKS": "",
                                "TEMPALIAS_SMARTHOST": smarthost, "TEMPALIAS_REDIS_URL": "",
                                "TEMPALIAS_METRICS_LISTEN": "127.0.0.1:0", **env})


@pytest.fixture
def workers_service(service_factory, own_peer):
    """``two_workers`` relaying to a sink of this test's own."""
    sink = own_peer()
    return two_workers(service_factory, sink.address), sink


def test_two_workers_report_one_set_of_counts(workers_service):
    service, sink = workers_service
    before = scrape(service)
    alias_id = create_alias(service)
    for _ in range(3):
        deliver(service.smtp_port, f"{alias_id}@tempalias.test")
    assert len(sink.messages) == 3
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        deliver(service.smtp_port, "nosuchalias@tempalias.test")
    after = scrape(service)

    def moved(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    assert moved("tempalias_smtp_transactions_total", outcome="delivered") == 3
    assert moved("tempalias_messages_forwarded_total", kind="forward") == 3
    assert moved("tempalias_forwarded_bytes_total", kind="forward") >= 3 * len(BODY)
    assert moved("tempalias_smtp_recipients_total", verdict="accepted") == 3
    assert moved("tempalias_smtp_recipients_total", verdict="refused-unknown") == 1
    assert moved("tempalias_smtp_transactions_total", outcome="refused-unknown") == 1
    assert moved("tempalias_aliases_created_total", door="api", kind="ours") == 1
    assert moved("tempalias_http_request_seconds_count", route="/api/v1/aliases",
                  method="POST", status="201") == 1
    assert moved("tempalias_smarthost_transaction_seconds_count", step="data-end",
                 result="ok") == 3
    # the pool: a worker that carried a message keeps its connection for the next; none in use
    idle = value(after, "tempalias_smarthost_connections", state="idle")
    assert 1 <= idle <= 2, idle
    assert value(after, "tempalias_smarthost_connections", state="open") == idle
    assert moved("tempalias_redis_operation_seconds_count") > 0
    assert moved("tempalias_rbl_lookups_total", zone="bl.test", result="clean") >= 1
    assert moved("tempalias_smtp_connections_total", outcome="accepted") == 4
    assert "process_cpu_seconds" in after  # the library's process collector, the parent's
    assert "tempalias_live_aliases" in after  # read from redis as the parent started

    values = {label for samples in after.values() for sample in samples
              for label in sample.labels.values()}
    assert not any(alias_id in label or "@" in label or "127.0.0.1" in label
                   for label in values), values

    # the same counts, in Redis for `tempalias stats`: flushed by each worker in batches
    wait_for(lambda: stats(service)["last_hour"]["messages_forwarded"] == 3, 30,
             "the workers' counts in redis")
    report = stats(service)
    for window in ("last_hour", "last_day"):
        assert report[window]["aliases_created"] == 1
        assert report[window]["messages_forwarded"] == 3
        assert report[window]["refused"] == {"refused-unknown": 1}
        assert report[window]["transactions"]["delivered"] == 3
    assert report["live_aliases_at_most"] == 1
    shown = stats_output(service)
    assert "live aliases:   at most 1 " in shown and "messages forwarded: 3" in shown
    assert "refused:            refused-unknown 1" in shown


def test_public_http_port_does_not_serve_metrics(service):
    assert requests.get(f"{service.http_url}/metrics", timeout=10).status_code == 404
    assert requests.get(f"http://127.0.0.1:{service.ports['metrics']}/other",
                        timeout=10).status_code == 404


def test_one_process_counts_each_door_and_what_owners_do(service):
    before = scrape(service)
    answer = requests.post(f"{service.http_url}/api/v1/aliases", timeout=10,
                           json={"target": "owner@target.example"})
    alias = f"{service.http_url}/api/v1/aliases/{answer.json()['id']}"
    owner = {"Authorization": f"Bearer {answer.json()['token']}"}
    assert requests.get(alias, headers=owner, timeout=10).status_code == 200
    assert requests.delete(alias, headers=owner, timeout=10).status_code == 204
    assert requests.get(alias, headers=owner, timeout=10).status_code == 404
    assert requests.post(f"{service.http_url}/aliases", json={"target": "owner@target.example"},
                         timeout=10).status_code == 200
    after = scrape(service)
    for sample, labels in (("tempalias_aliases_created_total", {"door": "api"}),
                           ("tempalias_aliases_created_total", {"door": "legacy"}),
                           ("tempalias_alias_lookups_total", {"result": "found"}),
                           ("tempalias_alias_lookups_total", {"result": "not-found"}),
                           ("tempalias_alias_revocations_total", {"result": "revoked"}),
                           ("tempalias_http_request_seconds_count",
                            {"route": "/api/v1/aliases/<alias_id:path>", "method": "GET",
                             "status": "404"})):
        assert value(after, sample, **labels) == value(before, sample, **labels) + 1, sample


def scraped_after_a_message(service) -> list:
    """Every sample of a scrape after one message went through: what Prometheus would hold."""
    deliver(service.smtp_port, f"{create_alias(service)}@tempalias.test")
    return [sample for samples in scrape(service).values() for sample in samples]


def test_dashboard_names_only_families_a_scrape_exposes(workers_service):
    service, _ = workers_service
    exposed = {sample.name for sample in scraped_after_a_message(service)}
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["type"] and panel["title"], panel
        assert set(panel["gridPos"]) >= {"x", "y", "w", "h"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            named = set(re.findall(r"\b(?:tempalias|process)_[a-z_]+\b", target["expr"]))
            assert named, target["expr"]
            assert named <= exposed, (panel["title"], named - exposed)


# a series selector of PromQL (``name{label="value", other=~"regex"}``) and its matchers
SELECTOR = re.compile(r"\b(tempalias_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def selects(matchers: list[tuple[str, str, str]], labels: dict[str, str]) -> bool:
    """Whether a series with ``labels`` is one the matchers select (a missing label is "")."""
    tests = {"=": lambda got, want: got == want, "!=": lambda got, want: got != want,
             "=~": lambda got, want: re.fullmatch(want, got) is not None,
             "!~": lambda got, want: re.fullmatch(want, got) is None}
    return all(tests[op](labels.get(name, ""), want) for name, op, want in matchers)


def test_alert_rules_select_only_series_a_scrape_exposes(workers_service):
    """A metric or a label value misspelled in a rule leaves the alert silent forever, and its
    promtool unit tests (tests/test_alert_rules.py) cannot tell: they feed the series the rule
    names. So each selector of the rules must select a series a running tempalias exposes."""
    service, _ = workers_service
    samples = scraped_after_a_message(service)
    selectors = SELECTOR.findall(ALERT_RULES.read_text(encoding="utf-8"))
    assert len(selectors) >= 10
    for name, matchers in selectors:
        parsed = MATCHER.findall(matchers)
        assert len(parsed) == len([part for part in matchers.split(",") if part.strip()]), matchers
        assert any(sample.name == name and selects(parsed, sample.labels) for sample in samples), \
            f"no exposed series is {name}{{{matchers}}}"


def test_only_the_parent_listens_for_scrapes(workers_service):
    """A worker is forked with the parent's metrics socket and gauge: it must let go of both."""
    service, _ = workers_service
    port = service.ports["metrics"]
    parent = psutil.Process(service.pid)

    def workers():
        found = [child for child in parent.children() if "redis" not in child.name()]
        return found if len(found) == 2 else None

    def listening(process) -> bool:
        return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in process.net_connections(kind="tcp"))

    assert listening(parent)
    assert not any(listening(worker) for worker in wait_for(workers, 30, "two workers"))


# --- refusals, and a smarthost in trouble: counted as they happened. Each test runs a service of
# its own (its block-list cache, its limits in its own Redis) and sends from loopback addresses
# of its own; harness/dns_server.py lists 127.0.0.2 and 127.0.0.20 in bl.test, not the others.


def greeting(port: int, source: str) -> tuple[int, str, bool]:
    """Connect from ``source``: the first reply, and whether the server then closed."""
    with RawClient(port, timeout=30, source=source) as client:
        code, text = client.reply()
        return code, text, code != 220 and client.at_eof()


def test_listed_clients_are_counted_as_refused_by_their_block_list(service_factory, own_peer):
    sink = own_peer()
    service = two_workers(service_factory, sink.address)
    address = f"{create_alias(service)}@tempalias.test"
    before = scrape(service)
    for listed in ("127.0.0.2", "127.0.0.20"):
        assert greeting(service.smtp_port, listed) == (554, f"5.7.1 {listed} listed in bl.test",
                                                       True)
    deliver(service.smtp_port, address, source="127.0.0.3")
    after = scrape(service)
    assert moved(before, after, "tempalias_smtp_connections_total", outcome="refused-rbl") == 2
    assert moved(before, after, "tempalias_rbl_lookups_total", zone="bl.test",
                 result="listed") == 2
    assert moved(before, after, "tempalias_rbl_lookups_total", zone="bl.test",
                 result="clean") == 1
    assert moved(before, after, "tempalias_rbl_lookup_seconds_count", zone="bl.test") == 3
    assert moved(before, after, "tempalias_smtp_connections_total", outcome="accepted") == 1
    assert moved(before, after, "tempalias_smtp_transactions_total", outcome="delivered") == 1
    assert len(sink.messages) == 1


def test_a_block_list_that_does_not_answer_is_counted_as_timing_out(service_factory, own_peer):
    """The list fails open (the default): the client is let in, and the timeout is counted, as
    the RBL alert reads it."""
    sink = own_peer()
    service = two_workers(service_factory, sink.address, TEMPALIAS_RBL_ZONES="bl.test,silent.test",
                          TEMPALIAS_RBL_TIMEOUT="0.5")
    address = f"{create_alias(service)}@tempalias.test"
    before = scrape(service)
    deliver(service.smtp_port, address, source="127.0.0.4")
    after = scrape(service)
    assert moved(before, after, "tempalias_rbl_lookups_total", zone="silent.test",
                 result="timeout") == 1
    assert moved(before, after, "tempalias_rbl_lookups_total", zone="silent.test") == 1
    assert moved(before, after, "tempalias_rbl_lookups_total", zone="bl.test",
                 result="clean") == 1
    assert moved(before, after, "tempalias_smtp_connections_total", outcome="accepted") == 1
    assert len(sink.messages) == 1


def test_clients_over_their_limits_are_counted_at_connect_and_at_mail(service_factory, own_peer):
    sink = own_peer()
    service = two_workers(service_factory, sink.address,
                          TEMPALIAS_SMTP_CONNECTIONS_PER_IP="2/1h",
                          TEMPALIAS_SMTP_MESSAGES_PER_IP="1/1h")
    address = f"{create_alias(service)}@tempalias.test"
    before = scrape(service)
    codes = [greeting(service.smtp_port, "127.0.0.5")[0] for _ in range(3)]
    assert codes == [220, 220, 421]  # the third connection within the hour
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30,
                      source_address=("127.0.0.6", 0)) as client:
        client.ehlo("client.example")
        client.sendmail("alice@sender.example", [address], BODY)
        assert client.mail("alice@sender.example")[0] == 451  # the second message within the hour
    after = scrape(service)
    assert moved(before, after, "tempalias_smtp_connections_total", outcome="refused-rate") == 1
    assert moved(before, after, "tempalias_smtp_connections_total", outcome="accepted") == 3
    assert moved(before, after, "tempalias_smtp_transactions_total", outcome="refused-rate") == 1
    assert moved(before, after, "tempalias_smtp_transactions_total", outcome="delivered") == 1
    assert len(sink.messages) == 1


@pytest.fixture
def unreachable():
    """The address of a smarthost that is down: a loopback port bound but never listening, so
    every connection to it is refused and no other process can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"


def test_a_smarthost_that_is_down_is_counted_as_failed_dials_and_deferrals(service_factory,
                                                                          unreachable):
    service = two_workers(service_factory, unreachable)
    address = f"{create_alias(service)}@tempalias.test"
    before = scrape(service)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            deliver(service.smtp_port, address)
        assert refused.value.recipients[address][0] == 451
    after = scrape(service)
    assert moved(before, after, "tempalias_smtp_transactions_total",
                 outcome="tempfail-smarthost") == 2
    assert moved(before, after, "tempalias_smtp_recipients_total",
                 verdict="tempfail-smarthost") == 2
    assert moved(before, after, "tempalias_smarthost_connect_seconds_count", result="failed") == 2
    assert moved(before, after, "tempalias_smarthost_connect_seconds_count", result="ok") == 0
    assert moved(before, after, "tempalias_smarthost_transaction_seconds_count", step="mail",
                 result="tempfail") == 2
    assert moved(before, after, "tempalias_smtp_transactions_total", outcome="delivered") == 0


def test_a_smarthost_refusing_at_the_final_dot_is_counted_by_its_answer(service_factory,
                                                                       own_peer):
    sink = own_peer()
    service = two_workers(service_factory, sink.address)
    address = f"{create_alias(service)}@tempalias.test"
    before = scrape(service)
    for answer in ("451 4.3.0 queue full, try later", "554 5.7.1 looks like spam"):
        sink.script = Script(message=answer)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            deliver(service.smtp_port, address)
        assert refused.value.smtp_code == int(answer[:3])
    after = scrape(service)
    for result, outcome in (("tempfail", "tempfail-smarthost"), ("refused", "refused-smarthost")):
        assert moved(before, after, "tempalias_smarthost_transaction_seconds_count",
                     step="data-end", result=result) == 1
        assert moved(before, after, "tempalias_smtp_transactions_total", outcome=outcome) == 1
    assert moved(before, after, "tempalias_smarthost_transaction_seconds_count", step="data-end",
                 result="ok") == 0
    assert moved(before, after, "tempalias_smarthost_connect_seconds_count", result="ok") == 2
    assert moved(before, after, "tempalias_messages_forwarded_total") == 0
    assert sink.messages == []


def test_a_recipient_the_smarthost_refuses_is_counted_as_the_smarthosts_refusal(service_factory,
                                                                              own_peer):
    """Not as an unknown alias (550 5.1.1 is the smarthost's "no such user" here, about the
    target), nor as a relay attempt: the refusals alert would take a smarthost's refusals for a
    guessing run."""
    sink = own_peer()
    service = two_workers(service_factory, sink.address)
    address = f"{create_alias(service)}@tempalias.test"
    before = scrape(service)
    for answer in ("550 5.1.1 no such user here", "550 5.7.1 relaying denied",
                   "450 4.2.0 mailbox busy"):
        sink.script = Script(rcpt={"owner@target.example": answer})
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            deliver(service.smtp_port, address)
        assert refused.value.recipients[address][0] == int(answer[:3])
    after = scrape(service)
    for verdict, times in (("refused-smarthost", 2), ("tempfail-smarthost", 1)):
        assert moved(before, after, "tempalias_smtp_recipients_total", verdict=verdict) == times
        assert moved(before, after, "tempalias_smtp_transactions_total", outcome=verdict) == times
    for word in ("refused-unknown", "refused-relay"):
        assert moved(before, after, "tempalias_smtp_recipients_total", verdict=word) == 0
        assert moved(before, after, "tempalias_smtp_transactions_total", outcome=word) == 0


def test_the_metrics_module_imports_first():
    """The store's runner counts through metrics.py and metrics.py reads the store's errors:
    importing either first must work (a tool or a test may start with metrics)."""
    done = subprocess.run([sys.executable, "-c", "import tempalias.metrics"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
