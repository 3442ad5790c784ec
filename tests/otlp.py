"""A real OTLP/HTTP receiver for tests: ``POST /v1/traces`` with a protobuf body, decoded by opentelemetry-proto.

It answers as a collector does (200, an ``ExportTraceServiceResponse``) and
keeps every request's raw body, so a test can both read the spans and check
what never went over the wire.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = b"application/x-protobuf"


@dataclass
class ReceivedSpan:
    resource: dict[str, Any]
    scope: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int


@dataclass
class OtlpReceiver:
    bodies: list[bytes] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)

    async def __call__(self, scope, receive, send):
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        if scope["method"] != "POST" or scope["path"] != "/v1/traces" or headers.get(b"content-type") != PROTOBUF:
            await send({"type": "http.response.start", "status": 415, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if headers.get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        self.bodies.append(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)  # raises on anything that is not a valid export request
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            resource=resource,
                            scope=scope_spans.scope.name,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=attributes(span.attributes),
                            status_code=span.status.code,
                        )
                    )
        reply = ExportTraceServiceResponse().SerializeToString()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", PROTOBUF)]})
        await send({"type": "http.response.body", "body": reply})


def attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind is not None else None
