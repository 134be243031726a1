"""JSON errors for the API: one exception type, one body shape, no HTML ever.

The use cases' exceptions (``tempalias/aliases.py``) know nothing of HTTP; the statuses they
become are decided here: ``REFUSAL_STATUS`` for the abuse policy's verdicts, 503 for the store.
"""

from __future__ import annotations

import json
import logging

from bottle import HTTPError, HTTPResponse

from tempalias.abuse import Refusal

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
STORE_RETRY_AFTER_SECONDS = 5

# The policy's verdict by kind: a listed client is forbidden, a limited one told to slow down,
# and a block list that cannot be asked (failing closed) makes the service unavailable to it;
# so does a kind this table does not know yet.
REFUSAL_STATUS = {"rbl-listed": 403, "rate-limited": 429, "rbl-unavailable": 503}


class ApiError(HTTPResponse):
    """Raise it anywhere in a route: the client gets ``{"error", "description"}`` and the status."""

    def __init__(self, status: int, error: str, description: str, **extra) -> None:
        body = {"error": error, "description": description, **extra}
        super().__init__(json.dumps(body), status=status, headers={"Content-Type": JSON_TYPE})
        self.error = error
        self.payload = body  # for a door that answers with the body alone (JSONP)


def refusal_error(refusal: Refusal) -> ApiError:
    """403 rbl-listed, 429 rate-limited or 503 rbl-unavailable, with Retry-After when it helps."""
    extra = {} if refusal.retry_after is None else {"retry_after": refusal.retry_after}
    error = ApiError(REFUSAL_STATUS.get(refusal.kind, 503), refusal.kind, refusal.text, **extra)
    if refusal.retry_after is not None:
        error.set_header("Retry-After", str(refusal.retry_after))
    return error


def store_unavailable_error() -> ApiError:
    error = ApiError(503, "service-unavailable", "the alias store is unreachable; try again shortly")
    error.set_header("Retry-After", str(STORE_RETRY_AFTER_SECONDS))
    return error


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
