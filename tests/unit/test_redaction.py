"""The redacting formatter's quick pre-checks never let a secret through (case, position, kind)."""

from __future__ import annotations

import pytest

from app.observability.logging import REDACTED, RedactingFormatter

FORMATTER = RedactingFormatter(query_params=["token", "Sig"])


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("AUTHORIZATION: Bearer abc123", "abc123"),
        ("headers [(b'Cookie', b'session=zzz')]", "session=zzz"),
        ("x-Api-Key=k-123", "k-123"),
        ("sent BASIC dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("GET /a?TOKEN=t-999&x=1", "t-999"),
        ("GET /a?x=1&sig=s-1", "s-1"),
        ("path /reset/eyJhbGciOi.eyJzdWIiOi.c2ln", "eyJhbGciOi.eyJzdWIiOi.c2ln"),
    ],
)
def test_secrets_are_masked_whatever_their_case(line, secret):
    masked = FORMATTER.redact(line)
    assert secret not in masked and REDACTED in masked


def test_a_line_without_secrets_is_unchanged():
    line = '{"route":"a","path":"/a/echo?page=2","status":200,"request_id":"abc"}'
    assert FORMATTER.redact(line) == line
