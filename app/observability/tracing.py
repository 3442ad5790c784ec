"""Tracing: W3C ``traceparent`` on every upstream request; OpenTelemetry spans when enabled.

Propagation is always on and costs one random number per request: a request
that arrives with a valid ``traceparent`` keeps its trace id and flags and
gets a new span id (the gateway's hop); one without gets a new trace.

Spans (a server span per request, a client span per upstream attempt) are
recorded only when ``tracing`` is enabled in the settings and the OpenTelemetry
SDK is installed (``pip install 'gatehouse[otel]'``); otherwise nothing from
OpenTelemetry is imported and the hot path checks one ``None``.
"""

from __future__ import annotations

import random
import re
from typing import Any

_TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse_traceparent(value: bytes | None) -> tuple[bytes, bytes, bytes] | None:
    """``(trace_id, parent_id, flags)`` of a valid version-00 header, else None."""
    if value is None:
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
        return None
    return match[1], match[2], match[3]


def new_span_id() -> bytes:
    return b"%016x" % (random.getrandbits(64) or 1)


def continue_trace(incoming: bytes | None) -> bytes:
    """The ``traceparent`` to send upstream: the caller's trace with a new span id, or a new trace."""
    parsed = parse_traceparent(incoming)
    if parsed is None:
        return b"00-%032x-%s-00" % (random.getrandbits(128) or 1, new_span_id())
    trace_id, _, flags = parsed
    return b"00-" + trace_id + b"-" + new_span_id() + b"-" + flags


def trace_id_of(traceparent: bytes) -> str:
    return traceparent[3:35].decode()


class Tracer:
    """OpenTelemetry spans for the gateway; built only when tracing is on (see ``build_tracer``)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._tracer = provider.get_tracer("gatehouse")
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = trace.SpanKind.SERVER
        self._client_kind = trace.SpanKind.CLIENT

    def server_span(self, traceparent: bytes | None, method: str, route: str) -> Any:
        """Start the request's server span, as a child of the caller's ``traceparent``."""
        carrier = {"traceparent": traceparent.decode("latin-1")} if traceparent else {}
        parent = self._propagator.extract(carrier)
        return self._tracer.start_span(
            f"{method} {route}",
            context=parent,
            kind=self._server_kind,
            attributes={"http.request.method": method, "http.route": route},
        )

    def client_span(self, server: Any, method: str, url: str, attempt: int) -> Any:
        context = self._trace.set_span_in_context(server)
        return self._tracer.start_span(
            f"{method} upstream",
            context=context,
            kind=self._client_kind,
            attributes={"http.request.method": method, "url.full": url, "gatehouse.attempt": attempt},
        )

    @staticmethod
    def traceparent(span: Any) -> bytes:
        """The ``traceparent`` naming ``span`` as the parent (for the upstream request)."""
        ctx = span.get_span_context()
        return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))

    def end(self, span: Any, status: int | None, error: str | None = None) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None or (status is not None and status >= 500):
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


def build_tracer(exporter: str) -> Tracer | None:
    """A tracer exporting to ``exporter`` ("otlp" or "console"), or None if off or the SDK is missing."""
    if exporter == "none":
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        import logging

        logging.getLogger("gatehouse").warning("tracing=%s but the OpenTelemetry SDK is not installed", exporter)
        return None
    span_exporter: SpanExporter
    if exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError:
            import logging

            logging.getLogger("gatehouse").warning("tracing=otlp needs opentelemetry-exporter-otlp-proto-http")
            return None
        span_exporter = OTLPSpanExporter()  # endpoint etc. from the standard OTEL_EXPORTER_OTLP_* variables
    else:
        span_exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "gatehouse"}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return Tracer(provider)
