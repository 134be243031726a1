"""An alias order as the HTTP doors receive it, placed with ``AliasService.create``.

What a valid order is, the service says (``tempalias/aliases.py``); this knows only the wire:
which fields a body or query may carry, JSON's one number type, a query string's text, and the
original API's 0 for "unset". A value it cannot read passes on as it came, for the service to
refuse with the field's name as this door spells it. The client is the peer, or the client a
trusted proxy names (``abuse.client_ip``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bottle import request

from tempalias import metrics
from tempalias.abuse import client_ip
from tempalias.aliases import AliasService, Created, InvalidOrder
from tempalias.config import IPNetwork


@dataclass(frozen=True)
class OrderFields:
    target: Any
    days: Any
    uses: Any
    domain: Any = None
    local_part: Any = None
    replies: Any = False


# What the REST API's order may carry beyond target, days and uses; the legacy API knows none.
REST_FIELDS = ("domain", "local_part", "replies")


def _number(value: Any, legacy: bool, query: bool) -> Any:
    """None when unset. JSON has one number type: ``43.0`` is the integer JSON Schema's
    ``integer`` (and so the OpenAPI document) allows, and a query's digits are a number."""
    if value is None:
        return None
    if query:
        if value in ("", "0"):
            return None
        if isinstance(value, str) and value.strip().isdigit() and value.isascii():
            return int(value.strip())
        return value
    if legacy and not isinstance(value, bool) and value == 0:  # False is not a zero
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def read_order(fields: dict[str, Any], *, uses_key: str = "uses", legacy: bool = False,
               query: bool = False) -> OrderFields:
    """``legacy`` follows the original service: 0 means unset, and every alias is at the first
    domain. ``query``: the fields come from a query string (the JSONP door), where every value
    is text: empty or "0" means unset, digits count. A JSON body takes numbers only, as the
    OpenAPI document says."""
    known = {"target", "days", uses_key, *(() if legacy else REST_FIELDS)}
    for name in fields:
        if name not in known:
            raise InvalidOrder(name, "is not a known field; known fields: "
                                     + ", ".join(sorted(known)))
    if "target" not in fields:
        raise InvalidOrder("target", "is required")
    return OrderFields(fields["target"], _number(fields.get("days"), legacy, query),
                       _number(fields.get(uses_key), legacy, query), fields.get("domain"),
                       fields.get("local_part"), fields.get("replies", False))


def requesting_client(trusted_proxies: tuple[IPNetwork, ...]):
    """The client of this request: the peer, or the one a trusted proxy names."""
    return client_ip(request.environ.get("REMOTE_ADDR"),
                     request.environ.get("HTTP_X_FORWARDED_FOR"), trusted_proxies)


def place_order(aliases: AliasService, fields: dict[str, Any], trusted_proxies: tuple[IPNetwork, ...],
                *, uses_key: str = "uses", legacy: bool = False, query: bool = False,
                domain_token: str | None = None) -> Created:
    """Create the alias this request orders, for the client it comes from; ``domain_token``:
    the custom domain owner's, when the order names a custom domain."""
    order = read_order(fields, uses_key=uses_key, legacy=legacy, query=query)
    ip = requesting_client(trusted_proxies)
    try:
        created = aliases.create(order.target, order.days, order.uses, ip, domain=order.domain,
                                 local_part=order.local_part, domain_token=domain_token,
                                 replies=order.replies)
    except InvalidOrder as exc:
        if exc.field == "uses" and uses_key != "uses":
            raise InvalidOrder(uses_key, exc.reason) from None
        raise
    metrics.alias_created("legacy" if legacy else "api",
                          order.domain is not None and not aliases.rules.is_ours(order.domain),
                          created.view.alias.expires_ms)
    return created
