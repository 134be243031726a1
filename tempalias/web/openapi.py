"""The OpenAPI 3.1 description of every public route, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from tempalias import __version__
from tempalias.addresses import MAX_ADDRESS_OCTETS
from tempalias.aliases import AliasRules

ERROR = {
    "type": "object",
    "required": ["error", "description"],
    "properties": {
        "error": {"type": "string"},
        "description": {"type": "string"},
        "field": {"type": "string"},
    },
}


def _error_response(text: str) -> dict[str, Any]:
    return {"description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(rules: AliasRules) -> dict[str, Any]:
    """The document, with the limits of an order as ``rules`` set them."""
    iso = {"type": "string", "format": "date-time"}
    alias_id = {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}
    uses_left = {"type": ["integer", "null"], "minimum": 0}
    alias_base = {
        "id": {"type": "string"},
        "address": {"type": "string"},
        "target": {"type": "string"},
        "created_at": iso,
        "expires_at": iso,
        "uses_left": uses_left,
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
                        "422": _error_response("a field is invalid; `field` names it"),
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
                        "LegacyAlias": legacy_alias},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
