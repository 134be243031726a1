"""The REST API under /api/v1, plus /healthz: an adapter; ``AliasService`` does the work."""

from __future__ import annotations

import json

from bottle import Bottle, request, response

from tempalias.aliases import AliasNotFound, AliasService, CreationRefused, InvalidOrder
from tempalias.config import HttpSettings, IPNetwork
from tempalias.web.errors import JSON_TYPE, ApiError, refusal_error
from tempalias.web.jsonbody import read_json_object
from tempalias.web.openapi import openapi_document
from tempalias.web.orders import place_order

NOT_FOUND = ("not-found", "no alias with this id and token")


def _bearer_token() -> str:
    header = request.get_header("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(404, *NOT_FOUND)  # exactly like an unknown id: nothing is learnt
    return token.strip()


def _private_json(body: dict) -> str:
    """An alias's JSON, for its owner's eyes only: no cache may keep it."""
    response.content_type = JSON_TYPE
    response.set_header("Cache-Control", "no-store")
    return json.dumps(body)


def install(app: Bottle, settings: HttpSettings, aliases: AliasService,
            trusted_proxies: tuple[IPNetwork, ...]) -> None:
    document = json.dumps(openapi_document(aliases.rules))

    @app.post("/api/v1/aliases")
    def create_alias():
        fields = read_json_object(settings.http_max_body)
        try:
            created = place_order(aliases, fields, trusted_proxies)
        except InvalidOrder as exc:
            raise ApiError(422, "invalid-field", exc.description, field=exc.field) from None
        except CreationRefused as exc:
            raise refusal_error(exc.refusal) from None
        response.status = 201
        response.set_header("Location", f"/api/v1/aliases/{created.view.alias.id}")
        return _private_json({**created.view.summary(), "token": created.token})

    @app.get("/api/v1/aliases/<alias_id>")
    def show_alias(alias_id: str):
        try:
            view = aliases.show(alias_id, _bearer_token())
        except AliasNotFound:
            raise ApiError(404, *NOT_FOUND) from None
        return _private_json({**view.summary(), "delivered": view.alias.delivered,
                              "active": view.active})

    @app.delete("/api/v1/aliases/<alias_id>")
    def revoke_alias(alias_id: str):
        try:
            aliases.revoke(alias_id, _bearer_token())
        except AliasNotFound:
            raise ApiError(404, *NOT_FOUND) from None
        response.status = 204
        return b""

    @app.get("/api/openapi.json")
    def openapi():
        response.content_type = JSON_TYPE
        return document

    @app.get("/healthz")
    def healthz():
        aliases.ping()  # StoreUnavailable becomes a 503 in the app's error funnel
        return _private_json({"status": "ok"})
