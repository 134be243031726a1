"""The original service's API: POST /aliases and the JSONP GET, as its old clients use them."""

from __future__ import annotations

import json
import re

import pytest
import requests

from tempalias.embedded_redis import RedisServer, free_loopback_port

JSONP = re.compile(r"^/\*\*/(?P<callback>[\w$.]+)\((?P<body>.*)\);$", re.S)


def jsonp(service, **params):
    answer = requests.get(f"{service.http_url}/aliases", params=params, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/javascript")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    match = JSONP.match(answer.text)
    assert match, answer.text
    assert match["callback"] == params["callback"]
    return json.loads(match["body"])


def test_post_answers_the_original_shape(service, store):
    answer = requests.post(f"{service.http_url}/aliases", timeout=10,
                           json={"target": "old@example.org", "days": 2, "max-usage": 4})
    assert answer.status_code == 200
    body = answer.json()
    assert body["aid"] and body["target"] == "old@example.org"
    assert body["days"] == 2 and body["max_usage"] == 4
    assert body["valid_until"] > body["valid_from"]
    assert body["address"] == f"{body['aid']}@tempalias.test"
    alias = store.get(body["aid"], body["token"])
    assert alias.uses_left == 4 and alias.target == "old@example.org"


def test_post_zero_means_unset_as_in_the_original(service, store):
    body = requests.post(f"{service.http_url}/aliases", timeout=10,
                         json={"target": "old@example.org", "days": 0, "max-usage": 0}).json()
    assert body["max_usage"] is None and body["days"] == 7


def test_post_errors_keep_the_original_codes(service, ids_taken):
    before = ids_taken()
    wrong_type = requests.post(f"{service.http_url}/aliases", data="x", timeout=10,
                               headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"] == "invalid-request-type"
    invalid = requests.post(f"{service.http_url}/aliases", json={"target": "nope"}, timeout=10)
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid-data"
    too_long = requests.post(f"{service.http_url}/aliases", timeout=10,
                             json={"target": "a@example.org", "days": 1000})
    assert too_long.status_code == 400 and "days" in too_long.json()["description"]
    assert ids_taken() == before


def test_post_takes_whole_number_floats_as_its_schema_allows(service, store):
    body = requests.post(f"{service.http_url}/aliases", timeout=10,
                         json={"target": "old@example.org", "days": 2.0, "max-usage": 4.0}).json()
    assert body["days"] == 2 and body["max_usage"] == 4


@pytest.mark.parametrize("fields, needle", [
    ({"target": ""}, "target"),
    ({"target": "old@example.org", "days": False}, "days"),
    ({"target": "old@example.org", "max-usage": False}, "max-usage"),
    ({"target": "old@example.org", "days": ""}, "days"),
    ({"target": "old@example.org", "days": "3"}, "days"),
    ({"target": "old@example.org", "max-usage": 2.5}, "max-usage"),
    ({"target": "old@i❤.example"}, "IDNA 2008"),
    ({"target": "old@\ud800.example"}, "surrogate"),
])
def test_post_refuses_what_its_schema_refuses(service, ids_taken, fields, needle):
    """The OpenAPI document's LegacyOrder and the server agree (schemathesis checks both ways)."""
    before = ids_taken()
    answer = requests.post(f"{service.http_url}/aliases", json=fields, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid-data" and needle in answer.json()["description"]
    assert ids_taken() == before


def test_the_schema_of_the_post_refuses_an_empty_target(service):
    document = requests.get(f"{service.http_url}/api/openapi.json", timeout=10).json()
    target = document["components"]["schemas"]["LegacyOrder"]["properties"]["target"]
    assert target["minLength"] >= 3 and target["format"] == "email"


def test_jsonp_creates_alias(service, store):
    body = jsonp(service, callback="handleAlias", target="js@example.org", days="3",
                 **{"max-usage": "2"})
    assert body["days"] == 3 and body["max_usage"] == 2
    assert store.get(body["aid"], body["token"]).target == "js@example.org"


def test_jsonp_accepts_dotted_callback_and_cache_buster(service):
    body = jsonp(service, callback="jQuery.cb_123", target="js@example.org", _="1700000000")
    assert body["aid"]


@pytest.mark.parametrize("params, needle", [
    ({"target": "broken"}, "target"),
    ({"target": "js@example.org", "days": "abc"}, "days"),
    ({"target": "js@example.org", "days": "-1"}, "days"),
    ({"target": "js@example.org", "max-usage": "100000"}, "max-usage"),
    ({"target": "js@example.org", "evil": "1"}, "evil"),
    ({}, "target"),
])
def test_jsonp_errors_are_200_with_the_error_and_create_nothing(service, ids_taken, params, needle):
    before = ids_taken()
    body = jsonp(service, callback="cb", **params)
    assert body["error"] == "invalid-data" and needle in body["description"]
    assert ids_taken() == before


@pytest.mark.parametrize("callback", ["alert(1)//", "a b", "1abc", "x;y", "<script>", "a" * 70])
def test_jsonp_refuses_callbacks_that_are_not_identifiers(service, ids_taken, callback):
    before = ids_taken()
    answer = requests.get(f"{service.http_url}/aliases", timeout=10,
                          params={"callback": callback, "target": "js@example.org"})
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["error"] == "invalid-callback"
    assert callback not in answer.text
    assert ids_taken() == before


def test_get_without_callback_is_405_as_in_the_original(service):
    answer = requests.get(f"{service.http_url}/aliases", params={"target": "a@example.org"}, timeout=10)
    assert answer.status_code == 405 and answer.json()["error"] == "method-not-allowed"


def test_legacy_api_answers_cross_origin(service):
    answer = requests.get(f"{service.http_url}/aliases", timeout=10,
                          params={"callback": "cb", "target": "a@example.org"},
                          headers={"Origin": "https://elsewhere.example"})
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("body, error", [(b"[]", "invalid-data"), (b"42", "invalid-data"),
                                         (b'"x"', "invalid-data"), (b"{", "malformed-json")])
def test_post_body_that_is_not_an_object_is_invalid_data(service, body, error):
    answer = requests.post(f"{service.http_url}/aliases", data=body, timeout=10,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"] == error  # JSON that is not an object, or no JSON at all


def test_store_down_is_503_with_retry_after_and_the_error_in_the_jsonp_payload(service_factory,
                                                                               tmp_path):
    """As the REST API answers it (tests/test_api.py): one answer for one fault, in either door."""
    redis = RedisServer(str(tmp_path / "redis"), port=free_loopback_port(), persistent=False).start()
    service = service_factory(env={"TEMPALIAS_REDIS_URL": redis.url,
                                   "TEMPALIAS_REDIS_TIMEOUT": "1"})
    redis.stop()
    answer = requests.post(f"{service.http_url}/aliases", json={"target": "old@example.org"},
                           timeout=10)
    assert answer.status_code == 503 and answer.json()["error"] == "service-unavailable"
    assert int(answer.headers["Retry-After"]) >= 1
    body = jsonp(service, callback="cb", target="js@example.org")
    assert body["error"] == "service-unavailable" and body["description"]
