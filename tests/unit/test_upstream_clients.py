"""Upstream clients share one TLS context per TLS setting, not one per origin: each loads certifi's
~140 CA certificates (about 0.9 MiB of RSS), so 20 HTTPS upstreams cost 18 MiB before this."""

from __future__ import annotations

import ssl

from app.config.settings import Settings
from app.proxy.clients import UpstreamClients
from app.proxy.routing import RouteTable


def clients_for(*routes: dict, transport: str = "aiohttp") -> tuple[UpstreamClients, dict[str, ssl.SSLContext | None]]:
    settings = Settings(routes=list(routes), upstream_transport=transport)
    clients = UpstreamClients(RouteTable.from_settings(settings).routes, settings.limits, http1=transport)
    contexts = {}
    for key, transport_ in clients._transports.items():
        if hasattr(transport_, "_ssl"):
            context = transport_._ssl
        elif hasattr(transport_, "_ssl_context"):
            context = transport_._ssl_context
        else:
            context = transport_._pool._ssl_context
        contexts[key.origin] = context if isinstance(context, ssl.SSLContext) else None
    return clients, contexts


def route(name: str, upstream: str, **extra: object) -> dict:
    return {"name": name, "prefix": f"/{name}", "upstream": upstream, **extra}


def test_https_upstreams_with_the_same_tls_settings_share_one_context():
    for transport in ("aiohttp", "httpcore"):
        _, contexts = clients_for(
            route("a", "https://a.test"),
            route("b", "https://b.test:8443"),
            route("c", "https://c.test"),
            transport=transport,
        )
        assert len(contexts) == 3
        assert len({id(context) for context in contexts.values()}) == 1, transport
        (shared,) = {context for context in contexts.values() if context is not None}
        assert shared.verify_mode is ssl.CERT_REQUIRED and shared.check_hostname
        assert shared.cert_store_stats()["x509_ca"] > 0


def test_different_tls_settings_get_their_own_contexts():
    _, contexts = clients_for(
        route("verified", "https://a.test"),
        route("unverified", "https://b.test", verify=False),
        route("plain", "http://c.test"),
    )
    verified, unverified = contexts["https://a.test"], contexts["https://b.test"]
    assert verified is not None and unverified is not None and verified is not unverified
    assert verified.verify_mode is ssl.CERT_REQUIRED
    assert unverified.verify_mode is ssl.CERT_NONE and not unverified.check_hostname
    assert contexts["http://c.test"] is None


def test_each_generation_builds_its_own_contexts():
    # A reload re-reads CA bundles and client certificates: nothing is shared across UpstreamClients.
    _, first = clients_for(route("a", "https://a.test"))
    _, second = clients_for(route("a", "https://a.test"))
    assert first["https://a.test"] is not second["https://a.test"]
