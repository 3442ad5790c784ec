"""W3C traceparent always reaches the upstream; OpenTelemetry spans when a tracer is configured."""

from __future__ import annotations

import re

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import app
from app.config.settings import Settings
from app.main import create_app
from app.observability.tracing import Tracer, continue_trace, parse_traceparent
from app.serving.uvicorn_server import server_config
from tests.faults import refused_port
from tests.gateway import route, run_gateway
from tests.otlp import OtlpReceiver
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
    assert server_span.name == "GET /up/*"
    assert server_span.attributes["http.route"] == "/up/*" and server_span.attributes["gatehouse.route"] == "up"
    assert server_span.attributes["http.response.status_code"] == 200
    assert server_span.attributes["gatehouse.request_id"] == response.headers["x-request-id"]
    assert server_span.parent is not None and server_span.parent.span_id == 0x00F067AA0BA902B7
    assert all(s.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736 for s in spans)
    assert all(s.parent.span_id == server_span.context.span_id for s in clients)
    assert [s.name for s in clients] == ["GET", "GET"]
    assert not clients[0].status.is_ok and clients[0].attributes["error.type"] == "connect"
    assert "http.request.resend_count" not in clients[0].attributes
    assert clients[1].attributes["http.request.resend_count"] == 1
    assert clients[1].attributes["http.response.status_code"] == 200
    # The upstream saw the answering attempt's client span as its parent.
    assert upstream_traceparent(response)[36:52] == f"{clients[1].context.span_id:016x}"


async def test_spans_reach_a_real_otlp_http_receiver_by_the_http_semantic_conventions(upstream, monkeypatch):
    server, _ = upstream
    receiver = OtlpReceiver()
    dead_port = refused_port()
    retries = {"attempts": 2, "backoff": {"base": 0.001, "cap": 0.002}}
    spec = route("api", "/api", [f"http://127.0.0.1:{dead_port}", server.url], retries=retries)
    async with run_uvicorn(receiver, log_level="warning") as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{collector.url}/v1/traces")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-gateway")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=overridden,deployment.environment.name=test")
        plain = route("plain", "/plain", server.url)
        async with run_gateway(spec, plain, tracing="otlp") as gw, httpx.AsyncClient() as client:
            ok = await client.get(
                f"{gw.url}/api/echo/x?token=s3cret&page=2",
                headers={"traceparent": CALLER, "user-agent": "probe/1.0"},
            )
            other = await client.request("PROPFIND", f"{gw.url}/plain/echo/")
            failed = await client.get(f"{gw.url}/plain/status/503")
        # Leaving run_gateway ran the lifespan's shutdown, which exported the batch: no waiting here.
    assert (ok.status_code, other.status_code, failed.status_code) == (200, 200, 503)
    spans = receiver.spans
    assert {s.resource["service.name"] for s in spans} == {"edge-gateway"}  # OTEL_SERVICE_NAME wins
    assert {s.resource["deployment.environment.name"] for s in spans} == {"test"}
    assert {s.resource["service.version"] for s in spans} == {app.__version__}
    assert {s.scope for s in spans} == {"gatehouse"}

    servers = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_SERVER]
    assert [s.name for s in servers] == ["GET /api/*", "HTTP /plain/*", "GET /plain/*"]
    first = servers[0]
    assert first.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and first.parent_span_id == "00f067aa0ba902b7"
    assert first.attributes == {
        "http.request.method": "GET",
        "http.route": "/api/*",
        "url.path": "/api/echo/x",
        "url.query": "token=[REDACTED]&page=2",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": first.attributes["network.peer.port"],
        "server.address": "127.0.0.1",
        "server.port": gw.port,
        "user_agent.original": "probe/1.0",
        "gatehouse.route": "api",
        "gatehouse.request_id": ok.headers["x-request-id"],
        "http.response.status_code": 200,
    }
    assert servers[1].attributes["http.request.method"] == "_OTHER"
    assert servers[1].attributes["http.request.method_original"] == "PROPFIND"
    assert servers[2].attributes["error.type"] == "503" and servers[2].status_code == Status.STATUS_CODE_ERROR
    assert first.status_code == Status.STATUS_CODE_UNSET

    attempts = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT and s.parent_span_id == first.span_id]
    assert [s.name for s in attempts] == ["GET", "GET"]
    dead, live = sorted(attempts, key=lambda s: s.attributes.get("http.request.resend_count", 0))
    assert dead.attributes["server.port"] == dead_port and dead.attributes["error.type"] == "connect"
    assert dead.status_code == Status.STATUS_CODE_ERROR
    assert live.attributes["http.request.resend_count"] == 1
    assert live.attributes["server.address"] == "127.0.0.1" and live.attributes["server.port"] == server.port
    assert live.attributes["url.full"] == f"{server.url}/echo/x?token=[REDACTED]&page=2"
    assert live.attributes["http.response.status_code"] == 200
    assert live.attributes["network.protocol.version"] == "1.1"
    assert all(s.trace_id == first.trace_id for s in attempts)
    # The redacted query value never went over the wire.
    assert not any(b"s3cret" in body for body in receiver.bodies)


async def test_requests_answered_before_a_route_or_its_span_still_get_a_server_span(upstream):
    server, _ = upstream
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(routes=[route("up", "/up", server.url, methods=["GET"])])
    app = create_app(settings, tracer=Tracer(provider))
    async with (
        run_uvicorn(config=server_config(app, host="127.0.0.1", port=0, log_level="warning")) as gw,
        httpx.AsyncClient() as client,
    ):
        missing = await client.get(f"{gw.url}/nowhere/x", headers={"traceparent": CALLER})
        refused = await client.delete(f"{gw.url}/up/echo/")
    assert (missing.status_code, refused.status_code) == (404, 405)
    no_route, wrong_method = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time)
    assert no_route.kind == SpanKind.SERVER and no_route.name == "GET"  # no route: no http.route
    assert "http.route" not in no_route.attributes and "gatehouse.route" not in no_route.attributes
    assert no_route.attributes["http.response.status_code"] == 404 and no_route.status.is_unset
    assert no_route.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736  # the caller's trace
    assert wrong_method.name == "DELETE /up/*" and wrong_method.attributes["http.route"] == "/up/*"
    assert wrong_method.attributes["http.response.status_code"] == 405
    assert 0 < no_route.end_time - no_route.start_time < 5_000_000_000  # began when the request did
