"""The HTTP door's error answers (tempalias/web/errors.py): the abuse policy's verdicts as statuses.

The policy's verdict is neutral; which status it becomes is decided here, by its kind. The
running service's answers are in tests/test_abuse_http.py; this pins the mapping itself.
"""

from __future__ import annotations

import json

import pytest

from tempalias.abuse import Refusal
from tempalias.web.errors import refusal_error


@pytest.mark.parametrize("kind, status, retry_after", [
    ("rbl-listed", 403, None),
    ("rate-limited", 429, 30),
    ("rbl-unavailable", 503, 60),
])
def test_a_refusal_becomes_a_status_by_its_kind(kind, status, retry_after):
    refusal = Refusal(kind, 451, "4.7.1", "go away for now", "a reason for the log", retry_after)
    error = refusal_error(refusal)
    assert error.status_code == status
    body = json.loads(error.body)
    assert body["error"] == kind and body["description"] == "go away for now"
    assert "a reason for the log" not in error.body
    if retry_after is None:
        assert "retry_after" not in body and "Retry-After" not in error.headers
    else:
        assert body["retry_after"] == retry_after
        assert error.headers["Retry-After"] == str(retry_after)
