"""The REST API under /api/v1, plus /healthz: routes only; the store does the work."""

from __future__ import annotations

import json
import logging

from bottle import Bottle, request, response

from tempalias.abuse import AbusePolicy
from tempalias.config import Config
from tempalias.store import MS_PER_DAY, AliasNotFound, AliasStore
from tempalias.web.errors import JSON_TYPE, ApiError
from tempalias.web.guard import creation_refusal, refusal_error
from tempalias.web.jsonbody import read_json_object
from tempalias.web.openapi import openapi_document
from tempalias.web.present import alias_json
from tempalias.web.validation import FieldError, validate_order

log = logging.getLogger(__name__)

NOT_FOUND = ("not-found", "no alias with this id and token")


def _bearer_token() -> str:
    header = request.get_header("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(404, *NOT_FOUND)  # exactly like an unknown id: nothing is learnt
    return token.strip()


def install(app: Bottle, config: Config, store: AliasStore, policy: AbusePolicy) -> None:
    document = json.dumps(openapi_document(config))

    @app.post("/api/v1/aliases")
    def create_alias():
        fields = read_json_object(config.http_max_body)
        try:
            order = validate_order(config, fields)
        except FieldError as exc:
            raise ApiError(422, "invalid-field", exc.description, field=exc.field) from None
        refusal = creation_refusal(policy, order.target)
        if refusal:
            raise refusal_error(refusal)
        created = store.create(order.target, order.days * MS_PER_DAY, order.uses)
        log.info("alias %s created (days=%d uses=%s)", created.alias.id, order.days, order.uses)
        body = alias_json(config, created.alias)
        body["token"] = created.token
        response.status = 201
        response.content_type = JSON_TYPE
        response.set_header("Location", f"/api/v1/aliases/{created.alias.id}")
        response.set_header("Cache-Control", "no-store")
        return json.dumps(body)

    @app.get("/api/v1/aliases/<alias_id>")
    def show_alias(alias_id: str):
        token = _bearer_token()
        try:
            alias = store.get(alias_id, token)
        except AliasNotFound:
            raise ApiError(404, *NOT_FOUND) from None
        body = alias_json(config, alias)
        body["delivered"] = alias.delivered
        body["active"] = alias.uses_left is None or alias.uses_left > 0
        response.content_type = JSON_TYPE
        response.set_header("Cache-Control", "no-store")
        return json.dumps(body)

    @app.delete("/api/v1/aliases/<alias_id>")
    def revoke_alias(alias_id: str):
        token = _bearer_token()
        try:
            store.revoke(alias_id, token)
        except AliasNotFound:
            raise ApiError(404, *NOT_FOUND) from None
        log.info("alias %s revoked by its owner", alias_id.lower())
        response.status = 204
        return b""

    @app.get("/api/openapi.json")
    def openapi():
        response.content_type = JSON_TYPE
        return document

    @app.get("/healthz")
    def healthz():
        store.ping()  # StoreUnavailable becomes a 503 in the app's error funnel
        response.content_type = JSON_TYPE
        response.set_header("Cache-Control", "no-store")
        return json.dumps({"status": "ok"})
