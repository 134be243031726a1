"""The web page and the bookmarklet: static files from ``static/``, plus one generated module.

The page is plain files that talk to the public REST API like any other client. The server only
generates ``/config.js``, because the page cannot know by itself what the server enforces (domain,
limits) nor the public URL it is reached at (which the bookmarklet must carry to other sites).
``/bookmarklet.js`` is served at a stable root path with CORS, since third-party pages load it.
``/extension/tempalias-<browser>.zip`` is the browser extension made for this server's public URL
(``tempalias/webextension.py``), built in memory once per URL.
"""

from __future__ import annotations

import functools
import ipaddress
import json

from bottle import Bottle, HTTPResponse, request, response, static_file

from tempalias.aliases import AliasRules
from tempalias.bundled import bundled_directory
from tempalias.config import HttpSettings, Listen
from tempalias import webextension

# In a wheel, the package tempalias/static; in a checkout, static/ beside tempalias/.
STATIC_ROOT = bundled_directory("static")

# The page and its settings must change together with a deploy: revalidate every time (Bottle
# answers 304 from Last-Modified/ETag). Assets may be reused for a short while without asking.
REVALIDATE = "no-cache"
ASSET_CACHE = "public, max-age=600"
JS_TYPE = "text/javascript; charset=utf-8"
ZIP_TYPE = "application/zip"
# The page holds management tokens: nothing but its own files may run, load or receive anything.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# On every answer of these routes, not only "/": the page is also at /static/index.html, and any
# file of ours opened as a document must be held to the same. The manage view keeps its token in
# the URL fragment; no Referer may carry the page's URL away.
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def configured_public_url(settings: HttpSettings) -> str | None:
    """Where people reach us as far as the settings alone say: ``public_url`` if set, else
    ``http://<http_listen>`` when that names a host and a port; None when only a request can tell
    (a wildcard address, port 0)."""
    if settings.public_url:
        return settings.public_url
    listen = settings.http_listen
    if _is_unspecified(listen.host) or not listen.port:
        return None
    return f"http://{listen}"


def public_url(settings: HttpSettings, environ: dict) -> str:
    """Where people reach us: ``public_url`` if set, else ``http://<http_listen>``.

    ``http_listen`` may say port 0 (tests): the bound port, as the WSGI server reports it, fills
    in. A wildcard address names no host: the request's Host header does.
    """
    configured = configured_public_url(settings)
    if configured:
        return configured
    listen = settings.http_listen
    if _is_unspecified(listen.host):
        return f"http://{environ.get('HTTP_HOST') or 'localhost'}"
    port = listen.port or int(environ.get("SERVER_PORT") or 80)
    return f"http://{Listen(listen.host, port)}"


def page_settings(rules: AliasRules, base_url: str) -> dict:
    """What the page shows and checks before it submits; the API enforces the same numbers."""
    return {
        "publicUrl": base_url,
        "domain": rules.primary_domain,
        "maxDays": rules.max_days,
        "maxUses": rules.max_uses,
        "defaultDays": rules.default_days,
    }


def _static(path: str, cache_control: str, content_type: str | None = None) -> HTTPResponse:
    answer = static_file(path, root=STATIC_ROOT, mimetype=content_type or True,
                         charset="utf-8")
    for name, value in SECURITY_HEADERS.items():
        answer.set_header(name, value)
    if answer.status_code in (200, 304):
        answer.set_header("Cache-Control", cache_control)
    return answer


def _generated(content_type: str) -> None:
    """The headers of an answer made here, not read from static/: it changes with a deploy or the
    settings, so it is revalidated every time, and it is held to the page's security headers."""
    response.content_type = content_type
    response.set_header("Cache-Control", REVALIDATE)
    for name, value in SECURITY_HEADERS.items():
        response.set_header(name, value)


@functools.lru_cache(maxsize=8)  # bounded: without a public URL, the Host header names the URL
def _extension_zip(base_url: str, shown: str, browser: str) -> bytes:
    files = webextension.extension_files(base_url, json.loads(shown), browser)
    return webextension.zip_bytes(files)


def install(app: Bottle, settings: HttpSettings, rules: AliasRules) -> None:
    @app.get("/")
    def index():
        return _static("index.html", REVALIDATE)

    @app.get("/config.js")
    def page_config():
        shown = page_settings(rules, public_url(settings, request.environ))
        _generated(JS_TYPE)
        return ("// Generated by tempalias: what this server enforces and where it lives.\n"
                f"export const settings = Object.freeze({json.dumps(shown, indent=2)});\n")

    @app.get("/bookmarklet.js")
    def bookmarklet():
        answer = _static("bookmarklet.js", ASSET_CACHE, JS_TYPE)
        answer.set_header("Access-Control-Allow-Origin", "*")
        return answer

    @app.get("/extension/tempalias-<browser:re:chromium|firefox>.zip")
    def extension_zip(browser: str):
        base = public_url(settings, request.environ)
        body = _extension_zip(base, json.dumps(page_settings(rules, base)), browser)
        _generated(ZIP_TYPE)
        response.set_header("Content-Disposition",
                            f'attachment; filename="tempalias-{browser}.zip"')
        return body

    @app.get("/static/<path:path>")
    def static(path: str):
        content_type = JS_TYPE if path.endswith(".js") else None
        return _static(path, ASSET_CACHE, content_type)
