"""Schemathesis fuzzes the live API from its own OpenAPI document with every check it has: no 5xx,
no off-schema answer, schema-valid data accepted and schema-violating data refused."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.checks import negative_data_rejection

# The JSONP door answers 200 with the error in the payload (a <script> tag cannot see a status),
# as its description says: refused data cannot show as a 4xx there. Nothing else is excluded.
EXCLUDED_CHECKS = {"GET /aliases": [negative_data_rejection]}


# A schema-valid order may name a domain that is not offered (custom domains are registered at
# run time) or choose a local part at one of ours (a rule across two fields): 422 naming the
# field, as schemathesis advises for what a schema cannot express. Nothing else is allowed.
CONFIG = SchemathesisConfig.from_dict({"operations": [{
    "include-name": "POST /api/v1/aliases",
    "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]}},
}]})


@pytest.fixture(scope="session")
def api_schema(service):
    return schemathesis.openapi.from_url(f"{service.http_url}/api/openapi.json", config=CONFIG)


def test_document_is_openapi_31_and_covers_every_route(service):
    document = requests.get(f"{service.http_url}/api/openapi.json", timeout=10).json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {"/api/v1/aliases", "/api/v1/aliases/{alias_id}",
                                      "/api/v1/domains", "/api/v1/domains/{domain}",
                                      "/api/v1/domains/{domain}/verify", "/aliases", "/healthz"}
    order = document["components"]["schemas"]["Order"]["properties"]
    assert {"domain", "local_part"} <= set(order)
    assert document["components"]["schemas"]["Order"]["properties"]["days"]["maximum"] == 60


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(api_schema, mode):
    """Every operation, with data that fits its schema and data that does not.

    (Driven through Hypothesis directly: schemathesis's pytest plugin does not run under pytest 9.)
    """
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 11
    exercised = set()
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case):
            # No ``checks=``: every check schemathesis registers runs.
            case.call_and_validate(timeout=10,
                                   excluded_checks=EXCLUDED_CHECKS.get(operation.label))
            exercised.add(operation.label)

        try:
            exercise()
        except Unsatisfiable:
            # Nothing can be wrong about an operation without input (GET /healthz).
            assert mode is GenerationMode.NEGATIVE
    assert {"POST /api/v1/aliases", "POST /aliases", "GET /aliases",
            "GET /api/v1/aliases/{alias_id}", "DELETE /api/v1/aliases/{alias_id}",
            "POST /api/v1/domains", "GET /api/v1/domains/{domain}",
            "DELETE /api/v1/domains/{domain}", "POST /api/v1/domains/{domain}/verify"
            } <= exercised
