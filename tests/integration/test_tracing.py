"""W3C traceparent always reaches the upstream; OpenTelemetry spans when a tracer is configured."""

from __future__ import annotations

import re

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.config.settings import Settings
from app.main import create_app
from app.observability.tracing import Tracer, continue_trace, parse_traceparent
from app.serving.uvicorn_server import server_config
from tests.faults import refused_port
from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn

pytestmark = pytest.mark.anyio

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def upstream_traceparent(response: httpx.Response) -> str:
    (value,) = [v for name, v in response.json()["headers"] if name == "traceparent"]
    return value


def test_a_new_trace_is_started_when_the_caller_sends_none_or_garbage():
    for incoming in (None, b"garbage", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"):
        parsed = parse_traceparent(continue_trace(incoming))
        assert parsed is not None
        assert parsed[0] != b"0" * 32 and parsed[2] == b"00"


async def test_upstream_gets_a_fresh_traceparent_when_the_client_sends_none(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        first = upstream_traceparent(await client.get(f"{gw.url}/up/echo/"))
        second = upstream_traceparent(await client.get(f"{gw.url}/up/echo/"))
    assert TRACEPARENT.fullmatch(first) and TRACEPARENT.fullmatch(second)
    assert first[3:35] != second[3:35]  # a new trace per request


async def test_upstream_keeps_the_callers_trace_id_and_flags_with_a_new_span_id(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/echo/", headers={"traceparent": CALLER})
    sent = TRACEPARENT.fullmatch(upstream_traceparent(response))
    assert sent is not None
    trace_id, span_id, flags = sent.groups()
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and flags == "01"
    assert span_id != "00f067aa0ba902b7"


async def test_spans_server_and_one_client_span_per_upstream_attempt(upstream):
    server, _ = upstream
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    retries = {"attempts": 2, "backoff": {"base": 0.001, "cap": 0.002}}
    dead = f"http://127.0.0.1:{refused_port()}"
    settings = Settings(routes=[route("up", "/up", [dead, server.url], retries=retries)])
    app = create_app(settings, tracer=Tracer(provider))
    async with (
        run_uvicorn(config=server_config(app, host="127.0.0.1", port=0, log_level="warning")) as gw,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(f"{gw.url}/up/echo/", headers={"traceparent": CALLER})
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (server_span,) = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time)
    assert len(spans) == 3 and len(clients) == 2  # the failed attempt on the dead target, then the retry
    assert server_span.name == "GET up" and server_span.attributes["http.response.status_code"] == 200
    assert server_span.parent is not None and server_span.parent.span_id == 0x00F067AA0BA902B7
    assert all(s.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736 for s in spans)
    assert all(s.parent.span_id == server_span.context.span_id for s in clients)
    assert not clients[0].status.is_ok and clients[1].attributes["http.response.status_code"] == 200
    # The upstream saw the answering attempt's client span as its parent.
    assert upstream_traceparent(response)[36:52] == f"{clients[1].context.span_id:016x}"
