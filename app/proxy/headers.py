"""Request and response header rewriting (pure).

Headers stay ``list[tuple[bytes, bytes]]`` end to end (lower-case names, as
ASGI gives them), so repeated fields such as two ``Set-Cookie`` lines survive.
Per-route work (which names to drop, which to set) is compiled once into a
``HeaderPlan``; per request there is one pass over the list.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.observability.tracing import continue_trace
from app.wire import HOP_BY_HOP, RequestId, sane_request_id

# Set by the gateway itself; a client's copy is believed only from a trusted proxy.
FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"forwarded",
        b"x-real-ip",
    }
)
# Ask frameworks (Rails, Laravel, Express's method-override...) to treat a GET as another method.
METHOD_OVERRIDE = frozenset({b"x-http-method-override", b"x-method-override", b"x-http-method"})
# RFC 9112 §3.2 / RFC 3986 §3.2.2, narrowed to what DNS names and IP literals use:
# no userinfo, path, comma, space or percent-escape can hide in it.
VALID_HOST = re.compile(rb"^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")


@functools.lru_cache(maxsize=1024)
def valid_host(value: bytes) -> bool:
    """``VALID_HOST`` matches ``value``; remembered, as a client sends the same Host on every request
    (sre tests the pattern's character classes byte by byte: 4.4k instructions for ``127.0.0.1:8080``)."""
    return VALID_HOST.match(value) is not None


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
    allow_underscores: bool = False  # False: drop header names with '_' (CGI reads X_User as X-User)

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
        protected: Iterable[str] = (),
        allow_method_override: bool = False,
        allow_underscores: bool = False,
    ) -> HeaderPlan:
        req_set = tuple((k.lower().encode(), v.encode("latin-1")) for k, v in request_set.items())
        resp_set = tuple((k.lower().encode(), v.encode("latin-1")) for k, v in response_set.items())
        return cls(
            drop_request=HOP_BY_HOP
            | FORWARDING
            | REQUEST_ONLY_HERE
            | {k for k, _ in req_set}
            | {r.lower().encode() for r in request_remove}
            | {p.lower().encode() for p in protected}
            | (frozenset() if allow_method_override else METHOD_OVERRIDE),
            set_request=req_set,
            drop_response=HOP_BY_HOP
            | RESPONSE_REPLACED
            | {k for k, _ in resp_set}
            | {r.lower().encode() for r in response_remove},
            set_response=resp_set,
            upstream_host=None if preserve_host else upstream_authority.encode(),
            forwarded_prefix=prefix.encode() if strip_prefix and prefix != "/" else None,
            allow_underscores=allow_underscores,
        )


@dataclass(slots=True)
class InboundRequest:
    """What one pass over the client's headers found."""

    headers: list[tuple[bytes, bytes]]
    request_id: RequestId
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
    real_ip: str | None = None,
    server_port: int | None = None,
    require_host: bool = False,
) -> InboundRequest:
    """Headers to send upstream, plus the facts the forwarder needs.

    ``client_ip`` is the peer (appended to X-Forwarded-For), ``real_ip`` the
    client behind any trusted proxies (X-Real-IP; default: the peer).
    Raises ``ValueError`` for a request whose framing is ambiguous (several
    differing Content-Length values) or whose Host is missing (when
    ``require_host``: HTTP/1.1), repeated or not a valid ``host[:port]``; the
    caller turns it into a 400.
    """
    drop = plan.drop_request
    underscores = plan.allow_underscores
    out: list[tuple[bytes, bytes]] = []
    listed: set[bytes] | None = None
    host = request_id = traceparent = None
    xff: list[bytes] = []
    proto = fwd_host = fwd_prefix = fwd_port = None
    content_length: int | None = None
    chunked = False
    for name, value in client_headers:
        if name not in drop:
            if not underscores and b"_" in name:
                continue  # nginx's default: WSGI and CGI read X_User as X-User
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
            if host is not None:
                raise ValueError("more than one Host field")
            host = value
        elif name == b"x-request-id":
            if request_id is None:  # the first, as every other reader of the request takes it
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
            elif name == b"x-forwarded-port":
                fwd_port = value
            elif name == b"forwarded":
                out.append((name, value))
    if chunked and content_length is not None:
        raise ValueError("both Transfer-Encoding and Content-Length are present")
    if host is None:
        if require_host:
            raise ValueError("no Host field (HTTP/1.1 requires one)")
    elif not valid_host(host):
        raise ValueError("the Host field is not a valid host[:port]")
    if fwd_host is not None and VALID_HOST.match(fwd_host) is None:
        fwd_host = None  # a trusted proxy's odd value is not copied on raw
    if listed:
        # RFC 9110 §7.6.1: Connection must not name end-to-end fields. A client that
        # names Content-Length must not make the gateway drop its body's framing.
        listed.discard(b"content-length")
        # Names already dropped are not in ``out`` (a trusted proxy's Forwarded is the one
        # exception): ``Connection: keep-alive`` needs no second pass.
        if not listed <= drop or b"forwarded" in listed:
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
    if fwd_port is not None and fwd_port.isdigit():
        out.append((b"x-forwarded-port", fwd_port))
    elif server_port is not None:
        out.append((b"x-forwarded-port", str(server_port).encode()))
    out.append((b"x-real-ip", (real_ip or client_ip).encode()))
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
    # Names already dropped are not in ``out``: ``Connection: keep-alive`` (most upstreams) needs no second pass.
    if listed and not listed <= drop:
        out = [(k, v) for k, v in out if k not in listed]
    out.extend(plan.set_response)
    out.append((b"x-request-id", request_id))
    return OutboundResponse(out, content_length, has_location)
