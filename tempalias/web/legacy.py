"""The original 2010 service's public API, so that its existing clients keep working.

``POST /aliases`` takes ``{"target", "days", "max-usage"}`` and answers the original shape;
``GET /aliases?callback=fn&...`` answers JSONP with status 200 even for errors, because a
``<script>`` tag cannot see a status. Unlike the original, an invalid request never creates an
alias, a callback name must be a plain JavaScript identifier path, and the POST's ``days`` and
``max-usage`` are numbers (0 or null: unset), as its OpenAPI schema says; the original's own page
sent numbers, and only the JSONP query takes digit strings.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from bottle import Bottle, request, response

from tempalias.abuse import AbusePolicy
from tempalias.config import Config
from tempalias.store import MS_PER_DAY, AliasStore, StoreUnavailable
from tempalias.web.errors import JSON_TYPE, ApiError, refusal_body, refusal_status
from tempalias.web.guard import creation_refusal
from tempalias.web.jsonbody import read_json_object
from tempalias.web.present import legacy_alias_json
from tempalias.web.validation import FieldError, validate_order

log = logging.getLogger(__name__)

_CALLBACK = re.compile(r"^[A-Za-z_$][\w$]{0,63}(?:\.[A-Za-z_$][\w$]{0,63}){0,7}$", re.ASCII)
_QUERY_FIELDS = ("target", "days", "max-usage")


class LegacyError(Exception):
    def __init__(self, status: int, error: str, description: str, **extra: Any) -> None:
        super().__init__(description)
        self.status, self.body = status, {"error": error, "description": description, **extra}


def _create(config: Config, store: AliasStore, policy: AbusePolicy,
            fields: dict[str, Any], query: bool) -> dict[str, Any]:
    try:
        order = validate_order(config, fields, uses_key="max-usage", legacy=True, query=query)
    except FieldError as exc:
        raise LegacyError(400, "invalid-data", exc.description) from None
    refusal = creation_refusal(policy, order.target)
    if refusal:
        raise LegacyError(refusal_status(refusal), **refusal_body(refusal))
    try:
        created = store.create(order.target, order.days * MS_PER_DAY, order.uses)
    except StoreUnavailable:
        raise LegacyError(503, "service-unavailable",
                          "the alias store is unreachable; try again shortly") from None
    log.info("alias %s created via the legacy API (days=%d uses=%s)",
             created.alias.id, order.days, order.uses)
    return legacy_alias_json(config, created.alias, order.days, created.token)


def install(app: Bottle, config: Config, store: AliasStore, policy: AbusePolicy) -> None:
    @app.post("/aliases")
    def legacy_create():
        fields = read_json_object(config.http_max_body, legacy=True)
        try:
            body = _create(config, store, policy, fields, query=False)
        except LegacyError as exc:
            error = ApiError(exc.status, **exc.body)
            if "retry_after" in exc.body:
                error.set_header("Retry-After", str(exc.body["retry_after"]))
            raise error from None
        response.content_type = JSON_TYPE
        response.set_header("Cache-Control", "no-store")
        return json.dumps(body)

    @app.get("/aliases")
    def legacy_jsonp():
        callback = request.query.getunicode("callback")
        if not callback:
            raise ApiError(405, "method-not-allowed",
                           "/aliases only takes POST unless the JSONP callback parameter is set")
        if not _CALLBACK.match(callback):
            raise ApiError(400, "invalid-callback",
                           "callback must be a JavaScript identifier such as handleAlias")
        unknown = [name for name in request.query if name not in _QUERY_FIELDS + ("callback", "_")]
        fields: dict[str, Any] = {name: request.query.getunicode(name) for name in _QUERY_FIELDS
                                  if name in request.query}
        fields.update({name: None for name in unknown})
        try:
            body = _create(config, store, policy, fields, query=True)
        except LegacyError as exc:
            body = exc.body  # JSONP cannot see statuses: 200, with the error in the payload
        response.content_type = "text/javascript; charset=utf-8"
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("Cache-Control", "no-store")
        # The leading comment defeats content-sniffing attacks that start the body with the callback.
        return f"/**/{callback}({json.dumps(body)});"
