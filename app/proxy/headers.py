"""Request and response header rewriting (pure).

Headers stay ``list[tuple[bytes, bytes]]`` end to end (lower-case names, as
ASGI gives them), so repeated fields such as two ``Set-Cookie`` lines survive.
Per-route work (which names to drop, which to set) is compiled once into a
``HeaderPlan``; per request there is one pass over the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.observability.tracing import continue_trace
from app.wire import HOP_BY_HOP, sane_request_id

# Set by the gateway itself; a client's copy is believed only from a trusted proxy.
FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix", b"forwarded"}
)
# Never forwarded upstream: the gateway answers `Expect: 100-continue` itself.
REQUEST_ONLY_HERE = frozenset({b"host", b"x-request-id", b"expect", b"traceparent"})
# Replaced by the serving gateway's own.
RESPONSE_REPLACED = frozenset({b"date", b"server", b"x-request-id"})


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in a Connection field value."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """What a route does to headers; built once at start-up."""

    drop_request: frozenset[bytes]
    set_request: tuple[tuple[bytes, bytes], ...]
    drop_response: frozenset[bytes]
    set_response: tuple[tuple[bytes, bytes], ...]
    upstream_host: bytes | None  # None: preserve the client's Host
    forwarded_prefix: bytes | None

    @classmethod
    def build(
        cls,
        *,
        upstream_authority: str,
        preserve_host: bool,
        prefix: str,
        strip_prefix: bool,
        request_set: dict[str, str],
        request_remove: list[str],
        response_set: dict[str, str],
        response_remove: list[str],
    ) -> HeaderPlan:
        req_set = tuple((k.lower().encode(), v.encode("latin-1")) for k, v in request_set.items())
        resp_set = tuple((k.lower().encode(), v.encode("latin-1")) for k, v in response_set.items())
        return cls(
            drop_request=HOP_BY_HOP
            | FORWARDING
            | REQUEST_ONLY_HERE
            | {k for k, _ in req_set}
            | {r.lower().encode() for r in request_remove},
            set_request=req_set,
            drop_response=HOP_BY_HOP
            | RESPONSE_REPLACED
            | {k for k, _ in resp_set}
            | {r.lower().encode() for r in response_remove},
            set_response=resp_set,
            upstream_host=None if preserve_host else upstream_authority.encode(),
            forwarded_prefix=prefix.encode() if strip_prefix and prefix != "/" else None,
        )


@dataclass(slots=True)
class InboundRequest:
    """What one pass over the client's headers found."""

    headers: list[tuple[bytes, bytes]]
    request_id: bytes
    content_length: int | None
    chunked: bool
    traceparent: bytes  # what was sent upstream (the caller's trace, the gateway's span id)
    incoming_traceparent: bytes | None


def upstream_request_headers(
    client_headers: list[tuple[bytes, bytes]],
    plan: HeaderPlan,
    *,
    client_ip: str,
    scheme: str,
    trusted: bool,
) -> InboundRequest:
    """Headers to send upstream, plus the facts the forwarder needs.

    Raises ``ValueError`` for a request whose framing is ambiguous (several
    differing Content-Length values); the caller turns it into a 400.
    """
    drop = plan.drop_request
    out: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    host = request_id = traceparent = None
    xff: list[bytes] = []
    proto = fwd_host = fwd_prefix = None
    content_length: int | None = None
    chunked = False
    for name, value in client_headers:
        if name not in drop:
            if name == b"content-length":
                length = _parse_content_length(value)
                if content_length is not None and length != content_length:
                    raise ValueError("conflicting Content-Length headers")
                if content_length is not None:
                    continue  # identical duplicate: send one
                content_length = length
            out.append((name, value))
            continue
        if name == b"host":
            host = value
        elif name == b"x-request-id":
            request_id = value
        elif name == b"traceparent":
            traceparent = value
        elif name == b"connection":
            listed = (listed or set()) | connection_tokens(value)
        elif name == b"transfer-encoding":
            chunked = True
        elif trusted:
            if name == b"x-forwarded-for":
                xff.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-host":
                fwd_host = value
            elif name == b"x-forwarded-prefix":
                fwd_prefix = value
            elif name == b"forwarded":
                out.append((name, value))
    if chunked and content_length is not None:
        raise ValueError("both Transfer-Encoding and Content-Length are present")
    if listed:
        # RFC 9110 §7.6.1: Connection must not name end-to-end fields. A client that
        # names Content-Length must not make the gateway drop its body's framing.
        listed.discard(b"content-length")
        out = [(k, v) for k, v in out if k not in listed]
    rid = sane_request_id(request_id)
    own_host = host if plan.upstream_host is None else plan.upstream_host
    if own_host is not None:
        out.insert(0, (b"host", own_host))
    xff.append(client_ip.encode())
    out.append((b"x-forwarded-for", b", ".join(xff)))
    out.append((b"x-forwarded-proto", proto or scheme.encode()))
    if fwd_host or host:
        out.append((b"x-forwarded-host", fwd_host or host or b""))
    if plan.forwarded_prefix is not None:
        prefix = (fwd_prefix or b"").rstrip(b"/") + plan.forwarded_prefix
        out.append((b"x-forwarded-prefix", prefix))
    out.append((b"x-request-id", rid))
    outbound_trace = continue_trace(traceparent)
    out.append((b"traceparent", outbound_trace))
    out.extend(plan.set_request)
    if chunked:
        # Transfer-Encoding is hop-by-hop: the upstream hop frames the body anew.
        out.append((b"transfer-encoding", b"chunked"))
    return InboundRequest(out, rid, content_length, chunked, outbound_trace, traceparent)


def _parse_content_length(value: bytes) -> int:
    # RFC 9110 §8.6: a list of identical values is allowed; anything else is not.
    values = {v.strip() for v in value.split(b",")}
    if len(values) != 1:
        raise ValueError("conflicting Content-Length values")
    (only,) = values
    if not only.isdigit():
        raise ValueError("Content-Length is not a number")
    return int(only)


@dataclass(slots=True)
class OutboundResponse:
    """What one pass over the upstream's response headers found."""

    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    has_location: bool


def client_response_headers(
    upstream_headers: list[tuple[bytes, bytes]],
    plan: HeaderPlan,
    request_id: bytes,
) -> OutboundResponse:
    """Headers for the client: hop-by-hop and replaced fields out, route's set in."""
    drop = plan.drop_response
    out: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    content_length: int | None = None
    has_location = False
    for name, value in upstream_headers:
        name = name.lower()
        if name in drop:
            if name == b"connection":
                listed = (listed or set()) | connection_tokens(value)
            continue
        if name == b"content-length" and value.isdigit():
            content_length = int(value)
        elif name == b"location":
            has_location = True
        out.append((name, value))
    if listed:
        out = [(k, v) for k, v in out if k not in listed]
    out.extend(plan.set_response)
    out.append((b"x-request-id", request_id))
    return OutboundResponse(out, content_length, has_location)
