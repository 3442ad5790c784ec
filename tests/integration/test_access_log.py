"""The access log: one line per proxied request, with the fields operators need and no secrets."""

from __future__ import annotations

import anyio
import httpx
import pytest

from app.edge.resources import EdgeResources
from tests.gateway import Written, route, run_gateway

pytestmark = pytest.mark.anyio

SECRETS = ("Bearer abc.def.ghi", "abc.def.ghi", "c00kie-value", "s3cr3t-token")


async def test_each_proxied_request_logs_one_json_line_with_its_facts(upstream):
    server, _ = upstream
    written = Written()
    async with (
        run_gateway(route("a", "/a", server.url), access_write=written) as gw,
        httpx.AsyncClient() as client,
    ):
        ok = await client.post(
            f"{gw.url}/a/echo/x?token=s3cr3t-token&page=2",
            content=b"body",
            headers={"authorization": "Bearer abc.def.ghi", "cookie": "session=c00kie-value"},
        )
        missing = await client.get(f"{gw.url}/nowhere")
    first, second = written.json()
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
        assert secret not in written.text


async def test_lines_are_written_within_the_flush_interval_while_serving(upstream):
    server, _ = upstream
    written = Written()
    async with (
        run_gateway(route("a", "/a", server.url), access_write=written) as gw,
        httpx.AsyncClient() as client,
    ):
        for _ in range(3):
            assert (await client.get(f"{gw.url}/a/echo/")).status_code == 200
        # Flushed on the 100 ms interval, not only at shutdown (bounded wait for a loaded machine).
        with anyio.fail_after(10):
            while len(written.json()) < 3:
                await anyio.sleep(0.02)
        assert [line["status"] for line in written.json()] == [200, 200, 200]


async def test_a_credential_shaped_value_in_a_logged_field_is_masked(upstream):
    server, _ = upstream
    written = Written()
    async with (
        run_gateway(route("a", "/a", server.url), access_write=written) as gw,
        httpx.AsyncClient() as client,
    ):
        # Not a redact_query_params name: the batch's redaction catches the JWT shape.
        await client.get(f"{gw.url}/a/echo/?jwt=eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl")
    assert "eyJhbGciOi" not in written.text and "[REDACTED]" in written.text


async def test_a_path_naming_a_credential_header_leaves_the_line_valid_json(upstream):
    server, _ = upstream
    written = Written()
    async with (
        run_gateway(route("a", "/a", server.url), access_write=written) as gw,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"{gw.url}/a/echo/authorization")).status_code == 200
    (line,) = written.json()
    assert line["path"] == "/a/echo/authorization" and line["status"] == 200


async def test_text_format_is_one_readable_line(upstream):
    server, _ = upstream
    written = Written()
    async with (
        run_gateway(route("a", "/a", server.url), access_log="text", access_write=written) as gw,
        httpx.AsyncClient() as client,
    ):
        await client.get(f"{gw.url}/a/status/503?api_key=s3cr3t-token")
    (line,) = written.text.splitlines()
    assert " GET /a/status/503?api_key=[REDACTED] 503 " in line and "[a] -> " + server.url in line
    assert "s3cr3t-token" not in line


async def test_text_format_escapes_control_characters_a_client_put_in_the_path(upstream):
    server, _ = upstream
    written = Written()
    # Percent-decoded into scope["path"]. The CR LF is refused (400) but still logged: unescaped it
    # would start a forged line. A tab or an ANSI escape is proxied (200).
    forged = "/a/echo/x%0D%0A00:00:00%20203.0.113.9:1%20GET%20/admin%20200%201B%20[admin]"
    async with (
        run_gateway(route("a", "/a", server.url), access_log="text", access_write=written) as gw,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(gw.url + forged)).status_code == 400
        assert (await client.get(gw.url + "/a/echo/y%09%1B[2K%7F")).status_code == 200
    refused, proxied = written.text.removesuffix("\n").split("\n")
    assert " GET /a/echo/x\\r\\n00:00:00 203.0.113.9:1 GET /admin 200 1B [admin] 400 " in refused
    assert " GET /a/echo/y\\t\\x1b[2K\\x7f 200 " in proxied
    assert refused.isprintable() and proxied.isprintable()


@pytest.mark.parametrize("settings", [{"access_log": "off"}, {"log_level": "warning"}])
async def test_access_log_off_or_log_level_above_info_writes_nothing(upstream, settings):
    server, _ = upstream
    written = Written()
    async with (
        run_gateway(route("a", "/a", server.url), access_write=written, **settings) as gw,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"{gw.url}/a/echo/")).status_code == 200
    assert written.batches == []


async def test_the_buffered_lines_are_written_even_when_a_shutdown_step_fails(upstream, monkeypatch):
    server, _ = upstream
    written = Written()
    close = EdgeResources.aclose

    async def failing(self: EdgeResources) -> None:
        await close(self)
        raise RuntimeError("a shutdown step failed")

    monkeypatch.setattr(EdgeResources, "aclose", failing)
    # A long flush interval: the line can only leave at shutdown (uvicorn logs the failed shutdown).
    async with (
        run_gateway(route("a", "/a", server.url), access_write=written, access_log_flush_interval=60) as gw,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"{gw.url}/a/echo/")).status_code == 200
    assert [line["status"] for line in written.json()] == [200]
