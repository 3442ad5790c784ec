"""A route's upstream URL: parsed and checked once, when the settings load (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

_DOTS = (".", "..")


@dataclass(frozen=True, slots=True)
class Upstream:
    """A parsed upstream URL: origin plus base path (no trailing slash)."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.authority}"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_upstream(url: str) -> Upstream:
    """Parse a route's ``upstream``; ``ValueError`` says what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; set upstream headers instead")
    if parts.query or parts.fragment or url.endswith("?") or "#" in url:
        raise ValueError("must not have a query string or fragment")
    path = parts.path.rstrip("/")
    if "%" in path or "//" in path or any(s in _DOTS for s in path.split("/")):
        raise ValueError("base path must be plain: no '//', '.', '..' or percent-escapes")
    default = 443 if parts.scheme == "https" else 80
    return Upstream(parts.scheme, parts.hostname, port or default, path)
