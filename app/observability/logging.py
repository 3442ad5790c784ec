"""Log formatting with secrets redacted from every line.

``RedactingFormatter`` formats a record as usual, then masks credentials in
the finished text (message, arguments and traceback alike): the values of
credential headers (Authorization, Cookie, API-key headers), bearer and basic
credentials, JWT-shaped strings, and the values of sensitive query
parameters. It is used for Gatehouse's own loggers and uvicorn's alike
(``logging_config``), so no log line carries a secret whichever logger wrote it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from app.config.settings import Settings

REDACTED = "[REDACTED]"


def redact_query(query: bytes, secret: frozenset[bytes]) -> str:
    """``query`` with the values of the parameters named in ``secret`` replaced (access log, spans)."""
    parts = []
    for part in query.split(b"&"):
        name, eq, _ = part.partition(b"=")
        parts.append(name + b"=" + REDACTED.encode() if eq and name in secret else part)
    return b"&".join(parts).decode("latin-1")


FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
DEFAULT_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")


class RedactingFormatter(logging.Formatter):
    def __init__(
        self,
        fmt: str | None = FORMAT,
        datefmt: str | None = None,
        *,
        headers: Iterable[str] = DEFAULT_HEADERS,
        query_params: Iterable[str] = (),
    ) -> None:
        super().__init__(fmt, datefmt)
        self._names = tuple(sorted({h.lower() for h in headers}))
        names = "|".join(re.escape(h) for h in self._names)
        # "authorization: x", "authorization=x", "'authorization': 'x'", "(b'authorization', b'x')"
        self._header = re.compile(rf"(?i)\b({names})(['\"]?\s*[:=,]\s*b?['\"]?)([^'\"\r\n]+)")
        self._scheme = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
        self._jwt = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
        params = "|".join(re.escape(q) for q in sorted(set(query_params)))
        self._params = tuple(sorted({q.lower() + "=" for q in query_params}))
        self._query = re.compile(rf"(?i)([?&;](?:{params})=)[^&;#\s'\"]*") if params else None

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))

    def redact(self, text: str) -> str:
        # Each pattern runs only if the text holds what it needs to match: the substring tests
        # cost far less than a regex scan, and most lines (every access-log line) hold none.
        lower = text.lower()
        if any(name in lower for name in self._names):
            text = self._header.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        if "bearer" in lower or "basic" in lower:
            text = self._scheme.sub(lambda m: m.group(1) + " " + REDACTED, text)
        if "eyJ" in text:
            text = self._jwt.sub(REDACTED, text)
        if self._query is not None and any(param in lower for param in self._params):
            text = self._query.sub(lambda m: m.group(1) + REDACTED, text)
        return text


def redaction_names(settings: Settings) -> tuple[list[str], list[str]]:
    """Header names and query parameters whose values never appear in logs."""
    headers = set(DEFAULT_HEADERS)
    params = set(settings.redact_query_params)
    for route in settings.routes:
        auth = settings.policies_for(route)[1].auth
        if auth is not None and auth.type == "api_key":
            if auth.header:
                headers.add(auth.header.lower())
            if auth.query_param:
                params.add(auth.query_param)
    return sorted(headers), sorted(params)


def logging_config(settings: Settings, *, root: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's loggers (and the root's with ``root``)."""
    headers, params = redaction_names(settings)
    level = settings.log_level.upper()
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "redacting": {"()": f"{__name__}.RedactingFormatter", "headers": headers, "query_params": params},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "redacting", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
            # httpx logs every request at INFO; per-request lines belong to the access log.
            "httpx": {"level": "WARNING"},
            # alembic logs its plug-ins and dialect at INFO on every start; the store logs what it migrated.
            "alembic": {"level": "WARNING"},
        },
    }
    if root:
        config["root"] = {"handlers": ["stderr"], "level": level}
    return config
