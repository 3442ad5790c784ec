"""One request id per request: the client, the upstream, the access log and the gateway's own log agree."""

from __future__ import annotations

import json
import logging

import pytest

from tests.gateway import Written, route, run_gateway
from tests.servers import LOOPBACK, parse_response, raw_http

pytestmark = pytest.mark.anyio


def request(target: bytes, *fields: bytes) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: gatehouse.test", *fields, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_the_gateways_own_errors_carry_one_id_everywhere(upstream, caplog):
    caplog.set_level(logging.INFO, logger="gatehouse.proxy")
    server, _ = upstream
    written = Written()
    targets = [
        (request(b"/nope"), 404),
        (request(b"/nope", b"X-Request-ID: bad id with spaces"), 404),
        (request(b"/api/admin%2Fx"), 400),
        (request(b"/api/echo", b"Host: second.example"), 400),
    ]
    async with run_gateway(route("api", "/api", server.url), access_write=written) as gw:
        responses = [parse_response(await raw_http(LOOPBACK, gw.port, data)) for data, _ in targets]
    logged = [line["request_id"] for line in written.json()]
    own = [record.request_id for record in caplog.records if record.name == "gatehouse.proxy"]
    assert len(logged) == len(own) == len(targets)
    for (_, status), response, in_access_log, in_own_log in zip(targets, responses, logged, own, strict=True):
        assert response.status == status
        (header,) = response.header_values(b"x-request-id")
        assert json.loads(response.body)["request_id"] == header.decode() == in_access_log == in_own_log
    assert len(set(logged)) == len(logged)


async def test_a_proxied_request_has_one_id_at_the_client_the_upstream_and_the_log(upstream):
    server, _ = upstream
    written = Written()
    async with run_gateway(route("api", "/api", server.url), access_write=written) as gw:
        sane = parse_response(await raw_http(LOOPBACK, gw.port, request(b"/api/echo", b"X-Request-ID: abc-123")))
        insane = parse_response(await raw_http(LOOPBACK, gw.port, request(b"/api/echo", b"X-Request-ID: a b")))
    for response in (sane, insane):
        (header,) = response.header_values(b"x-request-id")
        upstream_ids = [v for k, v in json.loads(response.body)["headers"] if k == "x-request-id"]
        assert upstream_ids == [header.decode()]
    assert sane.header_values(b"x-request-id") == [b"abc-123"]
    assert [line["request_id"] for line in written.json()] == [
        sane.header_values(b"x-request-id")[0].decode(),
        insane.header_values(b"x-request-id")[0].decode(),
    ]
