"""The access log: one line per proxied request, to stdout through a ``LineBuffer``.

``json`` (the default) writes one JSON object per line; ``text`` a short
human-readable line for development; ``off`` nothing. Header values are never
logged, and the values of sensitive query parameters (``redact_query_params``
and API-key parameters) are replaced before the line is built; the buffer
runs ``RedactingFormatter.redact`` over each batch to mask anything
credential-shaped on top of that. Lines do not go through ``logging``: a
``LogRecord`` and a write per line were most of the log's cost
(``app.observability.lines``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from app.observability.lines import LineBuffer
from app.observability.logging import redact_query


class AccessLog:
    def __init__(self, fmt: str, query_params: Iterable[str], lines: LineBuffer) -> None:
        self._json = fmt == "json"
        self._secret = frozenset(p.encode() for p in query_params)
        self.lines = lines

    def close(self) -> None:
        """Write what is buffered; later lines are written at once (shutdown)."""
        self.lines.close()

    def safe_path(self, path: str, query: bytes) -> str:
        """``path`` and ``query`` with the values of secret parameters replaced."""
        if not query:
            return path
        return path + "?" + redact_query(query, self._secret)

    def emit(
        self,
        *,
        request_id: str,
        trace_id: str | None,
        route: str,
        method: str,
        path: str,
        query: bytes,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration: float,
        upstream: str | None,
        upstream_duration: float | None,
        client: str,
        close_code: int | None = None,
    ) -> None:
        """One line; ``close_code`` is set for a WebSocket (``status`` 101), whose line is written at its close."""
        now = datetime.now(UTC)
        shown = self.safe_path(path, query)
        upstream_ms = None if upstream_duration is None else round(upstream_duration * 1000, 3)
        if self._json:
            line = orjson.dumps(
                {
                    "timestamp": now.isoformat(timespec="milliseconds"),
                    "request_id": request_id,
                    "trace_id": trace_id,
                    "route": route,
                    "method": method,
                    "path": shown,
                    "status": status,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "duration_ms": round(duration * 1000, 3),
                    "upstream": upstream,
                    "upstream_ms": upstream_ms,
                    "client": client,
                }
                | ({} if close_code is None else {"close_code": close_code})
            ).decode()
        else:
            up = f" -> {upstream} {upstream_ms}ms" if upstream else ""
            line = (
                f"{now:%H:%M:%S} {client} {method} {shown} {status} {bytes_out}B {duration * 1000:.1f}ms"
                f" [{route}]{up} {request_id}"
            )
            if close_code is not None:
                line += f" close={close_code}"
        self.lines.write(line)
