"""A custom domain's whole life, end to end, as its owner and the mail senders see it.

Through HTTP and real SMTP to a running tempalias that relays to the session's SMTP sink and asks
the test's DNS server on loopback (``dns_zone``), whose records the test publishes and withdraws
as an owner would. The service's own janitor checks the domain again when it is due; the test
lets the days pass for the domain in Redis (``let_domain_time_pass``) instead of waiting for them.
"""

from __future__ import annotations

import secrets
import smtplib

import pytest
import requests

from harness.processes import wait_for
from tempalias.smtp import replies
from tempalias.store import keys

MX = "mx.tempalias.test"
HOUR = 3600
BODY = b"Subject: hello\r\n\r\nFor the shop.\r\n"


@pytest.fixture(scope="module")
def tempalias(service_factory, dns_server, smtp_sink_server):
    """A service whose janitor runs every 0.2 s: a check comes as soon as it is due. Stopped
    with the module: no sweeping behind the back of later tests."""
    service = service_factory(env={
        "TEMPALIAS_SMARTHOST": smtp_sink_server.address,
        "TEMPALIAS_SRS_SECRET": "test-srs-secret",
        "TEMPALIAS_DNS_SERVERS": dns_server.address,
        "TEMPALIAS_DNS_TIMEOUT": "2",
        "TEMPALIAS_MX_HOSTNAME": MX,
        "TEMPALIAS_PURGE_INTERVAL": "0.2",
    })
    yield service
    service.stop()


def api(service, method: str, path: str, token: str | None = None, **body):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, service.http_url + path, json=body or None,
                            headers=headers, timeout=20)


def rcpt(service, recipient: str) -> tuple[int, str]:
    """RCPT TO one recipient; the reply as "code status"."""
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        client.mail("alice@sender.example")
        code, text = client.rcpt(recipient)
    return code, text.decode().split(" ", 1)[0]


def send(service, recipients: list[str]) -> dict:
    with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        return client.sendmail("alice@sender.example", recipients, BODY)


def status_of(reply: replies.Reply) -> tuple[int, str]:
    return reply.code, reply.status


def keys_of(redis_client, domain: str) -> list[str]:
    return [key for key in redis_client.scan_iter(count=1000) if f"{{{domain}}}" in key]


def test_the_journey_of_a_custom_domain(tempalias, dns_zone, smtp_sink, redis_client,
                                        let_domain_time_pass):
    domain = f"temp{secrets.token_hex(4)}.example.org"
    # registered: pending, with the records to publish
    registered = api(tempalias, "POST", "/api/v1/domains", domain=domain)
    assert registered.status_code == 201
    registration = registered.json()
    token = registration["token"]
    assert registration["status"] == "pending"
    mx, txt = registration["records"]
    assert (mx["type"], mx["name"], mx["value"]) == ("MX", domain, f"10 {MX}")
    assert (txt["type"], txt["name"]) == ("TXT", f"_tempalias.{domain}")

    # verify before the records are there: each missing record named
    early = api(tempalias, "POST", f"/api/v1/domains/{domain}/verify", token)
    assert early.status_code == 409 and early.json()["error"] == "dns-not-ready"
    assert [p.split(" ", 3)[:3] for p in early.json()["problems"]] == [
        ["no", "MX", "record"], ["no", "TXT", "record"]]
    assert api(tempalias, "GET", f"/api/v1/domains/{domain}", token).json()["status"] == "pending"

    # published: active
    dns_zone.set_records(mx["name"], "MX", [mx["value"]])
    dns_zone.set_records(txt["name"], "TXT", [txt["value"]])
    verified = api(tempalias, "POST", f"/api/v1/domains/{domain}/verify", token)
    assert verified.status_code == 200 and verified.json()["status"] == "active"

    # an alias with a chosen local part receives mail through SMTP
    made = api(tempalias, "POST", "/api/v1/aliases", token, target="owner@target.example",
               domain=domain, local_part="shop-news")
    assert made.status_code == 201 and made.json()["address"] == f"shop-news@{domain}"
    assert send(tempalias, [f"Shop-News@{domain.upper()}"]) == {}
    [message] = wait_for(lambda: smtp_sink.messages, 10, "the message at the sink")
    assert message.rcpt_tos == ["owner@target.example"]
    assert message.body_after_received() == BODY
    assert api(tempalias, "GET", f"/api/v1/domains/{domain}", token).json()["aliases"] == 1

    # the TXT is taken away; the next check (a day later) suspends the domain: mail waits
    dns_zone.set_records(txt["name"], "TXT", [])
    let_domain_time_pass(domain, 24 * HOUR)
    shown = wait_for(lambda: (body := api(tempalias, "GET", f"/api/v1/domains/{domain}",
                                          token).json())["status"] == "suspended" and body,
                     15, "the janitor to suspend the domain")
    assert shown["suspended_at"] and shown["erased_at"] > shown["suspended_at"]
    assert rcpt(tempalias, f"shop-news@{domain}") == status_of(replies.DOMAIN_SUSPENDED)
    assert (450, "4.7.1") == status_of(replies.DOMAIN_SUSPENDED)

    # the grace period runs out: the domain and its aliases are erased, mail is refused
    let_domain_time_pass(domain, 72 * HOUR)
    wait_for(lambda: not keys_of(redis_client, domain), 15,
             "the janitor to erase the domain and every key of it")
    assert redis_client.zscore(keys.DOMAINS_KEY, domain) is None
    assert rcpt(tempalias, f"shop-news@{domain}") == (550, "5.7.1")
    assert api(tempalias, "GET", f"/api/v1/domains/{domain}", token).status_code == 404
    assert len(smtp_sink.messages) == 1


def test_records_back_within_the_grace_period_restore_the_domain(tempalias, dns_zone,
                                                                 smtp_sink,
                                                                 let_domain_time_pass):
    domain = f"back{secrets.token_hex(4)}.example.org"
    registration = api(tempalias, "POST", "/api/v1/domains", domain=domain).json()
    token = registration["token"]
    for record in registration["records"]:
        dns_zone.set_records(record["name"], record["type"], [record["value"]])
    assert api(tempalias, "POST", f"/api/v1/domains/{domain}/verify", token).status_code == 200
    api(tempalias, "POST", "/api/v1/aliases", token, target="owner@target.example",
        domain=domain, local_part="news")
    dns_zone.set_records(domain, "MX", [])  # the MX is gone this time
    let_domain_time_pass(domain, 24 * HOUR)
    wait_for(lambda: api(tempalias, "GET", f"/api/v1/domains/{domain}",
                         token).json()["status"] == "suspended", 15, "the domain suspended")
    mx = registration["records"][0]
    dns_zone.set_records(mx["name"], "MX", [mx["value"]])
    let_domain_time_pass(domain, 24 * HOUR)
    wait_for(lambda: api(tempalias, "GET", f"/api/v1/domains/{domain}",
                         token).json()["status"] == "active", 15, "the domain active again")
    assert send(tempalias, [f"news@{domain}"]) == {}
    wait_for(lambda: smtp_sink.messages, 10, "the message at the sink")
