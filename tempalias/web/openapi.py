"""The OpenAPI 3.1 description of every public route, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from tempalias import __version__
from tempalias.addresses import MAX_ADDRESS_OCTETS
from tempalias.aliases import AliasRules
from tempalias.domaincheck import MAX_DOMAIN_LENGTH

ERROR = {
    "type": "object",
    "required": ["error", "description"],
    "properties": {
        "error": {"type": "string"},
        "description": {"type": "string"},
        "field": {"type": "string"},
    },
}
# A domain name in its A-label form: letters, digits and hyphens, two labels or more.
DOMAIN_PATTERN = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\.?$"
# A chosen local part: a dot-atom (RFC 5321)
LOCAL_PART_PATTERN = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$"
# A check of a domain's DNS records that did not find them all: each problem in plain words.
DNS_PROBLEMS = {
    "type": "object",
    "required": ["error", "description", "status", "problems"],
    "properties": {
        "error": {"type": "string", "enum": ["dns-not-ready", "dns-unavailable"]},
        "description": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "active", "suspended"]},
        "problems": {"type": "array", "items": {"type": "string"}},
    },
}
RECORD = {
    "type": "object",
    "required": ["type", "name", "value"],
    "properties": {
        "type": {"type": "string", "enum": ["MX", "TXT"]},
        "name": {"type": "string", "description": "fully qualified, without the final dot"},
        "value": {"type": "string",
                  "description": "as it goes into the zone; an MX as PREFERENCE HOST"},
    },
}


def _error_response(text: str) -> dict[str, Any]:
    return {"description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _domain_schemas(iso: dict) -> dict[str, Any]:
    """The schemas of the custom-domain routes."""
    optional_iso = {"type": ["string", "null"], "format": "date-time"}
    records = {"type": "array", "items": {"$ref": "#/components/schemas/DnsRecord"}}
    return {
        "DomainList": {"type": "object", "required": ["domains"], "properties": {
            "domains": {"type": "array", "items": {"type": "string"},
                        "description": "the operator's domains offered for new aliases, the "
                                       "default first"}}},
        "DomainOrder": {"type": "object", "additionalProperties": False, "required": ["domain"],
                        "properties": {"domain": {
                            "type": "string", "maxLength": MAX_DOMAIN_LENGTH,
                            "pattern": DOMAIN_PATTERN,
                            "description": "a domain you control; its U-label form (bücher.example"
                                           ") is taken too, and any form of it stands for its "
                                           "A-label, at most 242 characters"}}},
        "NewDomain": {"type": "object",
                      "required": ["domain", "status", "token", "records", "expires_at"],
                      "properties": {
                          "domain": {"type": "string", "description": "in U-label form"},
                          "status": {"type": "string", "enum": ["pending"]},
                          "token": {"type": "string", "description": "the domain token, shown "
                                                                     "this once"},
                          "records": {**records, "description": "publish exactly these"},
                          "expires_at": {**iso, "description": "erased then unless verified"}}},
        "DomainStatus": {"type": "object", "required": ["domain", "status"], "properties": {
            "domain": {"type": "string"},
            "status": {"type": "string", "enum": ["active"]}}},
        "DomainView": {"type": "object",
                       "required": ["domain", "status", "aliases", "created_at", "verified_at",
                                    "last_check", "suspended_at", "erased_at", "expires_at",
                                    "records"],
                       "properties": {
                           "domain": {"type": "string"},
                           "status": {"type": "string",
                                      "enum": ["pending", "active", "suspended"]},
                           "aliases": {"type": "integer", "minimum": 0,
                                       "description": "aliases that have not ended"},
                           "created_at": optional_iso, "verified_at": optional_iso,
                           "last_check": {**optional_iso, "description": "the last scheduled "
                                                                           "check"},
                           "suspended_at": {**optional_iso,
                                            "description": "since when its records are gone"},
                           "erased_at": {**optional_iso, "description": "when a suspended "
                                         "domain is erased with its aliases unless its records "
                                         "come back"},
                           "expires_at": {**optional_iso, "description": "when a pending "
                                          "registration lapses"},
                           "records": records}},
        "DnsProblems": DNS_PROBLEMS,
        "DnsRecord": RECORD,
    }


def openapi_document(rules: AliasRules) -> dict[str, Any]:
    """The document, with the limits of an order as ``rules`` set them."""
    iso = {"type": "string", "format": "date-time"}
    alias_id = {"type": "string",
                "pattern": "^[A-Za-z0-9._+-]{1,64}(@[A-Za-z0-9.-]{1,253})?$",
                "description": "an id such as k3x9qa, or local@domain at a custom domain"}
    uses_left = {"type": ["integer", "null"], "minimum": 0}
    alias_base = {
        "id": {"type": "string"},
        "address": {"type": "string"},
        "target": {"type": "string"},
        "created_at": iso,
        "expires_at": iso,
        "uses_left": uses_left,
        "replies": {"type": "boolean",
                    "description": "its owner may reply through it, from reply addresses at the "
                                   "alias's domain, the owner's address hidden"},
    }
    new_alias = {
        "type": "object",
        "required": list(alias_base) + ["token"],
        "properties": {**alias_base, "token": {"type": "string"}},
    }
    alias_view = {
        "type": "object",
        "required": list(alias_base) + ["delivered", "active"],
        "properties": {**alias_base, "delivered": {"type": "integer", "minimum": 0},
                       "active": {"type": "boolean"}},
    }
    target = {"type": "string", "format": "email", "minLength": 3,
              "maxLength": MAX_ADDRESS_OCTETS}
    order = {
        "type": "object",
        "additionalProperties": False,
        "required": ["target"],
        "properties": {
            "target": {**target, "description": "the real address mail is forwarded to"},
            "days": {"type": ["integer", "null"], "minimum": 1, "maximum": rules.max_days,
                     "description": f"lifetime in days; default {rules.default_days}"},
            "uses": {"type": ["integer", "null"], "minimum": 1, "maximum": rules.max_uses,
                     "description": "messages the alias forwards; null: limited by time only"},
            "domain": {"type": ["string", "null"], "maxLength": 253,
                       "description": f"one of GET /api/v1/domains (default {rules.primary_domain})"
                                      ", or your verified custom domain, with its domain token "
                                      "as Authorization: Bearer; any other is a 422 naming the "
                                      "field"},
            "local_part": {"type": ["string", "null"], "minLength": 1, "maxLength": 64,
                           "pattern": LOCAL_PART_PATTERN,
                           "description": "at your custom domain only (else a 422): the part "
                                          "before the @, lower-cased; role names such as "
                                          "postmaster are refused, and so is any name "
                                          "starting with r= (reply addresses); default random"},
            "replies": {"type": "boolean", "default": False,
                        "description": "let the owner reply through the alias: each sender is "
                                       "shown as a reply address at the alias's domain, and "
                                       "a reply to it leaves from the alias, the owner's "
                                       "address hidden; default false"},
        },
    }
    legacy_order = {
        "type": "object",
        "additionalProperties": False,
        "required": ["target"],
        "properties": {
            "target": target,
            "days": {"type": ["integer", "null"], "minimum": 0, "maximum": rules.max_days},
            "max-usage": {"type": ["integer", "null"], "minimum": 0, "maximum": rules.max_uses},
        },
    }
    legacy_alias = {
        "type": "object",
        "required": ["aid", "address", "target", "days", "max_usage", "valid_from",
                     "valid_until", "token"],
        "properties": {
            "aid": {"type": "string"}, "address": {"type": "string"},
            "target": {"type": "string"}, "days": {"type": "integer"},
            "max_usage": {"type": ["integer", "null"]}, "valid_from": iso, "valid_until": iso,
            "token": {"type": "string"},
        },
    }
    bearer = [{"token": []}]
    unavailable = _error_response("the alias store is unreachable; retry later")
    not_found = _error_response("no alias with this id and token (also for a wrong or no token)")
    rbl_listed = _error_response("the client address is on a DNS block list (`rbl-listed`)")
    rate_limited = {**_error_response("too many new aliases from this client or for this target "
                                      "(`rate-limited`); `retry_after` says when to try again"),
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}}
    id_param = {"name": "alias_id", "in": "path", "required": True, "schema": alias_id}
    domain_param = {"name": "domain", "in": "path", "required": True,
                    "schema": {"type": "string", "maxLength": 253}}
    domain_not_found = _error_response("no domain or registration of this name with this token "
                                       "(also for a wrong or no token)")
    taken = _error_response("the domain is already verified by its owner (`domain-taken`)")

    def private(schema: str, text: str) -> dict[str, Any]:
        return {"description": text, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "tempalias", "version": __version__,
                 "description": "Temporary email aliases that forward until a count or a date "
                                "runs out."},
        "paths": {
            "/api/v1/aliases": {
                "post": {
                    "summary": "Create an alias",
                    "operationId": "createAlias",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
                    "responses": {
                        "201": {"description": "created; the token is shown this once",
                                "headers": {"Location": {"schema": {"type": "string"}}},
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/NewAlias"}}}},
                        "400": _error_response("the body is not JSON"),
                        "413": _error_response("the body is too large"),
                        "415": _error_response("the body is not application/json"),
                        "422": _error_response("a field is invalid; `field` names it (a "
                                               "`domain` not offered here among them)"),
                        "404": _error_response("a custom domain without its owner's domain "
                                               "token"),
                        "409": _error_response("the local part is, or was, an alias at this "
                                               "domain (`local-part-taken`), or the domain is "
                                               "suspended (`domain-suspended`)"),
                        "403": rbl_listed,
                        "429": rate_limited,
                        "503": unavailable,
                    },
                },
            },
            "/api/v1/aliases/{alias_id}": {
                "parameters": [id_param],
                "get": {
                    "summary": "Show an alias to its owner",
                    "operationId": "getAlias",
                    "security": bearer,
                    "responses": {
                        "200": {"description": "the alias", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/AliasView"}}}},
                        "404": not_found,
                        "503": unavailable,
                    },
                },
                "delete": {
                    "summary": "Revoke an alias and erase its data",
                    "operationId": "revokeAlias",
                    "security": bearer,
                    "responses": {"204": {"description": "revoked and erased"},
                                  "404": not_found, "503": unavailable},
                },
            },
            "/api/v1/domains": {
                "get": {
                    "summary": "The domains offered for new aliases",
                    "operationId": "listDomains",
                    "responses": {"200": private("DomainList", "the operator's domains")},
                },
                "post": {
                    "summary": "Register a custom domain",
                    "description": "Publish the records of the answer, then verify. Several "
                                   "people may register one domain: the first to verify wins, "
                                   "the others' registrations are erased; unverified ones "
                                   "lapse after 7 days.",
                    "operationId": "registerDomain",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/DomainOrder"}}}},
                    "responses": {
                        "201": {**private("NewDomain", "registered; the token is shown this "
                                                       "once"),
                                "headers": {"Location": {"schema": {"type": "string"}}}},
                        "400": _error_response("the body is not JSON"),
                        "413": _error_response("the body is too large"),
                        "415": _error_response("the body is not application/json"),
                        "422": _error_response("not a domain that can be registered here; "
                                               "`field` names it"),
                        "409": taken,
                        "403": rbl_listed,
                        "429": {**rate_limited, "description": "too many registrations from "
                                "this client (`rate-limited`)"},
                        "503": unavailable,
                    },
                },
            },
            "/api/v1/domains/{domain}": {
                "parameters": [domain_param],
                "get": {
                    "summary": "Show a domain, or a registration, to its owner",
                    "operationId": "getDomain",
                    "security": bearer,
                    "responses": {"200": private("DomainView", "the domain"),
                                  "404": domain_not_found, "503": unavailable},
                },
                "delete": {
                    "summary": "Erase a domain with every alias in it, or withdraw a "
                               "registration",
                    "operationId": "removeDomain",
                    "security": bearer,
                    "responses": {"204": {"description": "erased"},
                                  "404": domain_not_found, "503": unavailable},
                },
            },
            "/api/v1/domains/{domain}/verify": {
                "parameters": [domain_param],
                "post": {
                    "summary": "Look the domain's records up; found, it is active",
                    "operationId": "verifyDomain",
                    "security": bearer,
                    "responses": {
                        "200": private("DomainStatus", "the records are in place: active"),
                        "404": domain_not_found,
                        "409": private("DnsProblems", "a record is missing or wrong "
                                                      "(`dns-not-ready`); `problems` names each"),
                        "429": {**rate_limited, "description": "too many checks of this "
                                "registration (TEMPALIAS_DOMAIN_VERIFY_RATE)"},
                        "503": {"description": "DNS did not answer every look-up "
                                               "(`dns-unavailable`): nothing is known to be "
                                               "wrong; try again after Retry-After (or the "
                                               "store is unreachable)",
                                "content": {"application/json": {"schema": {"anyOf": [
                                    {"$ref": "#/components/schemas/DnsProblems"},
                                    {"$ref": "#/components/schemas/Error"}]}}},
                                "headers": {"Retry-After": {
                                    "schema": {"type": "integer", "minimum": 1}}}},
                    },
                },
            },
            "/aliases": {
                "post": {
                    "summary": "Create an alias (the original service's API)",
                    "operationId": "legacyCreateAlias",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/LegacyOrder"}}}},
                    "responses": {
                        "200": {"description": "created", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/LegacyAlias"}}}},
                        "400": _error_response("invalid request or data"),
                        "413": _error_response("the body is too large"),
                        "403": rbl_listed,
                        "429": rate_limited,
                        "503": unavailable,
                    },
                },
                "get": {
                    "summary": "Create an alias through JSONP (the original service's API)",
                    "operationId": "legacyCreateAliasJsonp",
                    "parameters": [
                        {"name": "callback", "in": "query", "required": True,
                         "schema": {"type": "string", "pattern": "^[A-Za-z_$][A-Za-z0-9_$]{0,63}$"}},
                        {"name": "target", "in": "query", "required": True,
                         "schema": {"type": "string"}},
                        {"name": "days", "in": "query", "schema": {"type": "string"}},
                        {"name": "max-usage", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "callback({...}); with the alias or an error",
                                "content": {"text/javascript": {"schema": {"type": "string"}}}},
                        "400": _error_response("the callback is not a JavaScript identifier"),
                        "405": _error_response("no callback given"),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and Redis reachability",
                    "operationId": "health",
                    "responses": {
                        "200": {"description": "ready", "content": {"application/json": {
                            "schema": {"type": "object", "required": ["status"],
                                       "properties": {"status": {"type": "string"}}}}}},
                        "503": unavailable,
                    },
                },
            },
        },
        "components": {
            "schemas": {"Error": ERROR, "Order": order, "NewAlias": new_alias,
                        "AliasView": alias_view, "LegacyOrder": legacy_order,
                        "LegacyAlias": legacy_alias, **_domain_schemas(iso)},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
