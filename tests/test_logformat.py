"""TEMPALIAS_LOG_FORMAT as a collector reads it: the log of a service that forwarded a message.

The subject of these tests is the log itself, so reading the service's log file is the point."""

from __future__ import annotations

import json
import re
import secrets

import pytest

from harness.processes import wait_for
from test_smtp_forwarding import DAY_MS, alias_address, send

STABLE_FIELDS = {"time", "level", "logger", "event", "pid"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def forward_one(service_factory, own_peer, store, log_format: str):
    """A service in ``log_format`` forwards one message to a sink; its log once the transaction's
    line is written, and the target address, which no line may show."""
    sink = own_peer()
    service = service_factory(env={"TEMPALIAS_LOG_LEVEL": "INFO",
                                   "TEMPALIAS_LOG_FORMAT": log_format, "TEMPALIAS_ARC": "no",
                                   "TEMPALIAS_SMARTHOST": sink.address})
    target = f"secret-{secrets.token_hex(6)}@target.example"
    new = store.create(target, DAY_MS, 2)
    result = send(service.smtp_port, "alice@sender.example", [alias_address(new)])
    assert result["data"][0] == 250
    assert [message.rcpt_tos for message in sink.messages] == [[target]]
    wait_for(lambda: "outcome" in service.log_text(), 10, "the transaction's log line")
    return service.log_text(), target


def test_text_lines_are_as_before(service_factory, own_peer, store):
    log, target = forward_one(service_factory, own_peer, store, "text")
    assert target not in log
    assert re.search(r"^\S+ \S+ \[\d+\] INFO tempalias\.smtp: smtp transaction client=127\.0\.0\.1 "
                     r"id=\S+ aliases=\w+ refused=0 outcome=\S.* queue_id=\S+$", log, re.M), log
    assert not any(line.startswith("{") for line in log.splitlines())


def test_json_lines_parse_with_stable_fields(service_factory, own_peer, store):
    log, target = forward_one(service_factory, own_peer, store, "json")
    assert target not in log
    lines = [json.loads(line) for line in log.splitlines()]  # every line one object
    assert lines and all(STABLE_FIELDS <= set(line) for line in lines)
    assert all(ISO_UTC.fullmatch(line["time"]) for line in lines)
    assert {line["level"] for line in lines} <= {"DEBUG", "INFO", "WARNING", "ERROR"}
    [transaction] = [line for line in lines if "outcome" in line]
    assert transaction["logger"] == "tempalias.smtp" and transaction["client"] == "127.0.0.1"
    assert transaction["event"].startswith("smtp transaction client=127.0.0.1 ")
    assert transaction["outcome"] in transaction["event"]
    assert transaction["queue_id"] and f"queue_id={transaction['queue_id']}" in transaction["event"]


def test_an_unknown_format_stops_start_up_with_one_line():
    from test_cli import tempalias

    result = tempalias("purge", env={"TEMPALIAS_LOG_FORMAT": "xml"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "TEMPALIAS_LOG_FORMAT" in result.stderr
