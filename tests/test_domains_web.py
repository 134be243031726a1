"""The domain routes (tempalias/web/domains.py) and aliases at a chosen domain, over real HTTP
to a running tempalias that asks the test's DNS server on loopback (``dns_zone``).

Clients that must be limited connect from loopback addresses other than 127.0.0.1 (trusted by
default), as in test_abuse_http.py; every test registers domains of its own, since the Redis is the
session's.
"""

from __future__ import annotations

import http.client
import json
import secrets
from urllib.parse import quote, urlsplit

import pytest

from tempalias.store import keys

MX = "mx.tempalias.test"


@pytest.fixture(scope="module")
def web(service_factory, dns_server):
    return service_factory(env={
        "TEMPALIAS_DOMAINS": "tempalias.test, second.test, Bücher.test",
        "TEMPALIAS_DNS_SERVERS": dns_server.address,
        "TEMPALIAS_DNS_TIMEOUT": "2",
        "TEMPALIAS_MX_HOSTNAME": MX,
        "TEMPALIAS_SRS_SECRET": "test-srs-secret",
        "TEMPALIAS_DOMAIN_RATE_PER_IP": "3/1d",
        "TEMPALIAS_DOMAIN_DAILY_ALIASES": "2",
        "TEMPALIAS_DOMAIN_VERIFY_RATE": "4/1h",
    })


class Answer:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(service, method: str, path: str, body: dict | None = None, token: str | None = None,
         source: str = "127.0.0.1") -> Answer:
    """One request from the loopback address ``source``, with the token as Bearer if given."""
    url = urlsplit(service.http_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=20,
                                            source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers=headers)
        answer = connection.getresponse()
        return Answer(answer.status, answer.headers, answer.read())
    finally:
        connection.close()


def fresh_ip() -> str:
    return f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def fresh_domain() -> str:
    return f"d{secrets.token_hex(4)}.example.org"


def error_of(answer: Answer, status: int, error: str) -> dict:
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == error and body["description"]
    return body


def register(web, domain: str, source: str = "127.0.0.1") -> dict:
    answer = call(web, "POST", "/api/v1/domains", {"domain": domain}, source=source)
    assert answer.status == 201, answer.body
    return answer.json()


def publish(dns_zone, registration: dict) -> None:
    for record in registration["records"]:
        dns_zone.set_records(record["name"], record["type"], [record["value"]])


def active(web, dns_zone, domain: str) -> str:
    """Register ``domain``, publish its records, verify it; its token."""
    registration = register(web, domain)
    publish(dns_zone, registration)
    answer = call(web, "POST", f"/api/v1/domains/{domain}/verify", token=registration["token"])
    assert answer.status == 200, answer.body
    return registration["token"]


# --- the operator's domains


def test_the_domains_offered_are_listed_in_their_u_label_form(web):
    answer = call(web, "GET", "/api/v1/domains")
    assert answer.status == 200
    assert answer.json() == {"domains": ["tempalias.test", "second.test", "bücher.test"]}


def test_an_alias_is_made_at_the_domain_asked_for(web):
    default = call(web, "POST", "/api/v1/aliases", {"target": "a@example.net"}).json()
    assert default["address"] == f"{default['id']}@tempalias.test"
    chosen = call(web, "POST", "/api/v1/aliases",
                  {"target": "a@example.net", "domain": "xn--bcher-kva.TEST"})
    assert chosen.status == 201
    assert chosen.json()["address"] == f"{chosen.json()['id']}@bücher.test"


@pytest.mark.parametrize("fields, field", [
    ({"domain": "elsewhere.example"}, "domain"),
    ({"domain": "sub.tempalias.test"}, "domain"),
    ({"domain": 42}, "domain"),
    ({"domain": "tempalias.test", "local_part": "shop"}, "local_part"),
])
def test_a_domain_not_offered_is_422_naming_the_field(web, fields, field):
    answer = call(web, "POST", "/api/v1/aliases", {"target": "a@example.net", **fields})
    assert error_of(answer, 422, "invalid-field")["field"] == field


def test_the_legacy_api_knows_no_domain_field(web):
    answer = call(web, "POST", "/aliases", {"target": "a@example.net", "domain": "second.test"})
    assert answer.status == 400 and "domain" in answer.json()["description"]


# --- registration


def test_a_registration_answers_the_token_and_the_records_to_publish(web):
    domain = fresh_domain()
    answer = call(web, "POST", "/api/v1/domains", {"domain": domain.upper()})
    assert answer.status == 201, answer.body
    body = answer.json()
    assert set(body) == {"domain", "status", "token", "records", "expires_at"}
    assert (body["domain"], body["status"]) == (domain, "pending")
    mx, txt = body["records"]
    assert mx == {"type": "MX", "name": domain, "value": f"10 {MX}"}
    assert txt["type"] == "TXT" and txt["name"] == f"_tempalias.{domain}"
    assert txt["value"].startswith("tempalias-verify=") and body["token"] not in txt["value"]
    assert answer.headers["Location"] == f"/api/v1/domains/{domain}"
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("body, words", [
    ({"domain": "tempalias.test"}, "domain of this service"),
    ({"domain": "x.bücher.test"}, "domain of this service"),
    ({"domain": "intranet"}, "fully qualified"),
    ({"domain": ["a.example"]}, "as a string"),
    ({}, "required"),
    ({"domain": "a.example", "token": "mine"}, "not a known field"),
])
def test_what_cannot_be_registered_is_422_naming_the_field(web, body, words):
    refused = error_of(call(web, "POST", "/api/v1/domains", body), 422, "invalid-field")
    assert words in refused["description"]


def test_registrations_per_client_are_limited(web):
    source = fresh_ip()
    for _ in range(3):
        register(web, fresh_domain(), source)
    refused = call(web, "POST", "/api/v1/domains", {"domain": fresh_domain()}, source=source)
    body = error_of(refused, 429, "rate-limited")
    assert int(refused.headers["Retry-After"]) == body["retry_after"] > 3600
    register(web, fresh_domain(), fresh_ip())


def test_an_internationalised_domain_is_shown_in_u_labels_and_published_in_a_labels(
        web, dns_zone, redis_client):
    label = f"bücher{secrets.token_hex(3)}"
    registration = register(web, f"{label}.Example")
    assert registration["domain"] == f"{label}.example"
    a_label = registration["records"][0]["name"]
    assert a_label.startswith("xn--") and a_label.endswith(".example")
    publish(dns_zone, registration)
    token = registration["token"]
    verified = call(web, "POST", f"/api/v1/domains/{quote(label)}.example/verify", token=token)
    assert verified.json() == {"domain": f"{label}.example", "status": "active"}
    assert redis_client.hget(keys.domain_key(a_label), "status") == "active"
    shown = call(web, "GET", f"/api/v1/domains/{a_label}", token=token).json()
    assert shown["domain"] == f"{label}.example"


# --- verification


def test_verify_names_what_is_missing_until_the_records_are_published(web, dns_zone):
    domain = fresh_domain()
    registration = register(web, domain)
    token = registration["token"]
    body = error_of(call(web, "POST", f"/api/v1/domains/{domain}/verify", token=token), 409,
                    "dns-not-ready")
    assert body["status"] == "pending" and len(body["problems"]) == 2
    assert body["problems"][0].startswith(f"no MX record for {domain} points at {MX}")
    assert body["problems"][1].startswith(f"no TXT record at _tempalias.{domain}")
    mx = registration["records"][0]
    dns_zone.set_records(mx["name"], "MX", [mx["value"]])
    body = error_of(call(web, "POST", f"/api/v1/domains/{domain}/verify", token=token), 409,
                    "dns-not-ready")
    assert [problem.split(" ", 3)[:3] for problem in body["problems"]] == [["no", "TXT", "record"]]
    publish(dns_zone, registration)
    verified = call(web, "POST", f"/api/v1/domains/{domain}/verify", token=token)
    assert verified.status == 200 and verified.json() == {"domain": domain, "status": "active"}
    # verified: nobody may register it again
    taken = call(web, "POST", "/api/v1/domains", {"domain": domain})
    assert error_of(taken, 409, "domain-taken")["field"] == "domain"


def test_dns_that_does_not_answer_is_503_with_retry_after_not_a_verdict(web, dns_zone):
    domain = fresh_domain()
    registration = register(web, domain)
    publish(dns_zone, registration)
    dns_zone.fail(domain, "servfail")
    answer = call(web, "POST", f"/api/v1/domains/{domain}/verify", token=registration["token"])
    body = error_of(answer, 503, "dns-unavailable")
    assert int(answer.headers["Retry-After"]) > 0
    assert body["status"] == "pending" and "did not answer" in body["problems"][0]


def test_checks_are_limited_per_registration_so_another_cannot_spend_the_owners(web, dns_zone):
    """Each check makes us query the domain's name servers: a token holder gets a handful an
    hour (here 4), and a second registrant of the same name has a budget of its own."""
    domain = fresh_domain()
    mine, theirs = register(web, domain), register(web, domain, source=fresh_ip())
    for _ in range(4):
        error_of(call(web, "POST", f"/api/v1/domains/{domain}/verify", token=theirs["token"]),
                 409, "dns-not-ready")
    refused = call(web, "POST", f"/api/v1/domains/{domain}/verify", token=theirs["token"])
    assert error_of(refused, 429, "rate-limited")
    assert int(refused.headers["Retry-After"]) > 0
    publish(dns_zone, mine)
    verified = call(web, "POST", f"/api/v1/domains/{domain}/verify", token=mine["token"])
    assert verified.status == 200 and verified.json()["status"] == "active"


def test_the_first_registrant_to_verify_wins_and_the_other_finds_nothing(web, dns_zone):
    domain = fresh_domain()
    first, second = register(web, domain), register(web, domain)
    publish(dns_zone, second)
    loser = call(web, "POST", f"/api/v1/domains/{domain}/verify", token=first["token"])
    assert "each registration has its own value" in error_of(loser, 409, "dns-not-ready")[
        "problems"][0]
    assert call(web, "POST", f"/api/v1/domains/{domain}/verify",
                token=second["token"]).status == 200
    for method, path in (("POST", f"/api/v1/domains/{domain}/verify"),
                         ("GET", f"/api/v1/domains/{domain}"),
                         ("DELETE", f"/api/v1/domains/{domain}")):
        error_of(call(web, method, path, token=first["token"]), 404, "not-found")


# --- the owner's view, and what a stranger gets


def test_the_owner_sees_the_domain_and_its_aliases(web, dns_zone):
    domain = fresh_domain()
    registration = register(web, domain)
    pending = call(web, "GET", f"/api/v1/domains/{domain}", token=registration["token"]).json()
    assert (pending["status"], pending["aliases"], pending["last_check"]) == ("pending", 0, None)
    assert pending["records"] == registration["records"]
    assert pending["expires_at"] == registration["expires_at"]
    publish(dns_zone, registration)
    call(web, "POST", f"/api/v1/domains/{domain}/verify", token=registration["token"])
    call(web, "POST", "/api/v1/aliases", {"target": "a@example.net", "domain": domain},
         token=registration["token"])
    shown = call(web, "GET", f"/api/v1/domains/{domain}", token=registration["token"])
    assert shown.status == 200 and shown.headers["Cache-Control"] == "no-store"
    body = shown.json()
    assert (body["status"], body["aliases"], body["suspended_at"]) == ("active", 1, None)
    assert body["last_check"] == body["verified_at"] is not None


def test_a_stranger_without_the_domain_token_can_create_see_or_remove_nothing(web, dns_zone,
                                                                              redis_client):
    domain = fresh_domain()
    token = active(web, dns_zone, domain)
    made = call(web, "POST", "/api/v1/aliases",
                {"target": "a@example.net", "domain": domain, "local_part": "kept"}, token=token)
    assert made.status == 201
    for stranger in (None, "guess", token + "x"):
        for method, path, body in (
                ("POST", "/api/v1/aliases",
                 {"target": "b@example.net", "domain": domain, "local_part": "mine"}),
                ("GET", f"/api/v1/domains/{domain}", None),
                ("DELETE", f"/api/v1/domains/{domain}", None),
                ("POST", f"/api/v1/domains/{domain}/verify", None),
                ("GET", f"/api/v1/aliases/kept@{domain}", None),
                ("DELETE", f"/api/v1/aliases/kept@{domain}", None)):
            answer = call(web, method, path, body, token=stranger)
            assert error_of(answer, 404, "not-found")
    # an unknown domain answers the same as a known one with the wrong token
    unknown = call(web, "GET", f"/api/v1/domains/{fresh_domain()}", token=token)
    assert unknown.body == call(web, "GET", f"/api/v1/domains/{domain}", token="guess").body
    assert redis_client.zcard(keys.domain_aliases_key(domain)) == 1
    assert call(web, "GET", f"/api/v1/domains/{domain}", token=token).json()["aliases"] == 1


def test_removing_a_domain_erases_it_and_every_alias_in_it(web, dns_zone, redis_client):
    domain = fresh_domain()
    token = active(web, dns_zone, domain)
    call(web, "POST", "/api/v1/aliases", {"target": "a@example.net", "domain": domain,
                                          "local_part": "shop"}, token=token)
    answer = call(web, "DELETE", f"/api/v1/domains/{domain}", token=token)
    assert answer.status == 204
    assert not [key for key in redis_client.scan_iter(count=1000) if f"{{{domain}}}" in key]
    error_of(call(web, "GET", f"/api/v1/domains/{domain}", token=token), 404, "not-found")
    # erased: its next owner starts afresh
    register(web, domain)


def test_removing_a_registration_withdraws_it(web):
    domain = fresh_domain()
    registration = register(web, domain)
    assert call(web, "DELETE", f"/api/v1/domains/{domain}",
                token=registration["token"]).status == 204
    error_of(call(web, "GET", f"/api/v1/domains/{domain}", token=registration["token"]), 404,
             "not-found")


# --- aliases at a custom domain


def test_the_owner_makes_aliases_with_a_chosen_local_part_named_local_at_domain(web, dns_zone):
    domain = fresh_domain()
    token = active(web, dns_zone, domain)
    answer = call(web, "POST", "/api/v1/aliases",
                  {"target": "me@example.net", "domain": domain, "local_part": "Shop-News"},
                  token=token)
    assert answer.status == 201, answer.body
    alias = answer.json()
    assert alias["id"] == alias["address"] == f"shop-news@{domain}"
    assert answer.headers["Location"] == f"/api/v1/aliases/shop-news@{domain}"
    for path in (f"/api/v1/aliases/shop-news@{domain}",
                 f"/api/v1/aliases/shop-news%40{domain}",
                 f"/api/v1/aliases/SHOP-NEWS@{domain.upper()}"):
        shown = call(web, "GET", path, token=alias["token"])
        assert shown.status == 200 and shown.json()["address"] == alias["address"]
    taken = call(web, "POST", "/api/v1/aliases",
                 {"target": "me@example.net", "domain": domain, "local_part": "shop-news"},
                 token=token)
    assert error_of(taken, 409, "local-part-taken")["field"] == "local_part"
    role = call(web, "POST", "/api/v1/aliases",
                {"target": "me@example.net", "domain": domain, "local_part": "postmaster"},
                token=token)
    assert error_of(role, 422, "invalid-field")["field"] == "local_part"
    assert call(web, "DELETE", f"/api/v1/aliases/shop-news%40{domain}",
                token=alias["token"]).status == 204
    random = call(web, "POST", "/api/v1/aliases", {"target": "me@example.net", "domain": domain},
                  token=token).json()
    assert random["id"].endswith(f"@{domain}") and random["id"] != f"shop-news@{domain}"


def test_the_owner_makes_an_alias_that_takes_replies_and_no_name_of_reply_addresses(web,
                                                                                   dns_zone):
    domain = fresh_domain()
    token = active(web, dns_zone, domain)
    answer = call(web, "POST", "/api/v1/aliases", {"target": "me@example.net", "domain": domain,
                                                   "local_part": "shop", "replies": True},
                  token=token)
    assert answer.status == 201, answer.body
    alias = answer.json()
    assert alias["replies"] is True
    shown = call(web, "GET", f"/api/v1/aliases/shop@{domain}", token=alias["token"])
    assert shown.json()["replies"] is True
    for local_part in ("r=shop", "R=abcdefghijklmnop=onug64a"):
        refused = call(web, "POST", "/api/v1/aliases", {
            "target": "me@example.net", "domain": domain, "local_part": local_part},
            token=token)
        body = error_of(refused, 422, "invalid-field")
        assert body["field"] == "local_part" and "reply addresses" in body["description"]


def test_a_local_part_with_a_slash_is_reached_through_its_encoded_path(web, dns_zone):
    domain = fresh_domain()
    token = active(web, dns_zone, domain)
    alias = call(web, "POST", "/api/v1/aliases",
                 {"target": "me@example.net", "domain": domain, "local_part": "a/b?c"},
                 token=token)
    assert alias.status == 201
    location = alias.headers["Location"]
    assert location == f"/api/v1/aliases/a%2Fb%3Fc@{domain}"
    assert call(web, "GET", location, token=alias.json()["token"]).json()["id"] == f"a/b?c@{domain}"


def test_a_custom_domain_gets_its_daily_aliases_and_then_429(web, dns_zone):
    domain = fresh_domain()
    token = active(web, dns_zone, domain)
    for _ in range(2):
        assert call(web, "POST", "/api/v1/aliases", {"target": "me@example.net",
                                                     "domain": domain},
                    token=token, source=fresh_ip()).status == 201
    refused = call(web, "POST", "/api/v1/aliases", {"target": "me@example.net",
                                                    "domain": domain},
                   token=token, source=fresh_ip())
    body = error_of(refused, 429, "rate-limited")
    assert "this domain" in body["description"] and int(refused.headers["Retry-After"]) > 3600


def test_a_target_at_an_active_custom_domain_is_another_alias_not_a_loop(web, dns_zone):
    domain = fresh_domain()
    active(web, dns_zone, domain)
    answer = call(web, "POST", "/api/v1/aliases", {"target": f"someone@{domain}"})
    assert answer.status == 201 and answer.json()["target"] == f"someone@{domain}"
