"""The REST API of a running tempalias, over real HTTP: the owner's view and every error path."""

from __future__ import annotations

import json
import secrets

import pytest
import requests

from harness.processes import wait_for
from tempalias.embedded_redis import RedisServer, free_loopback_port
from tempalias.store import keys

JSON = {"Content-Type": "application/json"}


def create(service, **fields):
    return requests.post(f"{service.http_url}/api/v1/aliases", json=fields, timeout=10)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_json_error(answer, status, error, field=None):
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == error and body["description"]
    if field is not None:
        assert body["field"] == field
    return body


def test_create_returns_alias_with_token_and_location(service):
    answer = create(service, target="Owner@Example.org", days=3, uses=5)
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {"id", "address", "target", "created_at", "expires_at", "uses_left",
                         "replies", "token"}
    assert body["replies"] is False
    assert body["address"] == f"{body['id']}@tempalias.test"
    assert body["target"] == "Owner@example.org"  # the domain is normalised, the mailbox kept
    assert body["uses_left"] == 5
    assert body["created_at"].endswith("Z") and body["expires_at"] > body["created_at"]
    assert answer.headers["Location"] == f"/api/v1/aliases/{body['id']}"
    shown = requests.get(service.http_url + answer.headers["Location"],
                         headers=bearer(body["token"]), timeout=10)
    assert shown.status_code == 200
    assert shown.json() == {**{k: v for k, v in body.items() if k != "token"},
                            "delivered": 0, "active": True}


def test_days_default_and_uses_absent_means_time_only(service):
    body = create(service, target="a@example.org").json()
    assert body["uses_left"] is None
    days = (_parse(body["expires_at"]) - _parse(body["created_at"])).days
    assert days == 7  # TEMPALIAS_DEFAULT_DAYS's default


def _parse(stamp):
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_lookup_is_case_insensitive(service):
    body = create(service, target="a@example.org").json()
    shown = requests.get(f"{service.http_url}/api/v1/aliases/{body['id'].upper()}",
                         headers=bearer(body["token"]), timeout=10)
    assert shown.status_code == 200 and shown.json()["id"] == body["id"]


def test_wrong_missing_or_malformed_token_answers_like_an_unknown_id(service):
    body = create(service, target="secret-target@example.org").json()
    url = f"{service.http_url}/api/v1/aliases/{body['id']}"
    unknown = requests.get(f"{service.http_url}/api/v1/aliases/zzzzzzzzzz",
                           headers=bearer(body["token"]), timeout=10)
    attempts = [
        requests.get(url, timeout=10),
        requests.get(url, headers=bearer(body["token"] + "x"), timeout=10),
        requests.get(url, headers={"Authorization": f"Basic {body['token']}"}, timeout=10),
        requests.delete(url, headers=bearer("nope"), timeout=10),
    ]
    for answer in attempts:
        assert answer.status_code == 404
        assert answer.json() == unknown.json()
        assert "secret-target" not in answer.text and body["token"] not in answer.text
    # and the alias is still there for its owner
    assert requests.get(url, headers=bearer(body["token"]), timeout=10).status_code == 200


def test_delete_revokes_and_erases(service, redis_client):
    body = create(service, target="a@example.org", uses=3).json()
    url = f"{service.http_url}/api/v1/aliases/{body['id']}"
    answer = requests.delete(url, headers=bearer(body["token"]), timeout=10)
    assert answer.status_code == 204 and answer.content == b""
    assert requests.get(url, headers=bearer(body["token"]), timeout=10).status_code == 404
    assert set(redis_client.scan_iter(match=keys.alias_pattern(body['id']))) == set()
    assert requests.delete(url, headers=bearer(body["token"]), timeout=10).status_code == 404


def test_wrong_content_type_is_415(service):
    answer = requests.post(f"{service.http_url}/api/v1/aliases", data="target=a@example.org",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert_json_error(answer, 415, "unsupported-media-type")


@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe", b"", b'{"target": NaN}'])
def test_malformed_json_is_400(service, body):
    answer = requests.post(f"{service.http_url}/api/v1/aliases", data=body, headers=JSON, timeout=10)
    assert_json_error(answer, 400, "malformed-json")


def test_json_nested_too_deeply_is_400_logged_in_one_line(service):
    target = f"deep{secrets.token_hex(4)}@example.org"
    body = '{"target": "%s", "days": %s1%s}' % (target, "[" * 5000, "]" * 5000)
    logged_before = len(service.log_text())
    answer = requests.post(f"{service.http_url}/api/v1/aliases", data=body, timeout=10,
                           headers={**JSON, "Connection": "close"})
    assert_json_error(answer, 400, "malformed-json")
    lines = service.log_text()[logged_before:].splitlines()
    assert len(lines) == 1 and " INFO " in lines[0], lines
    assert target.split("@")[0] not in service.log_text()


@pytest.mark.parametrize("body", [b"[]", b'"a@example.org"', b"42", b"null"])
def test_body_that_is_not_an_object_is_422(service, body):
    answer = requests.post(f"{service.http_url}/api/v1/aliases", data=body, headers=JSON, timeout=10)
    assert_json_error(answer, 422, "invalid-body")


@pytest.mark.parametrize("fields, field", [
    ({}, "target"),
    ({"target": None}, "target"),
    ({"target": 42}, "target"),
    ({"target": "no-at-sign"}, "target"),
    ({"target": "a@b"}, "target"),
    ({"target": "a@[127.0.0.1]"}, "target"),
    ({"target": "a b@example.org"}, "target"),
    ({"target": "a@example.org\r\nBcc: x@example.org"}, "target"),
    ({"target": "a@\ud800.example"}, "target"),  # a lone surrogate, from a JSON escape
    ({"target": "\udc80a@example.org"}, "target"),
    ({"target": "x" * 65 + "@example.org"}, "target"),
    ({"target": "loop@tempalias.test"}, "target"),
    ({"target": "a@example.org", "days": 0}, "days"),
    ({"target": "a@example.org", "days": 61}, "days"),
    ({"target": "a@example.org", "days": 2.5}, "days"),
    ({"target": "a@example.org", "days": "3"}, "days"),
    ({"target": "a@example.org", "days": True}, "days"),
    ({"target": "a@example.org", "uses": 0}, "uses"),
    ({"target": "a@example.org", "uses": 101}, "uses"),
    ({"target": "a@example.org", "uses": -1}, "uses"),
    ({"target": "a@example.org", "uses": [1]}, "uses"),
    ({"target": "a@example.org", "uses": 43.5}, "uses"),
    ({"target": "a@example.org", "uses": "43"}, "uses"),
    ({"target": "a@example.org", "uses": False}, "uses"),
    ({"target": "a@example.org", "uses": 1e300}, "uses"),
    ({"target": "a@example.org", "max-usage": 3}, "max-usage"),
    ({"target": "a@example.org", "admin": True}, "admin"),
    ({"target": "a@example.org", "replies": "true"}, "replies"),
    ({"target": "a@example.org", "replies": 1}, "replies"),
    ({"target": "a@example.org", "replies": None}, "replies"),
    ({"target": "a@example.org", "replies": [True]}, "replies"),
])
def test_invalid_field_is_422_naming_it_and_creates_nothing(service, ids_taken, fields, field):
    before = ids_taken()
    answer = create(service, **fields) if fields else requests.post(
        f"{service.http_url}/api/v1/aliases", data=b"{}", headers=JSON, timeout=10)
    assert_json_error(answer, 422, "invalid-field", field)
    assert ids_taken() == before


def test_an_alias_that_takes_replies_says_so_in_its_answer_and_to_its_owner(service, store):
    answer = create(service, target="a@example.org", replies=True)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["replies"] is True
    shown = requests.get(f"{service.http_url}/api/v1/aliases/{body['id']}",
                         headers=bearer(body["token"]), timeout=10).json()
    assert shown["replies"] is True
    assert store.get(body["id"], body["token"]).replies  # what the forwarder will read
    off = create(service, target="a@example.org", replies=False).json()
    assert off["replies"] is False and not store.get(off["id"], off["token"]).replies


def test_whole_number_floats_are_integers_as_json_schema_says(service):
    answer = create(service, target="a@example.org", days=3.0, uses=43.0)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["uses_left"] == 43
    assert (_parse(body["expires_at"]) - _parse(body["created_at"])).days == 3


def test_utf8_target_is_accepted(service):
    answer = create(service, target="jürgen@bücher.example")
    assert answer.status_code == 201
    assert answer.json()["target"] == "jürgen@xn--bcher-kva.example"


def test_a_target_domain_keeps_its_sharp_s_by_idna_2008(service):
    answer = create(service, target="jörg@zielß.example")
    assert answer.status_code == 201, answer.text
    assert answer.json()["target"] == "jörg@xn--ziel-yna.example"  # not zielss.example (IDNA 2003)
    assert create(service, target="a@Zielß.EXAMPLE").json()["target"] == "a@xn--ziel-yna.example"


@pytest.mark.parametrize("target", ["a@i❤.example", "a@ab\u0627.example", "a@a\u200db.example"])
def test_a_domain_idna_2008_refuses_is_an_invalid_field_saying_so(service, ids_taken, target):
    """A symbol, a left-to-right label with an Arabic letter (bidi), a joiner out of context."""
    before = ids_taken()
    body = assert_json_error(create(service, target=target), 422, "invalid-field", "target")
    assert "IDNA 2008" in body["description"]
    assert ids_taken() == before


def test_oversized_body_is_413_without_reading_it(service):
    answer = requests.post(f"{service.http_url}/api/v1/aliases", headers=JSON, timeout=10,
                           data=json.dumps({"target": "a@example.org", "pad": "x" * 20000}))
    assert_json_error(answer, 413, "payload-too-large")


def test_unknown_route_and_wrong_method_answer_json(service):
    assert_json_error(requests.get(f"{service.http_url}/api/v1/nothing", timeout=10), 404, "not-found")
    assert_json_error(requests.put(f"{service.http_url}/api/v1/aliases", timeout=10),
                      405, "method-not-allowed")


def test_cors_allows_any_origin_without_credentials(service):
    origin = {"Origin": "https://signup.example.net"}
    preflight = requests.options(f"{service.http_url}/api/v1/aliases", timeout=10, headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    created = requests.post(f"{service.http_url}/api/v1/aliases", json={"target": "a@example.org"},
                            headers=origin, timeout=10)
    assert created.headers["Access-Control-Allow-Origin"] == "*"
    assert "Location" in created.headers["Access-Control-Expose-Headers"]
    refused = requests.get(f"{service.http_url}/api/v1/aliases/{created.json()['id']}",
                           headers=origin, timeout=10)
    assert refused.status_code == 404 and refused.headers["Access-Control-Allow-Origin"] == "*"


def test_healthz(service):
    answer = requests.get(f"{service.http_url}/healthz", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_redis_down_is_503_json_and_recovers(service_factory, tmp_path):
    redis = RedisServer(str(tmp_path / "redis"), port=free_loopback_port(), persistent=False).start()
    service = service_factory(env={"TEMPALIAS_REDIS_URL": redis.url,
                                   "TEMPALIAS_REDIS_TIMEOUT": "1"})
    assert create(service, target="a@example.org").status_code == 201
    redis.stop()
    try:
        answer = create(service, target="a@example.org")
        body = assert_json_error(answer, 503, "service-unavailable")
        assert "Traceback" not in body["description"]
        assert answer.headers["Retry-After"]
        assert_json_error(requests.get(f"{service.http_url}/healthz", timeout=10),
                          503, "service-unavailable")
        assert_json_error(requests.get(f"{service.http_url}/api/v1/aliases/abcdef",
                                       headers=bearer("x"), timeout=10), 503, "service-unavailable")
    finally:
        redis.start()
    wait_for(lambda: requests.get(f"{service.http_url}/healthz", timeout=10).status_code == 200,
             15, "tempalias to reach Redis again")
    assert create(service, target="a@example.org").status_code == 201
    redis.stop()
    assert "Traceback" not in service.log_text()
