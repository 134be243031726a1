"""JSON errors for the API: one exception type, one body shape, no HTML ever.

The use cases' exceptions (``tempalias/aliases.py``) know nothing of HTTP; the statuses they
become are decided here: ``REFUSAL_STATUS`` for the abuse policy's verdicts, 503 for the store.
"""

from __future__ import annotations

import json
import logging

from bottle import HTTPError, HTTPResponse

from tempalias.abuse import RATE_LIMITED, RBL_LISTED, Refusal

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
STORE_RETRY_AFTER_SECONDS = 5

class ApiError(HTTPResponse):
    """Raise it anywhere in a route: the client gets ``{"error", "description"}`` and the status."""

    def __init__(self, status: int, error: str, description: str, /, **extra) -> None:
        body = {"error": error, "description": description, **extra}
        super().__init__(json.dumps(body), status=status, headers={"Content-Type": JSON_TYPE})
        self.error = error
        self.payload = body  # for a door that answers with the body alone (JSONP)


def store_unavailable_error() -> ApiError:
    error = ApiError(503, "service-unavailable", "the alias store is unreachable; try again shortly")
    error.set_header("Retry-After", str(STORE_RETRY_AFTER_SECONDS))
    return error


# The abuse policy's verdicts in HTTP words: 403 for a listed client, 429 over a limit, 503 when
# a block list could not be asked and the policy fails closed (and for a kind not known yet).
REFUSAL_STATUS = {RBL_LISTED: 403, RATE_LIMITED: 429}
REFUSAL_UNAVAILABLE_STATUS = 503
RATE_LIMIT_DESCRIPTIONS = {  # limit name -> the description; {retry} is filled in
    "create": "too many new aliases from your address; try again in {retry} s",
    "create-day": "too many new aliases from your address; try again in {retry} s",
    "create-target": "too many new aliases for this target address; try again in {retry} s",
    "domain-register": "too many domain registrations from your address; try again in {retry} s",
    "domain-alias": "this domain has had all the new aliases it may have today; "
                    "try again in {retry} s",
}
RBL_LISTED_DESCRIPTION = "{client} listed in {limit}"
RBL_UNAVAILABLE_DESCRIPTION = "cannot check {client} against block lists now; try again later"


def refusal_status(refusal: Refusal) -> int:
    return REFUSAL_STATUS.get(refusal.kind, REFUSAL_UNAVAILABLE_STATUS)


def refusal_body(refusal: Refusal) -> dict:
    """``{"error": kind, "description", "retry_after"}``, the body of every door's refusal."""
    if refusal.kind == RATE_LIMITED:
        text = RATE_LIMIT_DESCRIPTIONS[refusal.limit]
    elif refusal.kind == RBL_LISTED:
        text = RBL_LISTED_DESCRIPTION
    else:
        text = RBL_UNAVAILABLE_DESCRIPTION
    body: dict = {"error": refusal.kind, "description": text.format(
        client=refusal.client, limit=refusal.limit, retry=refusal.retry_after)}
    if refusal.retry_after is not None:
        body["retry_after"] = refusal.retry_after
    return body


def refusal_error(refusal: Refusal) -> ApiError:
    """403 rbl-listed, 429 rate-limited or 503 rbl-unavailable, with Retry-After when it helps."""
    body = refusal_body(refusal)
    error = ApiError(refusal_status(refusal), body.pop("error"), body.pop("description"), **body)
    if refusal.retry_after is not None:
        error.set_header("Retry-After", str(refusal.retry_after))
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
