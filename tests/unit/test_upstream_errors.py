"""httpx's transport errors become the gateway error (and metrics kind) that says what failed."""

from __future__ import annotations

import httpx
import pytest

from app.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.proxy.forwarding import map_upstream_errors


@pytest.mark.parametrize(
    ("raised", "expected", "kind", "says"),
    [
        (httpx.PoolTimeout("p"), UpstreamUnavailable, "pool", "no upstream connection became free"),
        (httpx.ConnectTimeout("c"), UpstreamTimeout, "timeout", "timed out connecting to"),
        (httpx.ReadTimeout("r"), UpstreamTimeout, "timeout", "timed out reading from"),
        (httpx.WriteTimeout("w"), UpstreamTimeout, "timeout", "timed out writing to"),
        (httpx.ConnectError("c"), UpstreamError, "connect", "could not connect"),
        (httpx.ReadError("r"), UpstreamError, "reset", "failed (ReadError)"),
        (httpx.RemoteProtocolError("r"), UpstreamError, "reset", "failed (RemoteProtocolError)"),
    ],
)
def test_each_transport_error_maps_to_what_failed(raised, expected, kind, says):
    with pytest.raises(UpstreamError) as caught, map_upstream_errors("users"):
        raise raised
    assert type(caught.value) is expected
    assert caught.value.kind == kind
    assert "Route 'users'" in caught.value.detail and says in caught.value.detail
    assert caught.value.__cause__ is raised


def test_a_pool_timeout_asks_the_client_to_retry_shortly():
    with pytest.raises(UpstreamUnavailable) as caught, map_upstream_errors("users"):
        raise httpx.PoolTimeout("p")
    assert (b"retry-after", b"1") in caught.value.headers


@pytest.mark.parametrize("raised", [ValueError("not httpx"), httpx.InvalidURL("not transport")])
def test_anything_else_passes_through(raised):
    with pytest.raises(type(raised)) as caught, map_upstream_errors("users"):
        raise raised
    assert caught.value is raised
