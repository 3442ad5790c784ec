"""The one rule for each kind of name in settings.

``Name`` (routes, webhook endpoints, delivery targets) appears in metrics labels,
log lines and ops URLs, so it is short and plain. ``TOKEN`` is RFC 9110's token
(methods, header names); ``HeaderValues`` is a header map safe to send.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# ``\Z``, not ``$``, in every anchored pattern here and elsewhere: ``$`` also matches before a final
# newline, so "api\n" passed (tests/unit/test_line_end_anchors.py).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token: methods, header names


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
    return value


Name = Annotated[str, AfterValidator(_check_name)]


def header_name(value: str) -> str:
    if not TOKEN.match(value):
        raise ValueError(f"{value!r} is not a valid header name")
    return value


def _check_header_values(value: dict[str, str]) -> dict[str, str]:
    for name, header_value in value.items():
        header_name(name)
        if any(c in header_value for c in "\r\n\x00"):
            raise ValueError(f"header {name!r}: value must not contain CR, LF or NUL")
    return value


HeaderValues = Annotated[dict[str, str], AfterValidator(_check_header_values)]


def plain_path(value: str) -> str:
    """A route prefix or webhook path: starts with '/', no '//', '?', '#', escapes or dot segments."""
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    if "//" in value or "?" in value or "#" in value or "%" in value:
        raise ValueError("must be a plain path: no '//', '?', '#' or percent-escapes")
    if any(segment in (".", "..") for segment in value.split("/")):
        raise ValueError("must not contain '.' or '..' segments")
    if not _PATH_CHARACTERS.fullmatch(value):
        # A request path arrives percent-encoded: a prefix with spaces, controls or non-ASCII could never match.
        raise ValueError("may hold only letters, digits, '/' and -._~!$&'()*+,;=:@")
    return value


_PATH_CHARACTERS = re.compile(r"[A-Za-z0-9/\-._~!$&'()*+,;=:@]*")
