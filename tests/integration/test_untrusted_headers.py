"""Header fields an untrusted client must not be able to plant on an upstream, over raw sockets."""

from __future__ import annotations

import json

import pytest

from app.config.hashing import hash_api_key
from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, parse_response, raw_http

pytestmark = pytest.mark.anyio


def request(target: bytes, *fields: bytes) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: gatehouse.test", *fields, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def upstream_headers(port: int, target: bytes, *fields: bytes) -> list[tuple[str, str]]:
    response = parse_response(await raw_http(LOOPBACK, port, request(target, *fields)))
    assert response.status == 200, response.body
    return [(name, value) for name, value in json.loads(response.body)["headers"]]


async def test_header_names_with_underscores_are_dropped(upstream):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        seen = await upstream_headers(gw.port, b"/api/echo", b"X_Caller: ops", b"X-Caller-Ok: yes")
    assert ("x-caller-ok", "yes") in seen
    assert not [name for name, _ in seen if "_" in name]


async def test_underscores_in_headers_true_passes_them(upstream):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url), underscores_in_headers=True) as gw:
        seen = await upstream_headers(gw.port, b"/api/echo", b"X_Caller: ops")
    assert ("x_caller", "ops") in seen


async def test_x_real_ip_and_x_forwarded_port_are_the_gateways_own(upstream):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        seen = await upstream_headers(
            gw.port, b"/api/echo", b"X-Real-IP: 10.9.9.9", b"X-Forwarded-Port: 1", b"X-Forwarded-For: 10.9.9.9"
        )
    assert [v for k, v in seen if k == "x-real-ip"] == ["127.0.0.1"]
    assert [v for k, v in seen if k == "x-forwarded-port"] == [str(gw.port)]
    assert [v for k, v in seen if k == "x-forwarded-for"] == ["127.0.0.1"]


async def test_identity_and_protected_headers_are_stripped_on_every_route(upstream):
    # X-Caller is what the 'ops' route's auth sets; the open route shares the upstream.
    server, _ = upstream
    auth = {"type": "api_key", "keys": {"ops": hash_api_key("k-ops")}, "identity_header": "X-Caller"}
    async with run_gateway(
        route("open", "/open", server.url),
        route("ops", "/ops", server.url, auth=auth),
        protected_headers=["X-Tenant"],
    ) as gw:
        open_seen = await upstream_headers(gw.port, b"/open/echo", b"X-Caller: ops", b"X-Tenant: acme")
        ops_seen = await upstream_headers(gw.port, b"/ops/echo", b"X-API-Key: k-ops", b"X-Caller: root")
    assert not [name for name, _ in open_seen if name in ("x-caller", "x-tenant")]
    assert [v for k, v in ops_seen if k == "x-caller"] == ["ops"]
