"""gRPC clients get the gateway's own errors as gRPC statuses, not problem+json.

A gRPC client reads ``grpc-status`` and ``grpc-message``, not an HTTP status
or a JSON body: an unreachable upstream must reach it as ``UNAVAILABLE``, not
as an unparsable 502. The mapping follows gRPC's HTTP-to-gRPC table
(doc/http-grpc-status-mapping.md), refined where Gatehouse knows more (a timeout
it measured itself is ``DEADLINE_EXCEEDED``).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.types import Send

from app.errors import GatewayError, UpstreamTimeout

OK = 0
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

_BY_STATUS = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    405: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,
    413: RESOURCE_EXHAUSTED,
    429: UNAVAILABLE,
    431: RESOURCE_EXHAUSTED,
    500: INTERNAL,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
}


def is_grpc(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.startswith(b"application/grpc")


def grpc_status(error: GatewayError) -> int:
    if isinstance(error, UpstreamTimeout):
        return DEADLINE_EXCEEDED
    return _BY_STATUS.get(error.status, UNKNOWN)


def grpc_message(text: str) -> bytes:
    """``grpc-message`` is percent-encoded UTF-8 (gRPC over HTTP/2, "Responses")."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")


async def send_grpc_error(send: Send, error: GatewayError, *, request_id: str, trailers: bool) -> None:
    """Answer a gRPC call with ``error``'s status: HTTP 200, then ``grpc-status`` in the trailers.

    Where the server cannot send trailers the status goes in the headers of an
    empty response (gRPC's "trailers-only" form).
    """
    status = [
        (b"grpc-status", str(grpc_status(error)).encode()),
        (b"grpc-message", grpc_message(error.detail)),
    ]
    headers = [(b"content-type", b"application/grpc"), (b"x-request-id", request_id.encode())]
    if not trailers:
        await send({"type": "http.response.start", "status": 200, "headers": headers + status})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    await send({"type": "http.response.trailers", "headers": status, "more_trailers": False})
