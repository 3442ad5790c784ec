"""``Name``: the one rule for names of routes, webhook endpoints and delivery targets.

Names appear in metrics labels, log lines and ops URLs, so they are short and plain.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
