"""The REST API under /api/v1, plus /healthz: an adapter; ``AliasService`` does the work."""

from __future__ import annotations

import json

from bottle import Bottle, request, response

from urllib.parse import quote

from tempalias import metrics
from tempalias.addresses import domain_to_unicode
from tempalias.aliases import (AliasNotFound, AliasService, AliasTaken, CreationRefused,
                               DomainNotFound, DomainSuspended, InvalidOrder, iso_utc)
from tempalias.config import HttpSettings, IPNetwork
from tempalias.web.errors import JSON_TYPE, ApiError, refusal_error
from tempalias.web.jsonbody import read_json_object
from tempalias.web.openapi import openapi_document
from tempalias.web.orders import place_order

NOT_FOUND = ("not-found", "no alias with this id and token")
DOMAIN_NOT_FOUND = ("not-found", "no domain of this name with this token")


def bearer_token() -> str | None:
    """The token of ``Authorization: Bearer``, or None."""
    scheme, _, token = request.get_header("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _bearer_token() -> str:
    token = bearer_token()
    if token is None:
        raise ApiError(404, *NOT_FOUND)  # exactly like an unknown id: nothing is learnt
    return token


def private_json(body: dict) -> str:
    """An alias's or a domain's JSON, for its owner's eyes only: no cache may keep it."""
    response.content_type = JSON_TYPE
    response.set_header("Cache-Control", "no-store")
    return json.dumps(body)


def resource_path(prefix: str, name: str) -> str:
    """A resource's path: its name percent-encoded where a path needs it ('@' stays)."""
    return f"{prefix}/{quote(name, safe='@')}"


def install(app: Bottle, settings: HttpSettings, aliases: AliasService,
            trusted_proxies: tuple[IPNetwork, ...]) -> None:
    document = json.dumps(openapi_document(aliases.rules))

    @app.post("/api/v1/aliases")
    def create_alias():
        fields = read_json_object(settings.http_max_body)
        try:
            created = place_order(aliases, fields, trusted_proxies, domain_token=bearer_token())
        except InvalidOrder as exc:
            raise ApiError(422, "invalid-field", exc.description, field=exc.field) from None
        except CreationRefused as exc:
            raise refusal_error(exc.refusal) from None
        except DomainNotFound:
            raise ApiError(404, *DOMAIN_NOT_FOUND) from None
        except AliasTaken as exc:
            raise ApiError(409, "local-part-taken",
                           f"{_shown_id(str(exc.args[0]))} is, or was, an alias at this domain; "
                           "choose another local part", field="local_part") from None
        except DomainSuspended as exc:
            raise ApiError(409, "domain-suspended",
                           f"{domain_to_unicode(exc.domain or '')} is suspended since "
                           f"{iso_utc(exc.since_ms)}: its DNS records are gone; aliases can be "
                           "made there again once they are back") from None
        response.status = 201
        response.set_header("Location", resource_path("/api/v1/aliases", created.view.alias.id))
        return private_json({**created.view.summary(), "token": created.token})

    @app.get("/api/v1/aliases/<alias_id:path>")
    def show_alias(alias_id: str):
        try:
            view = aliases.show(alias_id, _bearer_token())
        except AliasNotFound:
            metrics.alias_looked_up("api", found=False)
            raise ApiError(404, *NOT_FOUND) from None
        metrics.alias_looked_up("api", found=True)
        return private_json({**view.summary(), "delivered": view.alias.delivered,
                              "active": view.active})

    @app.delete("/api/v1/aliases/<alias_id:path>")
    def revoke_alias(alias_id: str):
        try:
            aliases.revoke(alias_id, _bearer_token())
        except AliasNotFound:
            metrics.alias_revoked("api", found=False)
            raise ApiError(404, *NOT_FOUND) from None
        metrics.alias_revoked("api", found=True)
        response.status = 204
        return b""

    @app.get("/api/openapi.json")
    def openapi():
        response.content_type = JSON_TYPE
        return document

    @app.get("/healthz")
    def healthz():
        aliases.ping()  # StoreUnavailable becomes a 503 in the app's error funnel
        return private_json({"status": "ok"})


def _shown_id(alias_id: str) -> str:
    local, _, domain = alias_id.rpartition("@")
    return f"{local}@{domain_to_unicode(domain)}" if local else alias_id
