"""The HTTP side of the abuse policy: who the client is, and the refusal as a JSON error."""

from __future__ import annotations

from bottle import request

from tempalias.abuse import AbusePolicy, Refusal, client_ip
from tempalias.web.errors import ApiError, refusal_body, refusal_status


def creation_refusal(policy: AbusePolicy, target: str) -> Refusal | None:
    """Ask the policy about creating an alias for ``target`` on this request's behalf."""
    ip = client_ip(request.environ.get("REMOTE_ADDR"), request.environ.get("HTTP_X_FORWARDED_FOR"),
                   policy.config.trusted_proxies)
    return policy.on_alias_creation(ip, target)


def refusal_error(refusal: Refusal) -> ApiError:
    """403 rbl-listed, 429 rate-limited or 503 rbl-unavailable, with Retry-After when it helps."""
    body = refusal_body(refusal)
    error = ApiError(refusal_status(refusal), body.pop("error"), body.pop("description"), **body)
    if refusal.retry_after is not None:
        error.set_header("Retry-After", str(refusal.retry_after))
    return error
