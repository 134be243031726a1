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
import re
from typing import Any

from bottle import Bottle, request, response

from tempalias.aliases import (
    AliasService, Created, CreationRefused, InvalidOrder, StoreUnavailable, iso_utc)
from tempalias.config import HttpSettings, IPNetwork
from tempalias.web.errors import JSON_TYPE, ApiError, refusal_error, store_unavailable_error
from tempalias.web.jsonbody import read_json_object
from tempalias.web.orders import place_order

_CALLBACK = re.compile(r"^[A-Za-z_$][\w$]{0,63}(?:\.[A-Za-z_$][\w$]{0,63}){0,7}$", re.ASCII)
_QUERY_FIELDS = ("target", "days", "max-usage")


def legacy_alias_json(created: Created) -> dict[str, Any]:
    """The original service's shape (``aid``, ``valid_until``, ``max_usage``), plus the token."""
    alias = created.view.alias
    return {
        "aid": alias.id,
        "address": created.view.address,
        "target": alias.target,
        "days": created.days,
        "max_usage": alias.uses_left,
        "valid_from": iso_utc(alias.created_ms),
        "valid_until": iso_utc(alias.expires_ms),
        "token": created.token,
    }


def _create(aliases: AliasService, trusted_proxies: tuple[IPNetwork, ...], fields: dict[str, Any],
            query: bool) -> dict[str, Any]:
    """The alias in the original shape, or an ApiError with the original's error names."""
    try:
        created = place_order(aliases, fields, trusted_proxies, uses_key="max-usage",
                              legacy=True, query=query)
    except InvalidOrder as exc:
        raise ApiError(400, "invalid-data", exc.description) from None
    except CreationRefused as exc:
        raise refusal_error(exc.refusal) from None
    except StoreUnavailable:
        raise store_unavailable_error() from None
    return legacy_alias_json(created)


def install(app: Bottle, settings: HttpSettings, aliases: AliasService,
            trusted_proxies: tuple[IPNetwork, ...]) -> None:
    @app.post("/aliases")
    def legacy_create():
        fields = read_json_object(settings.http_max_body, legacy=True)
        body = _create(aliases, trusted_proxies, fields, query=False)
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
            body = _create(aliases, trusted_proxies, fields, query=True)
        except ApiError as exc:
            body = exc.payload  # JSONP cannot see statuses: 200, with the error in the payload
        response.content_type = "text/javascript; charset=utf-8"
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("Cache-Control", "no-store")
        # The leading comment defeats content-sniffing attacks that start the body with the callback.
        return f"/**/{callback}({json.dumps(body)});"
