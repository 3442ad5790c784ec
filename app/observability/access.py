"""The access log: one line per proxied request, to stdout through a ``LineBuffer``.

``json`` (the default) writes one JSON object per line; ``text`` a short
human-readable line for development, escaped by ``escape_text``; ``off`` nothing. Header values are never
logged, and the values of sensitive query parameters (``redact_query_params``
and API-key parameters) are replaced before the line is built. The fields a
client chooses (the path with its query, the request ID) then go through
``RedactingFormatter.redact`` whenever they hold a character that one of its
patterns needs, masking anything credential-shaped. Lines do not go through
``logging``: a ``LogRecord`` and a write per line were most of the log's cost
(``app.observability.lines``).

A JSON line is written by hand, not by a JSON encoder over a dict: the keys are constants, the
values are numbers or strings that need no escaping (route names, IP addresses, hex IDs) unless a
quick test says otherwise, durations are formatted from integer nanoseconds, and the timestamp's
date and time once per second. Request IDs arrive checked (``app.wire.RequestId``), a path seen
before is not tested again, and numbers below 1,000 are looked up (``NUMBERS``). With the redaction
moved from a regex pass over each batch to the client's fields alone, the log's cost per request
fell by about a third (callgrind, in-process gateway: +70k -> +50k instructions over
``access_log: off``). Redacting fields before they are quoted also keeps each line valid JSON:
the batch's pass read ``/x/authorization","status`` as a credential header and masked the key
after the path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from app.observability.lines import LineBuffer
from app.observability.logging import DEFAULT_HEADERS, RedactingFormatter, redact_query
from app.wire import RequestId

# "000" to "999": the milliseconds of the timestamp and the fraction of a duration, looked up (a
# ``:03d`` format costs three times as much, and a line has three of them).
THREE_DIGITS = tuple(f"{i:03d}" for i in range(1000))
# "0" to "999": a status, a small byte count, whole milliseconds. Formatting an int in an f-string
# costs about four times a lookup here, and a line has up to six of them (callgrind: 4.7k
# instructions a line for the three counts alone). Larger numbers are formatted; none is negative.
NUMBERS = tuple(str(i) for i in range(1000))

# Paths kept with their checked form: up to this many, each up to this long.
MAX_KEPT_PATHS = 1024
MAX_KEPT_PATH = 256


def json_string(value: str) -> str:
    """``value`` as a JSON string: as it is, quoted, when it is printable ASCII without ``"`` or ``\\``."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return '"' + value + '"'
    return orjson.dumps(value).decode()


_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def escape_text(value: str) -> str:
    """``value`` with every character that is not printable escaped, and ``\\`` doubled.

    For the text format, as nginx's ``escape=default``: a client's path is percent-decoded, so
    without this a ``%0D%0A`` (logged even when the request is refused) would start a forged
    line, and a ``%1B`` would send an ANSI escape to an operator's terminal. ``\\t``, ``\\n``,
    ``\\r`` by name, others as ``\\xHH``/``\\uHHHH``; the doubled backslash keeps it unambiguous.
    """
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(ch if ch.isprintable() and ch != "\\" else _NAMED_ESCAPES.get(ch) or ascii(ch)[1:-1] for ch in value)


def plain(value: str) -> bool:
    """Whether ``value`` goes into a JSON line as it is: printable ASCII without ``"`` or ``\\`` (the only
    characters of it a JSON string escapes) that ``might_hold_a_secret`` lets through."""
    return value.isascii() and '"' not in value and "\\" not in value and not might_hold_a_secret(value)


def might_hold_a_secret(value: str) -> bool:
    """Whether one of ``RedactingFormatter``'s patterns could match in ``value``.

    Each needs one of these: a header's separator (``:``, ``=``, ``,``), a scheme's
    whitespace (a space, or a character that is not printable), a JWT's ``eyJ``, or a
    query parameter's ``=``. Substring tests: a regex search costs several times more.
    """
    return "=" in value or ":" in value or "," in value or " " in value or "eyJ" in value or not value.isprintable()


class AccessLog:
    def __init__(
        self, fmt: str, query_params: Iterable[str], lines: LineBuffer, headers: Iterable[str] = DEFAULT_HEADERS
    ) -> None:
        params = list(query_params)
        self._json = fmt == "json"
        self._secret = frozenset(p.encode() for p in params)
        self._redact = RedactingFormatter(headers=headers, query_params=params).redact
        self.lines = lines
        self._second = -1
        self._date = ""  # "YYYY-MM-DDTHH:MM:SS" of ``_second``, JSON; "HH:MM:SS", text
        self._quoted: dict[str, str] = {}  # route names, methods, upstream origins, client addresses: quoted once
        self._paths: dict[str, str] = {}  # paths without a query, as ``_client_field`` shows them: checked once

    def close(self) -> None:
        """Write what is buffered; later lines are written at once (shutdown)."""
        self.lines.close()

    def safe_path(self, path: str, query: bytes) -> str:
        """``path`` and ``query`` with the values of secret parameters replaced."""
        if not query:
            return path
        return path + "?" + redact_query(query, self._secret)

    def _masked(self, value: str) -> str:
        return self._redact(value) if might_hold_a_secret(value) else value

    def _escaped(self, value: str) -> str:
        """A field the client chose that ``plain`` refused: masked if it might hold a secret, escaped, unquoted."""
        return json_string(self._masked(value))[1:-1]

    def _client_field(self, value: str) -> str:
        """A field the client chose, as it goes between a JSON string's quotes."""
        return value if plain(value) else self._escaped(value)

    def _known_path(self, path: str) -> str:
        """``_client_field(path)``, kept for the next request to the same path (most of a gateway's traffic)."""
        shown = self._client_field(path)
        if len(path) <= MAX_KEPT_PATH:
            if len(self._paths) >= MAX_KEPT_PATHS:  # the paths are the clients': keep the cache bounded
                self._paths.clear()
            self._paths[path] = shown
        return shown

    @staticmethod
    def _closed(close_code: int) -> str:
        """The end of a WebSocket's line."""
        return f',"close_code":{close_code}}}'

    def _quote(self, value: str) -> str:
        quoted = self._quoted.get(value)
        if quoted is None:
            if len(self._quoted) >= 1024:  # methods and addresses are the clients': keep the cache bounded
                self._quoted.clear()
            quoted = self._quoted[value] = json_string(value)
        return quoted

    def _tick(self, second: int) -> None:
        """A new second: format it once."""
        moment = datetime.fromtimestamp(second, UTC)
        self._date = moment.strftime("%Y-%m-%dT%H:%M:%S" if self._json else "%H:%M:%S")
        self._second = second

    def emit(
        self,
        request_id: RequestId,
        trace_id: str | None,
        route: str,
        method: str,
        path: str,
        query: bytes,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_ns: int,
        upstream: str | None,
        upstream_ns: int | None,
        client: str,
        close_code: int | None = None,
    ) -> None:
        """One line; ``close_code`` is set for a WebSocket (``status`` 101), whose line is written at its close.

        ``trace_id`` is hex, as ``tracing.trace_id_of`` takes it from a traceparent the gateway made or
        validated, so it is quoted as it is (``json_string`` cost 3k instructions a line to say so).
        """
        # Inline, not in helpers: each Python call here costs about 2% of the line. Times are integer
        # nanoseconds: ``int()`` of a float cost 1.1k instructions, and a line had four.
        now = time.time_ns()
        second = now // 1_000_000_000
        if second != self._second:
            self._tick(second)
        if self._json:
            quoted = self._quoted
            digits = THREE_DIGITS
            numbers = NUMBERS
            took = (duration_ns + 500) // 1000  # microseconds, shown as milliseconds with three decimals
            whole = took // 1000
            upstream_ms = "null"
            if upstream_ns is not None:
                waited = (upstream_ns + 500) // 1000
                ms = waited // 1000
                upstream_ms = f"{numbers[ms] if ms < 1000 else ms}.{digits[waited % 1000]}"
            trace = "null" if trace_id is None else '"' + trace_id + '"'
            rid = request_id.decode()
            if "=" in rid or ":" in rid or "eyJ" in rid:  # a sane id (``RequestId``): only these can
                rid = self._escaped(rid)  # be credential-shaped (``plain`` says why the others need no test)
            if query:
                shown = self._client_field(path + "?" + redact_query(query, self._secret))
            else:
                shown = self._paths.get(path) or self._known_path(path)
            # The client's fields go between the line's own quotes: quoting them apart cost a copy each.
            line = (
                f'{{"timestamp":"{self._date}.{digits[now // 1_000_000 % 1000]}+00:00",'
                f'"request_id":"{rid}",'
                f'"trace_id":{trace},'
                f'"route":{quoted.get(route) or self._quote(route)},'
                f'"method":{quoted.get(method) or self._quote(method)},'
                f'"path":"{shown}",'
                f'"status":{numbers[status] if status < 1000 else status},'
                f'"bytes_in":{numbers[bytes_in] if bytes_in < 1000 else bytes_in},'
                f'"bytes_out":{numbers[bytes_out] if bytes_out < 1000 else bytes_out},'
                f'"duration_ms":{numbers[whole] if whole < 1000 else whole}.{digits[took % 1000]},'
                f'"upstream":{"null" if upstream is None else quoted.get(upstream) or self._quote(upstream)},'
                f'"upstream_ms":{upstream_ms},"client":{quoted.get(client) or self._quote(client)}'
                f"{'}' if close_code is None else self._closed(close_code)}"
            )
            self.lines.write(line)
            return
        date = self._date
        shown = self._masked(self.safe_path(path, query))
        rid = self._masked(request_id.decode())
        up_ms = None if upstream_ns is None else round(upstream_ns / 1e6, 3)
        up = f" -> {upstream} {up_ms}ms" if upstream else ""
        line = f"{date} {client} {method} {shown} {status} {bytes_out}B {duration_ns / 1e6:.1f}ms [{route}]{up} {rid}"
        if close_code is not None:
            line += f" close={close_code}"
        self.lines.write(escape_text(line))  # the whole line: method and client are the client's too
