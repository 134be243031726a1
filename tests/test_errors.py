"""The HTTP door's error answers (tempalias/web/errors.py): the abuse policy's verdicts as statuses.

The policy's verdict is neutral; which status it becomes is decided here, by its kind. The
running service's answers are in tests/test_abuse_http.py; this pins the mapping itself.
"""

from __future__ import annotations

import json

import pytest

from tempalias.abuse import Refusal
from tempalias.web.errors import refusal_error


@pytest.mark.parametrize("kind, limit, status, retry_after, description", [
    ("rbl-listed", "bl.test", 403, None, "192.0.2.7 listed in bl.test"),
    ("rate-limited", "create-target", 429, 30,
     "too many new aliases for this target address; try again in 30 s"),
    ("rbl-unavailable", "bl.test", 503, 60,
     "cannot check 192.0.2.7 against block lists now; try again later"),
])
def test_a_refusal_becomes_a_status_by_its_kind(kind, limit, status, retry_after, description):
    error = refusal_error(Refusal(kind, limit, "192.0.2.7", retry_after))
    assert error.status_code == status
    body = json.loads(error.body)
    assert body["error"] == kind and body["description"] == description
    if retry_after is None:
        assert "retry_after" not in body and "Retry-After" not in error.headers
    else:
        assert body["retry_after"] == retry_after
        assert error.headers["Retry-After"] == str(retry_after)
