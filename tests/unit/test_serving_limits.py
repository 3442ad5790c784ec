"""The serving layer's own refusals (``app.serving.limits``): each a fresh error, sharing nothing."""

from __future__ import annotations

from app.errors import render_problem
from app.serving.limits import head_too_large, unparsable_request


def test_a_refusals_headers_are_its_own_so_editing_one_leaves_the_next_unchanged():
    # Filters add fields to a GatewayError's list in place (CORS, the rate limit, webhook intake).
    for make in (lambda: unparsable_request("bad line"), lambda: head_too_large(8192)):
        first = make()
        first.headers.append((b"access-control-allow-origin", b"https://evil.example"))
        second = make()
        assert second.headers == [(b"connection", b"close")]
        _, headers, _ = render_problem(second, instance="/", request_id="r1")
        assert b"access-control-allow-origin" not in [name for name, _ in headers]
