"""Upstream URLs from raw request targets (pure: no I/O, no framework).

The request path is normalised once, before routing, the way nginx does it:
repeated slashes merge, percent-escaped unreserved characters are decoded
(``/%61dmin`` is ``/admin``), dot segments resolve. What cannot be made safe is
rejected with ``BadRequest``: malformed escapes, NUL/CR/LF, invalid or overlong
UTF-8, an encoded slash or backslash hiding a dot segment, and any dot segment
that climbs out of the root or out of the matched route's prefix. The query
string is never decoded: it is forwarded byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import BadRequest

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DOTS = (".", "..")
_SUSPECT = re.compile(rb"%|//|/\.|\\")


@dataclass(slots=True)  # not frozen: a frozen __init__ sets each field through object.__setattr__ (2.5x the cost)
class NormalisedPath:
    """``path`` is canonical (for routing and forwarding); ``raw_segments`` is set
    only when the raw path had dot segments, so routing can check where they lead."""

    path: str
    raw_segments: tuple[str, ...] | None = None


def normalise_path(raw_path: bytes) -> NormalisedPath:
    """Canonicalise a raw request path or raise ``BadRequest``."""
    if not raw_path.startswith(b"/"):
        raise BadRequest("The request target must be an absolute path starting with '/'.")
    if raw_path.isascii() and _SUSPECT.search(raw_path) is None:
        return NormalisedPath(raw_path.decode())  # ASCII, as checked: UTF-8's decoder is the one not looked up by name
    segments = [_normalise_segment(s) for s in raw_path[1:].split(b"/")]
    trailing = segments[-1] == ""
    # Merge repeated slashes (nginx's merge_slashes): empty segments drop out.
    merged = [s for s in segments if s != ""]
    if trailing or (merged and merged[-1] in _DOTS):
        merged.append("")
    has_dots = any(s in _DOTS for s in merged)
    resolved = _resolve(merged, floor=0) if has_dots else merged
    path = "/" + "/".join(resolved)
    return NormalisedPath(path, tuple(merged) if has_dots else None)


def climbs_out(raw_segments: tuple[str, ...], prefix: str) -> bool:
    """Whether the raw path's dot segments climb above ``prefix`` (which it starts in)."""
    depth = 0 if prefix == "/" else prefix.count("/")
    try:
        _resolve(list(raw_segments), floor=depth)
    except BadRequest:
        return True
    return False


def _resolve(segments: list[str], *, floor: int) -> list[str]:
    """RFC 3986 remove_dot_segments over segments; never pops below ``floor``."""
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == ".":
            continue
        if segment == "..":
            if len(out) <= floor:
                raise BadRequest("Dot segments in the path would leave the route's base path.")
            out.pop()
            continue
        if segment == "" and index != last:
            continue
        out.append(segment)
    return out


def _normalise_segment(raw: bytes) -> str:
    if b"%" not in raw and b"\\" not in raw and raw.isascii():
        return raw.decode("ascii")
    decoded = bytearray()  # the segment's meaning, to check for tricks
    kept = bytearray()  # the segment as forwarded: escapes kept except unreserved
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # '%'
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise BadRequest("The path has a malformed percent-escape.")
            value = int(raw[i + 1 : i + 3], 16)
            decoded.append(value)
            if value in _UNRESERVED:
                kept.append(value)
            else:
                kept += b"%%%02X" % value
            i += 3
            continue
        decoded.append(byte)
        if byte >= 0x80:
            kept += b"%%%02X" % byte
        else:
            kept.append(byte)
        i += 1
    if b"\x00" in decoded or b"\r" in decoded or b"\n" in decoded:
        raise BadRequest("The path contains an encoded NUL, CR or LF.")
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The path is not valid UTF-8 (overlong or truncated sequence).") from None
    if "/" in text or "\\" in text:
        if any(part in _DOTS for part in re.split(r"[/\\]", text)):
            raise BadRequest("An encoded slash or backslash in the path hides a dot segment.")
    if text in _DOTS:
        return text
    return kept.decode("ascii")


def encode_query(query: bytes) -> bytes:
    """The query as forwarded: unchanged, except raw non-ASCII bytes get escaped."""
    if query.isascii():
        return query
    return b"".join(b"%%%02X" % b if b >= 0x80 else bytes((b,)) for b in query)


def upstream_target(base_path: str, prefix: str, strip_prefix: bool, path: str, query: bytes) -> bytes:
    """The request target sent upstream: base path + (path, minus prefix) + raw query."""
    if strip_prefix and prefix != "/":
        path = path[len(prefix) :]
    target = (base_path + path) or "/"
    if not target.startswith("/"):
        target = "/" + target
    out = target.encode("ascii")
    if query:
        out += b"?" + encode_query(query)
    return out


def rewrite_location(location: str, *, origin: str, base_path: str, prefix: str, strip_prefix: bool) -> str | None:
    """Map a Location that points at the upstream's origin and base path onto the
    gateway's prefix; ``None`` when it points elsewhere and must pass unchanged."""
    if location.startswith(origin):
        rest = location[len(origin) :]
        if rest and rest[0] not in "/?#":
            return None  # e.g. http://users:8000 vs http://users:80001
    elif location.startswith("/") and not location.startswith("//"):
        rest = location
    else:
        return None
    path_end = len(rest)
    for mark in "?#":
        found = rest.find(mark)
        if found != -1:
            path_end = min(path_end, found)
    path, tail = rest[:path_end], rest[path_end:]
    if base_path:
        if path != base_path and not path.startswith(base_path + "/"):
            return None
        path = path[len(base_path) :]
    front = prefix if strip_prefix and prefix != "/" else ""
    return (front + path or "/") + tail
