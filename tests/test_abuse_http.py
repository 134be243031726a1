"""Abuse defences seen from HTTP clients of a running tempalias (``service_factory``).

Clients connect from other loopback addresses (127.0.0.1 is trusted by default), so the server sees
them as different clients; each test uses addresses and targets of its own, because the limits live
in the session's shared Redis. A limit recovers when the test lets time pass in that Redis
(conftest's ``let_time_pass``), never by waiting: the limits are realistic, hours and days, so
that the few seconds the test really takes never refill a bucket.
"""

from __future__ import annotations

import http.client
import json
import secrets
from urllib.parse import urlencode, urlsplit

import pytest

NO_LIMITS = {
    "TEMPALIAS_CREATE_RATE_PER_IP": "0",
    "TEMPALIAS_CREATE_DAILY_PER_IP": "0",
    "TEMPALIAS_CREATE_DAILY_PER_TARGET": "0",
}


def fresh_ip() -> str:
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def fresh_target() -> str:
    return f"someone{secrets.token_hex(4)}@example.org"


class Answer:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def request(service, method: str, path: str, source: str, body: dict | None = None,
            headers: dict | None = None) -> Answer:
    """One HTTP request to ``service`` made from the loopback address ``source``."""
    url = urlsplit(service.http_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=15,
                                            source_address=(source, 0))
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=payload, headers=all_headers)
        answer = connection.getresponse()
        return Answer(answer.status, answer.headers, answer.read())
    finally:
        connection.close()


def create(service, source: str, target: str | None = None, headers: dict | None = None) -> Answer:
    return request(service, "POST", "/api/v1/aliases", source,
                   {"target": target or fresh_target(), "days": 1}, headers)


def assert_rate_limited(answer: Answer) -> int:
    assert answer.status == 429, answer.body
    assert answer.json()["error"] == "rate-limited"
    retry_after = int(answer.headers["Retry-After"])
    assert retry_after >= 1
    assert answer.json()["retry_after"] == retry_after
    return retry_after


NOT_YET = 5  # s before Retry-After is up: more than the test itself takes, so still refused


def assert_refused_until_retry_after(attempt, let_time_pass, expected: int) -> None:
    """``attempt()`` is refused, with a Retry-After of about ``expected`` seconds (what the limit
    says: its period over its count); still refused a few seconds before that moment, once that
    much time passed; and let through once Retry-After is up."""
    retry_after = assert_rate_limited(attempt())
    assert expected - NOT_YET < retry_after <= expected
    let_time_pass(retry_after - NOT_YET)
    assert assert_rate_limited(attempt()) <= NOT_YET
    let_time_pass(NOT_YET)
    assert attempt().status == 201


@pytest.fixture(scope="module")
def per_ip_service(service_factory):
    return service_factory(env={**NO_LIMITS, "TEMPALIAS_CREATE_RATE_PER_IP": "2/1h"})


def test_creation_per_client_ip_is_limited_and_recovers(per_ip_service, let_time_pass):
    client = fresh_ip()
    assert create(per_ip_service, client).status == 201
    assert create(per_ip_service, client).status == 201
    assert_rate_limited(create(per_ip_service, client))
    assert create(per_ip_service, fresh_ip()).status == 201  # another client is not affected
    # one creation comes back every 3600/2 s
    assert_refused_until_retry_after(lambda: create(per_ip_service, client), let_time_pass, 1800)
    assert_rate_limited(create(per_ip_service, client))  # one, not two


def test_localhost_is_trusted_and_never_limited(per_ip_service):
    assert [create(per_ip_service, "127.0.0.1").status for _ in range(4)] == [201] * 4


def test_the_legacy_endpoints_share_the_limit(per_ip_service):
    client = fresh_ip()
    legacy = {"target": fresh_target(), "days": 1, "max-usage": 1}
    assert request(per_ip_service, "POST", "/aliases", client, legacy).status == 200
    assert create(per_ip_service, client).status == 201
    answer = request(per_ip_service, "POST", "/aliases", client, legacy)
    assert_rate_limited(answer)
    query = urlencode({"callback": "got", "target": fresh_target(), "days": 1})
    jsonp = request(per_ip_service, "GET", "/aliases?" + query, client)
    assert jsonp.status == 200  # a <script> tag cannot see a status: the error is in the payload
    text = jsonp.body.decode()
    assert text.startswith("/**/got(") and text.endswith(");")
    payload = json.loads(text[len("/**/got("):-2])
    assert payload["error"] == "rate-limited" and payload["retry_after"] >= 1


def test_the_daily_cap_per_client_ip(service_factory, let_time_pass):
    service = service_factory(env={**NO_LIMITS, "TEMPALIAS_CREATE_DAILY_PER_IP": "3/1d"})
    client = fresh_ip()
    assert [create(service, client).status for _ in range(3)] == [201] * 3
    assert_refused_until_retry_after(lambda: create(service, client), let_time_pass, 86400 // 3)


def test_new_aliases_per_target_are_limited_whoever_asks(service_factory, let_time_pass):
    service = service_factory(env={**NO_LIMITS, "TEMPALIAS_CREATE_DAILY_PER_TARGET": "2/1d"})
    target = fresh_target()
    assert create(service, fresh_ip(), target).status == 201
    assert create(service, fresh_ip(), target.replace("@", "+again@")).status == 201
    assert_rate_limited(create(service, fresh_ip(), target))
    assert create(service, fresh_ip(), fresh_target()).status == 201
    assert_refused_until_retry_after(lambda: create(service, fresh_ip(), target), let_time_pass,
                                     86400 // 2)
    assert target.split("@")[0] not in service.log_text()


@pytest.fixture(scope="module")
def one_per_target_service(service_factory):
    return service_factory(env={**NO_LIMITS, "TEMPALIAS_CREATE_DAILY_PER_TARGET": "1/1d"})


@pytest.mark.parametrize("domain, spellings", [
    ("example.com", ['"{local}"@example.com', '"{local}+x"@example.com', "{local}+x@example.com",
                     "{upper}@EXAMPLE.COM", "{local}@ｅｘａｍｐｌｅ.com"]),
    ("bücher.example", ["{local}@xn--bcher-kva.example", "{local}@BÜCHER.example",
                        "{local}@XN--BCHER-KVA.EXAMPLE", '"{local}+x"@Bücher.Example']),
])
def test_the_per_target_limit_counts_every_spelling_of_the_mailbox(one_per_target_service,
                                                                   domain, spellings):
    service = one_per_target_service
    local = f"victim{secrets.token_hex(4)}"
    assert create(service, fresh_ip(), f"{local}@{domain}").status == 201
    first = create(service, fresh_ip(), f"{local}@{domain}")
    assert_rate_limited(first)
    reason = first.json()["description"].split(";")[0]  # then "try again in N s"
    assert "target" in reason
    for spelling in spellings:
        answer = create(service, fresh_ip(), spelling.format(local=local, upper=local.upper()))
        assert_rate_limited(answer)
        assert answer.json()["description"].split(";")[0] == reason
    assert create(service, fresh_ip(), f"someone.else.{local}@{domain}").status == 201


def test_two_processes_on_one_redis_share_the_limits(service_factory):
    env = {**NO_LIMITS, "TEMPALIAS_CREATE_RATE_PER_IP": "2/1h"}
    first, second = service_factory(env=env), service_factory(env=env)
    client = fresh_ip()
    assert create(first, client).status == 201
    assert create(second, client).status == 201
    assert_rate_limited(create(first, client))
    assert_rate_limited(create(second, client))


@pytest.fixture(scope="module")
def proxied_service(service_factory, dns_server):
    return service_factory(env={**NO_LIMITS, "TEMPALIAS_CREATE_RATE_PER_IP": "1/1h",
                                "TEMPALIAS_TRUSTED_PROXIES": "127.0.0.7/32",
                                "TEMPALIAS_RBL_ZONES": "bl.test",
                                "TEMPALIAS_DNS_SERVERS": dns_server.address})


def test_forwarded_for_is_honoured_from_a_trusted_proxy(proxied_service):
    proxy = "127.0.0.7"
    client = f"198.51.100.{secrets.randbelow(60) + 1}"
    spoofed = {"X-Forwarded-For": f"203.0.113.5, {client}"}  # only the right-most hop counts
    assert create(proxied_service, proxy, headers=spoofed).status == 201
    assert_rate_limited(create(proxied_service, proxy, headers={"X-Forwarded-For": client}))
    other = {"X-Forwarded-For": f"198.51.100.{secrets.randbelow(60) + 100}"}
    assert create(proxied_service, proxy, headers=other).status == 201


def test_forwarded_for_from_anyone_else_is_ignored(proxied_service):
    client = fresh_ip()
    assert create(proxied_service, client, headers={"X-Forwarded-For": "198.51.100.200"}).status \
        == 201
    answer = create(proxied_service, client, headers={"X-Forwarded-For": "198.51.100.201"})
    assert_rate_limited(answer)


def test_a_listed_client_behind_the_proxy_is_refused(proxied_service):
    answer = create(proxied_service, "127.0.0.7", headers={"X-Forwarded-For": "198.51.100.66"})
    assert answer.status == 403
    assert answer.json()["error"] == "rbl-listed"


@pytest.fixture(scope="module")
def rbl_service(service_factory, dns_server):
    # the silent zone makes every look-up wait for its timeout: the listing must still be found
    return service_factory(env={**NO_LIMITS, "TEMPALIAS_RBL_ZONES": "silent.test,bl.test",
                                "TEMPALIAS_RBL_TIMEOUT": "0.5",
                                "TEMPALIAS_DNS_SERVERS": dns_server.address})


def test_a_listed_client_cannot_create_aliases(rbl_service):
    answer = create(rbl_service, "127.0.0.2")
    assert answer.status == 403
    assert answer.json() == {"error": "rbl-listed", "description": "127.0.0.2 listed in bl.test"}
    legacy = request(rbl_service, "POST", "/aliases", "127.0.0.2",
                     {"target": fresh_target(), "days": 1})
    assert legacy.status == 403 and legacy.json()["error"] == "rbl-listed"
    query = urlencode({"callback": "cb", "target": fresh_target()})
    jsonp = request(rbl_service, "GET", "/aliases?" + query, "127.0.0.2")
    assert jsonp.status == 200 and '"error": "rbl-listed"' in jsonp.body.decode()


def test_the_log_names_the_refused_client_and_its_list(rbl_service):
    assert create(rbl_service, "127.0.0.2").status == 403
    assert "refused http alias creation from 127.0.0.2: listed in bl.test" in rbl_service.log_text()


def test_an_unlisted_client_creates_aliases_though_a_list_times_out(rbl_service):
    assert create(rbl_service, "127.0.0.5").status == 201


def test_the_log_names_a_list_that_timed_out(rbl_service):
    assert create(rbl_service, "127.0.0.6").status == 201
    assert "silent.test" in rbl_service.log_text()


def test_a_failing_list_refuses_with_503_when_failing_closed(service_factory, dns_server):
    service = service_factory(env={**NO_LIMITS, "TEMPALIAS_RBL_ZONES": "broken.test",
                                   "TEMPALIAS_RBL_FAIL_CLOSED": "yes",
                                   "TEMPALIAS_DNS_SERVERS": dns_server.address})
    answer = create(service, fresh_ip())
    assert answer.status == 503
    assert answer.json()["error"] == "rbl-unavailable"
    assert "Retry-After" in answer.headers
