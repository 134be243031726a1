"""The WSGI application: ``create_app(settings, aliases, trusted_proxies, domains)`` builds a
fresh app.

Routes live in their own modules (api, domains, legacy, frontend) and are adapters: they read a
request, ask the ``AliasService`` or ``DomainService`` handed to them (never a global), and answer. They get the http settings,
the proxies whose ``X-Forwarded-For`` names the client, and the rules of an order through the
service (``aliases.rules``: the domain and limits the page and the OpenAPI document show). Every
error leaves as JSON through one funnel: ApiError for what a route refuses, the StoreUnavailable
plugin for Redis trouble (503), and the default handler for Bottle's own 404/405/500.
"""

from __future__ import annotations

import functools
import logging
import time

from bottle import Bottle, HTTPResponse, JSONPlugin, request, response

from tempalias import metrics

from tempalias.aliases import AliasService, StoreUnavailable
from tempalias.config import HttpSettings, IPNetwork
from tempalias.domains import DomainService
from tempalias.web import api, domains as domain_routes, frontend, legacy
from tempalias.web.errors import ApiError, json_error_handler, store_unavailable_error

log = logging.getLogger(__name__)

CORS_PREFIXES = ("/api/", "/aliases")


def _store_unavailable_is_503(callback):
    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except StoreUnavailable as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise store_unavailable_error() from None

    return wrapper


def _cors_headers() -> None:
    """Any site may call the API (no credentials are involved): pages, extensions, bookmarklet."""
    if request.path.startswith(CORS_PREFIXES):
        response.set_header("Access-Control-Allow-Origin", "*")
        response.set_header("Access-Control-Expose-Headers", "Location, Retry-After")


def _slow_body_is_408(callback):
    """The socket timeout (service.py) fired while a route read the body: a slow client."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except TimeoutError:
            log.info("%s %s: client too slow sending the body", request.method, request.path)
            error = ApiError(408, "request-timeout", "the request body came too slowly")
            error.set_header("Connection", "close")
            raise error from None

    return wrapper


class _Timed:
    """Bottle plugin (api 2, so it sees the route): each routed request's time in its route,
    labelled by the route's rule (``/api/v1/aliases/<alias_id:path>``), never the path, which
    would name an alias. Installed first, so it is outermost and sees the final status."""

    name = "timed"
    api = 2

    def apply(self, callback, route):
        rule, method = route.rule, route.method

        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            started, status = time.perf_counter(), 500
            try:
                result = callback(*args, **kwargs)
                status = response.status_code
                return result
            except HTTPResponse as exc:  # HTTPError and ApiError too
                status = exc.status_code
                raise
            finally:
                metrics.http_request(rule, method, status, time.perf_counter() - started)

        return wrapper


def create_app(settings: HttpSettings, aliases: AliasService,
               trusted_proxies: tuple[IPNetwork, ...],
               domains: DomainService | None = None) -> Bottle:
    """``settings``: the http section of the Config; ``trusted_proxies``: the abuse setting;
    ``domains``: the custom-domain use cases (None: only the list of our own domains)."""
    app = Bottle()  # catchall is on by default: a failing handler is a JSON 500, not a crash
    # Handlers write their own JSON (one encoder, one content type); Bottle 0.13's autojson
    # keyword is deprecated and no longer turns the dict filter off, so it is taken out here.
    app.uninstall(JSONPlugin)
    app.default_error_handler = json_error_handler
    app.install(_Timed())
    app.install(_store_unavailable_is_503)
    app.install(_slow_body_is_408)
    app.add_hook("after_request", _cors_headers)

    @app.route("/api/v1/aliases", method="OPTIONS")
    @app.route("/api/v1/aliases/<alias_id:path>", method="OPTIONS")
    @app.route("/api/v1/domains", method="OPTIONS")
    @app.route("/api/v1/domains/<domain>", method="OPTIONS")
    @app.route("/api/v1/domains/<domain>/verify", method="OPTIONS")
    @app.route("/api/openapi.json", method="OPTIONS")
    @app.route("/aliases", method="OPTIONS")
    def preflight(alias_id: str = "", domain: str = ""):
        response.status = 204
        response.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
        response.set_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
        response.set_header("Access-Control-Max-Age", "86400")
        return b""

    api.install(app, settings, aliases, trusted_proxies)
    domain_routes.install(app, settings, aliases.rules, domains, trusted_proxies)
    legacy.install(app, settings, aliases, trusted_proxies)
    frontend.install(app, settings, aliases.rules)
    return app
