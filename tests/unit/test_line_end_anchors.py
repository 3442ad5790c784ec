"""No check accepts a value because ``$`` matched before its final newline.

Python's ``$`` also matches just before a trailing ``\\n``, so ``re.match("^x$", "x\\n")``
succeeds. The servers Gatehouse ships refuse a line feed in a header, but the checks must
hold under any ASGI server (``app.main:app``) and for the operator's own settings.
"""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from app.config.edge import _KEY
from app.config.names import _NAME, TOKEN, Name, header_name
from app.observability.tracing import _TRACEPARENT
from app.proxy.headers import VALID_HOST, valid_host
from app.webhooks.database import _SCHEMA_NAME


@pytest.mark.parametrize("host", [b"example.com\n", b"127.0.0.1:8080\n", b"[::1]\n"])
def test_a_host_with_a_trailing_line_feed_is_not_valid(host):
    assert VALID_HOST.match(host.rstrip(b"\n")) is not None  # the same host without it is
    assert not valid_host(host)


def test_a_name_or_header_name_with_a_trailing_line_feed_is_refused():
    names = TypeAdapter(Name)
    assert names.validate_python("api") == "api"
    with pytest.raises(ValidationError):
        names.validate_python("api\n")
    assert header_name("X-Team") == "X-Team"
    with pytest.raises(ValueError, match="not a valid header name"):
        header_name("X-Team\n")


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        (_KEY, "header:X-Team"),
        (_NAME, "users-api"),
        (TOKEN, "PATCH"),
        (_SCHEMA_NAME, "gatehouse"),
        (_TRACEPARENT, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ],
)
def test_no_anchored_pattern_matches_a_valid_value_with_a_line_feed_after_it(pattern, valid):
    assert pattern.match(valid) is not None
    assert pattern.match(valid + ("\n" if isinstance(valid, str) else b"\n")) is None
