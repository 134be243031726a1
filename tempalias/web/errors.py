"""JSON errors for the API: one exception type, one body shape, no HTML ever."""

from __future__ import annotations

import json
import logging

from bottle import HTTPError, HTTPResponse

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"


class ApiError(HTTPResponse):
    """Raise it anywhere in a route: the client gets ``{"error", "description"}`` and the status."""

    def __init__(self, status: int, error: str, description: str, **extra) -> None:
        body = {"error": error, "description": description, **extra}
        super().__init__(json.dumps(body), status=status, headers={"Content-Type": JSON_TYPE})
        self.error = error


_DEFAULT_CODES = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    500: "internal-error",
}


def json_error_handler(error: HTTPError) -> str:
    """Bottle's own errors (no route, wrong method, exceptions) rendered as our JSON body."""
    from bottle import response

    if error.status_code >= 500:
        log.error("unhandled error: %s", error.exception or error.body, exc_info=error.exception)
        description = "the server failed to handle this request"
    elif error.status_code == 404:
        description = "no such resource"
    elif error.status_code == 405:
        description = "this method is not allowed here"
    else:
        description = str(error.body) if error.body else "the request was not understood"
    response.content_type = JSON_TYPE
    code = _DEFAULT_CODES.get(error.status_code, "error")
    return json.dumps({"error": code, "description": description})
