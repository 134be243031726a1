"""Reads a request body as a JSON object, within a size limit, with a specific error for each fault.

A body the client broke is its error, never a 500: each such fault is a 400 and one line at INFO
that names the fault, never the body (it holds a target address).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bottle import request

from tempalias.web.errors import ApiError

log = logging.getLogger(__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_body(limit: int) -> bytes:
    """At most ``limit`` bytes; a larger declared or actual body is a 413 before it is read."""
    declared = request.content_length
    if declared > limit:
        raise ApiError(413, "payload-too-large", f"the request body may be at most {limit} bytes")
    stream = request.environ["wsgi.input"]
    try:
        body = stream.read(limit + 1) if declared < 0 else stream.read(declared)
    except TimeoutError:
        raise  # a slow client: 408 (tempalias/web/__init__.py)
    except OSError:  # pywsgi: a broken chunk size, or the body ended early
        log.info("%s %s: the body's chunked encoding is broken or it ended early",
                 request.method, request.path)
        error = ApiError(400, "malformed-body",
                         "the request body ended early or its chunked encoding is broken")
        error.set_header("Connection", "close")  # where the next request starts is unknown
        raise error from None
    if len(body) > limit:
        raise ApiError(413, "payload-too-large", f"the request body may be at most {limit} bytes")
    return body


def read_json_object(limit: int, legacy: bool = False) -> dict[str, Any]:
    """``legacy`` answers as the original service did: 400 for every fault of the body."""
    media_type = request.content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(400 if legacy else 415,
                       "invalid-request-type" if legacy else "unsupported-media-type",
                       f"send the body as application/json, not {media_type or 'nothing'}")
    body = read_body(limit)
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "malformed-json", f"the body is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        log.info("%s %s: the JSON body is nested too deeply", request.method, request.path)
        raise ApiError(400, "malformed-json", "the body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400 if legacy else 422, "invalid-data" if legacy else "invalid-body",
                       "the body must be a JSON object")
    return data
