"""One reading of every path: refuse a path that an upstream could read as another route (pure).

Gatehouse routes on the normalised path (``app.proxy.urls``), but the upstream
reads the path it is sent in its own way. Werkzeug, Express and most frameworks
decode ``%2F`` before routing; Tomcat, Jetty and Spring drop ``;`` parameters
(``/api/..;/admin``); IIS and Windows folk fold case and strip trailing dots
and spaces; some stacks apply NFKC, which turns fullwidth ``．`` and ``／`` into
``.`` and ``/``. If any such reading, alone or combined with others, selects a
different route than Gatehouse's own (a route with other auth), or climbs out of
the route, the request is refused with ``AmbiguousPath`` and nothing is sent.

``encoded_slashes`` says what a route does with ``%2F`` and ``%5C``: ``reject``
(the default: 400), ``decode`` (forward them as ``/``; the decoded path must
still select the route) or ``keep`` (forward them unchanged: the upstream treats
them, and ``\\``, as data). A route may also ignore readings its upstream is
known not to make (``ignore_path_readings``).

Everything that depends on the route table is built once, per table; a plain
path (ASCII, no ``%``, ``\\``, ``;``, capital letter or segment ending in ``.``)
skips all of this after a few substring tests (``reads_one_way``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from urllib.parse import unquote

from app.config.routes import EncodedSlashes, Reading
from app.errors import AmbiguousPath

# The order readings combine in: NFKC can make a '\', ';' or '.', so it goes first.
READINGS: tuple[Reading, ...] = ("unicode", "backslash", "semicolon", "trailing", "case")

_ENCODED_SLASH = re.compile(r"%(?:2F|5C)", re.IGNORECASE)
_TRAILING = re.compile(r"[. ](?:[/\\]|$)")
_DOTS = (".", "..")

Segments = list[str]


def _unicode(segments: Segments) -> Segments:
    return unicodedata.normalize("NFKC", "/".join(segments)).split("/")


def _backslash(segments: Segments) -> Segments:
    return [part for segment in segments for part in segment.split("\\")]


def _semicolon(segments: Segments) -> Segments:
    return [segment.partition(";")[0] for segment in segments]


def _trailing(segments: Segments) -> Segments:
    out = []
    for segment in segments:
        stripped = segment.rstrip(". ")
        if not stripped and "." in segment:
            stripped = ".." if segment.count(".") > 1 else "."  # Windows reads '...' as '..'
        out.append(segment if segment in _DOTS else stripped)
    return out


def _case(segments: Segments) -> Segments:
    return [segment.lower() for segment in segments]


_APPLY: dict[Reading, Callable[[Segments], Segments]] = {
    "unicode": _unicode,
    "backslash": _backslash,
    "semicolon": _semicolon,
    "trailing": _trailing,
    "case": _case,
}


def _applies(reading: Reading, text: str) -> bool:
    if reading == "unicode":
        return not text.isascii()
    if reading == "backslash":
        return "\\" in text
    if reading == "semicolon":
        return ";" in text
    if reading == "trailing":
        return _TRAILING.search(text) is not None
    return text != text.lower()


def _resolved(segments: Segments) -> Segments | None:
    """Dot segments resolved, empty segments merged; None if they climb above the root."""
    out: Segments = []
    for segment in segments:
        if segment == "..":
            if not out:
                return None
            out.pop()
        elif segment and segment != ".":
            out.append(segment)
    return out


def reads_one_way(path: str) -> bool:
    """Whether every reading of a canonical path is the path itself: no ``%``, ``\\``, ``;``,
    capital letter or segment ending in ``.``. This runs per request, so plain ``in``
    tests (about half the cost of one regular-expression search)."""
    return (
        "%" not in path
        and "\\" not in path
        and ";" not in path
        and "./" not in path
        and path[-1] != "."
        and path.lower() == path
    )


def decode_slashes(path: str) -> str:
    """``path`` with ``%2F``, ``%5C`` and ``\\`` read as ``/`` (repeated slashes merged)."""
    decoded = _ENCODED_SLASH.sub("/", path).replace("\\", "/")
    return re.sub("/{2,}", "/", decoded)


class PathReadings:
    """The route prefixes as each combination of readings sees them; built once per route table."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self._prefixes = tuple(sorted(prefixes))
        self._tables: dict[tuple[Reading, ...], dict[str, str]] = {}

    def check(self, path: str, prefix: str, *, encoded_slashes: EncodedSlashes, ignore: frozenset[Reading]) -> str:
        """The path to forward for ``path``, which Gatehouse routes to ``prefix``.

        Raises ``AmbiguousPath`` if a reading an upstream may make selects
        another prefix (or none) or climbs above the root.
        """
        if reads_one_way(path):
            return path
        if encoded_slashes == "reject" and _ENCODED_SLASH.search(path) is not None:
            raise AmbiguousPath("The path has an encoded slash or backslash (%2F, %5C); upstreams read it differently.")
        if encoded_slashes == "decode" and ("\\" in path or _ENCODED_SLASH.search(path) is not None):
            path = decode_slashes(path)
            if self._select(path.split("/")[1:], ()) != prefix:
                raise AmbiguousPath(f"With its slashes decoded, the path selects another route than {prefix!r}.")
        if encoded_slashes == "keep":
            ignore = ignore | {"backslash"}
        self._check_readings(path, prefix, ignore)
        return path

    def _check_readings(self, path: str, prefix: str, ignore: frozenset[Reading]) -> None:
        # Percent-decoded, except encoded slashes: those are data here (``keep``) or gone.
        pieces = _ENCODED_SLASH.split(path)
        escapes = _ENCODED_SLASH.findall(path)
        text = unquote(pieces[0], errors="replace") + "".join(
            escape + unquote(piece, errors="replace") for escape, piece in zip(escapes, pieces[1:], strict=True)
        )
        segments = text.split("/")[1:]
        seen = text if text.isascii() else text + unicodedata.normalize("NFKC", text)
        readings = [r for r in READINGS if r not in ignore and _applies(r, seen)]
        for mask in range(1 << len(readings)):
            chosen = tuple(r for bit, r in enumerate(readings) if mask >> bit & 1)
            read = segments
            for reading in chosen:
                read = _APPLY[reading](read)
            resolved = _resolved(read)
            if resolved is None:
                raise AmbiguousPath(f"Read with {_names(chosen)}, the path climbs above the root.")
            if self._select(resolved, chosen) != prefix:
                raise AmbiguousPath(f"Read with {_names(chosen)}, the path selects another route than {prefix!r}.")

    def _select(self, segments: Segments, chosen: tuple[Reading, ...]) -> str | None:
        """The prefix that the longest whole-segment match of ``segments`` finds, seen through ``chosen``."""
        table = self._tables.get(chosen)
        if table is None:
            table = self._tables[chosen] = self._table(chosen)
        segments = [s for s in segments if s]
        for end in range(len(segments), -1, -1):
            found = table.get("/" + "/".join(segments[:end]))
            if found is not None:
                return found
        return None

    def _table(self, chosen: tuple[Reading, ...]) -> dict[str, str]:
        table: dict[str, str] = {}
        for prefix in self._prefixes:
            read = prefix.split("/")[1:]
            for reading in chosen:
                read = _APPLY[reading](read)
            table.setdefault("/" + "/".join(s for s in read if s), prefix)
        return table


def _names(chosen: tuple[Reading, ...]) -> str:
    return " + ".join(chosen) if chosen else "percent-decoding"
