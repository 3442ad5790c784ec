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

import os
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from app import __version__
from app.observability.logging import redact_query

_TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
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
    parsed = parse_traceparent(incoming) if incoming is not None else None
    if parsed is None:  # a new trace for nearly every request: new_span_id inline (-1.6k instructions)
        return b"00-%032x-%016x-00" % (random.getrandbits(128) or 1, random.getrandbits(64) or 1)
    trace_id, _, flags = parsed
    return b"00-" + trace_id + b"-" + new_span_id() + b"-" + flags


def trace_id_of(traceparent: bytes) -> str:
    """The trace id of a traceparent the gateway made or validated: 32 hex characters (quoted as is in the log)."""
    return traceparent[3:35].decode()


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


def http_route(prefix: str) -> str:
    """The ``http.route`` of a prefix route: its template, ``/api/*`` for prefix ``/api``."""
    return prefix.rstrip("/") + "/*"


class Tracer:
    """OpenTelemetry spans by the HTTP semantic conventions; built only when tracing is on.

    A server span per proxied request, named ``{method} {http.route}``, and a
    client span per upstream attempt, named ``{method}``, with
    ``http.request.resend_count`` on retries. Query values named in
    ``query_params`` are redacted in ``url.query`` and ``url.full``.
    """

    def __init__(self, provider: Any, query_params: Iterable[str] = ()) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._trace = trace
        self._tracer = provider.get_tracer("gatehouse", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = trace.SpanKind.SERVER
        self._client_kind = trace.SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._secret = frozenset(p.encode() for p in query_params)

    def server_span(
        self,
        traceparent: bytes | None,
        scope: Mapping[str, Any],
        route: str | None,
        prefix: str | None,
        *,
        request_id: str | None = None,
        client_address: str | None = None,
        start_time: int | None = None,
    ) -> Any:
        """Start the request's server span, as a child of the caller's ``traceparent``.

        ``client_address`` is the client behind any trusted proxies (default: the peer).
        Without a route (the gateway answered before one matched: 404, 400, 431) there is no
        ``http.route`` and the span is named by the method alone.
        """
        carrier = {"traceparent": traceparent.decode("latin-1")} if traceparent else {}
        parent = self._propagator.extract(carrier)
        method: str = scope["method"]
        attributes: dict[str, Any] = {
            "url.path": scope["path"],
            "url.scheme": scope["scheme"],
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if request_id is not None:
            attributes["gatehouse.request_id"] = request_id
        known = self._method(method, attributes)
        span_name = known or "HTTP"
        if prefix is not None:
            template = attributes["http.route"] = http_route(prefix)
            span_name = f"{span_name} {template}"
        if route is not None:
            attributes["gatehouse.route"] = route
        if scope["query_string"]:
            attributes["url.query"] = redact_query(scope["query_string"], self._secret)
        client = scope.get("client")
        if client:
            attributes["client.address"] = client_address or client[0]
            attributes["network.peer.address"] = client[0]
            attributes["network.peer.port"] = client[1]
        for name, value in scope["headers"]:
            if name == b"host":
                host, port = split_host(value.decode("latin-1"))
                attributes["server.address"] = host
                if port is not None:
                    attributes["server.port"] = port
            elif name == b"user-agent":
                attributes["user_agent.original"] = value.decode("latin-1")
        return self._tracer.start_span(
            span_name, context=parent, kind=self._server_kind, attributes=attributes, start_time=start_time
        )

    def client_span(self, server: Any, method: str, url: Any, attempt: int) -> Any:
        """Start an upstream attempt's span (``url`` is the ``httpx.URL`` sent to); ``attempt`` counts from 1."""
        context = self._trace.set_span_in_context(server)
        query = url.query
        full = f"{url.scheme}://{url.netloc.decode('ascii')}{url.raw_path.partition(b'?')[0].decode('ascii')}"
        attributes: dict[str, Any] = {
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "url.full": full + "?" + redact_query(query, self._secret) if query else full,
        }
        known = self._method(method, attributes)
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        return self._tracer.start_span(known or "HTTP", context=context, kind=self._client_kind, attributes=attributes)

    @staticmethod
    def _method(method: str, attributes: dict[str, Any]) -> str | None:
        if method in KNOWN_METHODS:
            attributes["http.request.method"] = method
            return method
        attributes["http.request.method"] = "_OTHER"
        attributes["http.request.method_original"] = method
        return None

    @staticmethod
    def traceparent(span: Any) -> bytes:
        """The ``traceparent`` naming ``span`` as the parent (for the upstream request)."""
        ctx = span.get_span_context()
        return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))

    def end_server(self, span: Any, status: int) -> None:
        """End a server span: a 5xx is the server's error; a 4xx is the client's, so not an error here."""
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(self._error)
        span.end()

    def end_client(
        self, span: Any, status: int | None, error_type: str | None = None, http_version: str | None = None
    ) -> None:
        """End an attempt's span: with the upstream's status, or the ``error_type`` of a failed attempt."""
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                error_type = str(status)
        if http_version is not None:
            span.set_attribute("network.protocol.version", http_version.removeprefix("HTTP/"))
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocking: run it off the event loop)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def split_host(host: str) -> tuple[str, int | None]:
    """``Host`` header to ``(address, port)``; IPv6 literals lose their brackets."""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = host.partition(":")
    return address, int(port) if port.isdigit() else None


def resource_attributes(environ: Mapping[str, str]) -> dict[str, str]:
    """Gatehouse's defaults for what ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` leave unset."""
    configured = set()
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, eq, _ = pair.partition("=")
        if eq:
            configured.add(key.strip())
    if environ.get("OTEL_SERVICE_NAME"):
        configured.add("service.name")
    defaults = {"service.name": "gatehouse", "service.version": __version__}
    return {key: value for key, value in defaults.items() if key not in configured}


def build_tracer(exporter: str, query_params: Iterable[str] = ()) -> Tracer | None:
    """A tracer exporting to ``exporter`` ("otlp" or "console"), or None if off or the SDK is missing.

    The resource comes from the standard ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` (service name ``gatehouse`` if neither names
    one), the OTLP exporter from ``OTEL_EXPORTER_OTLP_*`` and the sampler from
    ``OTEL_TRACES_SAMPLER``, as every OpenTelemetry SDK reads them.
    """
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
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            import logging

            logging.getLogger("gatehouse").warning("tracing=otlp needs opentelemetry-exporter-otlp-proto-http")
            return None
        span_exporter = OTLPSpanExporter()  # endpoint etc. from the standard OTEL_EXPORTER_OTLP_* variables
    else:
        span_exporter = ConsoleSpanExporter()
    # Resource.create reads the OTEL_* variables; what it is given wins, so only defaults they leave unset.
    provider = TracerProvider(resource=Resource.create(resource_attributes(os.environ)))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return Tracer(provider, query_params)
