"""Turns a request's fields into a valid alias order, or says precisely which field is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tempalias.addresses import InvalidAddress, parse_address
from tempalias.config import Config


class FieldError(ValueError):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


@dataclass(frozen=True)
class AliasOrder:
    target: str
    days: int
    uses: int | None


def _bounded_int(field: str, value: Any, low: int, high: int, allow_digits: bool) -> int:
    """A whole number in range. JSON has one number type: ``43.0`` is the integer JSON Schema's
    ``integer`` (and so the OpenAPI document) allows; ``43.5``, booleans and strings are not."""
    if allow_digits and isinstance(value, str) and value.strip().isdigit() and value.isascii():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, f"{field} must be a whole number from {low} to {high}")
    if not low <= value <= high:
        raise FieldError(field, f"{field} must be a whole number from {low} to {high}")
    return value


def validate_target(config: Config, value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("target", "target must be an email address as a string")
    try:
        address = parse_address(value.strip())
    except InvalidAddress as exc:
        raise FieldError("target", f"target is not a valid email address: {exc}") from None
    if any(address.domain == d or address.domain.endswith("." + d) for d in config.domains):
        raise FieldError("target", f"target may not be an address at {address.domain}: "
                                   "mail to it would loop back here")
    return str(address)


def validate_order(config: Config, fields: dict[str, Any], *, days_key: str = "days",
                   uses_key: str = "uses", legacy: bool = False,
                   query: bool = False) -> AliasOrder:
    """``legacy`` follows the original service: 0 means unset. ``query``: the fields come from a
    query string (the JSONP door), where every value is text: empty or "0" means unset, digits
    count. A JSON body takes numbers only, as the OpenAPI document says."""
    known = {"target", days_key, uses_key}
    for name in fields:
        if name not in known:
            raise FieldError(name, f"unknown field {name!r}; known fields: "
                                   + ", ".join(sorted(known)))
    if "target" not in fields:
        raise FieldError("target", "target is required")
    target = validate_target(config, fields["target"])

    def unset(value: Any) -> bool:
        if value is None:
            return True
        if query:
            return value in ("", "0")
        return legacy and not isinstance(value, bool) and value == 0  # False is not a zero

    days_value = fields.get(days_key)
    days = config.default_days if unset(days_value) else _bounded_int(
        days_key, days_value, 1, config.max_days, query)
    uses_value = fields.get(uses_key)
    uses = None if unset(uses_value) else _bounded_int(
        uses_key, uses_value, 1, config.max_uses, query)
    return AliasOrder(target, days, uses)
