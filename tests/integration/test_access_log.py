"""The access log: one line per proxied request, with the fields operators need and no secrets."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest

from tests.gateway import route, run_gateway

pytestmark = pytest.mark.anyio

SECRETS = ("Bearer abc.def.ghi", "abc.def.ghi", "c00kie-value", "s3cr3t-token")


def access_lines(caplog) -> list[dict]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "gatehouse.access"]


async def test_each_proxied_request_logs_one_json_line_with_its_facts(upstream, caplog):
    server, _ = upstream
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    async with run_gateway(route("a", "/a", server.url)) as gw, httpx.AsyncClient() as client:
        ok = await client.post(
            f"{gw.url}/a/echo/x?token=s3cr3t-token&page=2",
            content=b"body",
            headers={"authorization": "Bearer abc.def.ghi", "cookie": "session=c00kie-value"},
        )
        missing = await client.get(f"{gw.url}/nowhere")
    first, second = access_lines(caplog)
    assert first["route"] == "a" and first["method"] == "POST" and first["status"] == 200
    assert first["path"] == "/a/echo/x?token=[REDACTED]&page=2"
    assert first["bytes_in"] == 4 and first["bytes_out"] == len(ok.content)
    assert first["request_id"] == ok.headers["x-request-id"]
    assert first["upstream"] == server.url and 0 < first["upstream_ms"] <= first["duration_ms"]
    assert first["client"].startswith("127.0.0.1:") and len(first["trace_id"]) == 32
    assert first["timestamp"].endswith("+00:00")
    assert second["route"] == "(none)" and second["status"] == 404 and second["upstream"] is None
    assert second["bytes_out"] == len(missing.content) and second["upstream_ms"] is None
    for secret in SECRETS:
        assert secret not in caplog.text


async def test_text_format_is_one_readable_line(upstream, caplog):
    server, _ = upstream
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    async with run_gateway(route("a", "/a", server.url), access_log="text") as gw, httpx.AsyncClient() as client:
        await client.get(f"{gw.url}/a/status/503?api_key=s3cr3t-token")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gatehouse.access"]
    assert " GET /a/status/503?api_key=[REDACTED] 503 " in line and "[a] -> " + server.url in line
    assert "s3cr3t-token" not in line


async def test_access_log_off_writes_nothing(upstream, caplog):
    server, _ = upstream
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    async with run_gateway(route("a", "/a", server.url), access_log="off") as gw, httpx.AsyncClient() as client:
        assert (await client.get(f"{gw.url}/a/echo/")).status_code == 200
    assert [r for r in caplog.records if r.name == "gatehouse.access"] == []
