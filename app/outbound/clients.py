"""The one factory for ``httpx.AsyncClient``: no cookie jar, no environment, no redirects.

Every client Gatehouse makes comes from ``make_client``: the upstream pools
(``app.proxy.clients``), the edge's JWKS and OAuth token fetches, and webhook
delivery. A shared jar would hand one caller's cookies to the next
(fastapi-proxy-lib shipped that as a security advisory); a jar that merely
refuses cookies still parses every response's headers, so these clients have
none at all. ``trust_env=False`` keeps ``HTTP_PROXY`` and ``.netrc`` out.
"""

from __future__ import annotations

import ssl
from http.cookiejar import Cookie, CookieJar
from pathlib import Path
from typing import Any

import certifi
import httpx


class _EmptyJar(CookieJar):
    """A ``CookieJar`` that stays empty: every way in is a no-op."""

    def set_cookie(self, cookie: Cookie) -> None:
        pass

    def set_cookie_if_ok(self, cookie: Cookie, request: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


class _NoCookies(httpx.Cookies):
    """Cookies that never store or send anything, however they are set (``set``, ``[]=``, ``update``, ``jar``).

    It is shared by every client, so it must be unable to hold a cookie at all:
    a cookie set on one client's jar would otherwise go out with every client's requests.
    """

    def __init__(self) -> None:
        super().__init__()
        self.jar = _EmptyJar()

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


_NO_COOKIES = _NoCookies()


class NoCookieClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose ``cookies`` is a jar that keeps nothing (and cannot be replaced)."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass


def make_client(
    *,
    timeout: httpx.Timeout,
    transport: httpx.AsyncBaseTransport | None = None,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """A client for Gatehouse's own calls: no cookies, no environment proxies, redirects not followed."""
    if transport is None:
        transport = httpx.AsyncHTTPTransport(limits=limits or httpx.Limits(), trust_env=False)
    return NoCookieClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


def ssl_context(verify: bool | Path, *, http2: bool, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A fresh context for one TLS setting; ``UpstreamClients`` shares it among that setting's transports
    (httpcore sets ALPN on the one it is given: always the same list for the same ``http2``).

    ``client_cert`` (certificate file, key file) is presented to upstreams that ask for one (mutual TLS).
    """
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        cafile = str(verify) if isinstance(verify, Path) else certifi.where()
        context = ssl.create_default_context(cafile=cafile)
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context
