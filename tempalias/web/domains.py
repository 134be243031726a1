"""The domain routes under /api/v1/domains: an adapter; ``DomainService`` does the work.

- ``GET /api/v1/domains``: the operator's domains offered for new aliases.
- ``POST /api/v1/domains`` ``{"domain"}``: a registration: ``201`` with the domain token (shown
  once) and the records to publish; ``409`` when the domain is already verified.
- ``POST /api/v1/domains/{domain}/verify``: look the records up: ``200 {"status": "active"}``;
  ``409 dns-not-ready`` with every record that is missing or wrong; ``503 dns-unavailable`` with
  ``Retry-After`` when DNS did not answer (nothing is known to be wrong: try again).
- ``GET`` and ``DELETE /api/v1/domains/{domain}``: the domain, or the registration, as its owner
  sees it; erase it with every alias in it, or withdraw the registration.

Every route but the list takes the domain token as ``Authorization: Bearer``; a missing or wrong
token is a ``404``, exactly as an unknown domain is.
"""

from __future__ import annotations

import json

from bottle import Bottle, response

from tempalias.addresses import domain_to_unicode
from tempalias.aliases import AliasRules, CreationRefused, InvalidOrder
from tempalias.config import HttpSettings, IPNetwork
from tempalias.domains import DomainNotFound, DomainService, DomainTaken
from tempalias.web.api import DOMAIN_NOT_FOUND, bearer_token, private_json, resource_path
from tempalias.web.errors import JSON_TYPE, ApiError, refusal_error
from tempalias.web.jsonbody import read_json_object
from tempalias.web.orders import requesting_client

DNS_RETRY_AFTER_SECONDS = 30
REGISTRATION_FIELDS = ("domain",)


def _owner_token() -> str:
    token = bearer_token()
    if token is None:
        raise ApiError(404, *DOMAIN_NOT_FOUND)  # as an unknown domain: nothing is learnt
    return token


def install(app: Bottle, settings: HttpSettings, rules: AliasRules,
            domains: DomainService | None, trusted_proxies: tuple[IPNetwork, ...]) -> None:
    offered = json.dumps({"domains": [domain_to_unicode(d) for d in rules.domains]})

    @app.get("/api/v1/domains")
    def list_domains():
        response.content_type = JSON_TYPE
        return offered

    if domains is None:
        return

    @app.post("/api/v1/domains")
    def register_domain():
        fields = read_json_object(settings.http_max_body)
        for name in fields:
            if name not in REGISTRATION_FIELDS:
                raise ApiError(422, "invalid-field", f"{name} is not a known field; known "
                               "fields: " + ", ".join(REGISTRATION_FIELDS), field=name)
        if "domain" not in fields:
            raise ApiError(422, "invalid-field", "domain is required", field="domain")
        try:
            registration = domains.register(fields["domain"], requesting_client(trusted_proxies))
        except InvalidOrder as exc:
            raise ApiError(422, "invalid-field", exc.description, field=exc.field) from None
        except CreationRefused as exc:
            raise refusal_error(exc.refusal) from None
        except DomainTaken:
            raise ApiError(409, "domain-taken", f"{domain_to_unicode(str(fields['domain']))} is "
                           "already verified by its owner", field="domain") from None
        response.status = 201
        response.set_header("Location", resource_path("/api/v1/domains", registration.domain))
        return private_json(registration.summary())

    @app.post("/api/v1/domains/<domain>/verify")
    def verify_domain(domain: str):
        try:
            result = domains.verify(domain, _owner_token())
        except DomainNotFound:
            raise ApiError(404, *DOMAIN_NOT_FOUND) from None
        shown = domain_to_unicode(result.domain)
        if result.ok:
            return private_json({"domain": shown, "status": result.status})
        if result.transient:
            error = ApiError(503, "dns-unavailable",
                             f"DNS did not answer every look-up for {shown}; nothing is known to "
                             "be wrong with its records: try again shortly",
                             status=result.status, problems=list(result.problems))
            error.set_header("Retry-After", str(DNS_RETRY_AFTER_SECONDS))
            error.set_header("Cache-Control", "no-store")
            raise error
        raise ApiError(409, "dns-not-ready",
                       f"the DNS records of {shown} are not all in place yet: "
                       + "; ".join(result.problems),
                       status=result.status, problems=list(result.problems))

    @app.get("/api/v1/domains/<domain>")
    def show_domain(domain: str):
        try:
            view = domains.show(domain, _owner_token())
        except DomainNotFound:
            raise ApiError(404, *DOMAIN_NOT_FOUND) from None
        return private_json(view.summary())

    @app.delete("/api/v1/domains/<domain>")
    def remove_domain(domain: str):
        try:
            domains.remove(domain, _owner_token())
        except DomainNotFound:
            raise ApiError(404, *DOMAIN_NOT_FOUND) from None
        response.status = 204
        return b""
