"""gRPC through Gatehouse (hypercorn, h2c) to a grpcio server on an HTTP/2 route: every call shape.

The service has no generated code: grpcio's generic handlers with raw bytes.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator

import anyio
import grpc
import grpc.aio
import pytest

from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK

pytestmark = pytest.mark.anyio

SERVICE = "gatehouse.test.Echo"


class Echo:
    """Unary, server-streaming, client-streaming and bidirectional methods over bytes."""

    def __init__(self) -> None:
        self.deadlines: list[float | None] = []

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.deadlines.append(context.time_remaining())
        if request.startswith(b"fail"):
            context.set_trailing_metadata((("x-reason", "asked-to-fail"),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refusé: " + request.decode())
        if request == b"slow":
            await anyio.sleep(5)
        context.set_trailing_metadata((("x-trailer", "t1"), ("x-trailer-2", "two")))
        return b"echo:" + request

    async def stream(self, request: bytes, _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for n in range(int(request)):
            yield f"part {n}".encode()

    async def collect(self, requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> bytes:
        return b"+".join([request async for request in requests])

    async def chat(self, requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for request in requests:
            yield b"re:" + request

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
                "Collect": grpc.stream_unary_rpc_method_handler(self.collect),
                "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            },
        )


@contextlib.asynccontextmanager
async def grpc_server() -> AsyncIterator[tuple[str, Echo]]:
    echo = Echo()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((echo.handler(),))
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    try:
        yield f"http://{LOOPBACK}:{port}", echo
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def through_gatehouse(upstream: str, **settings) -> AsyncIterator[grpc.aio.Channel]:
    grpc_route = route("echo", f"/{SERVICE}", upstream, http2=True, strip_prefix=False)
    async with run_gateway(grpc_route, http_server="hypercorn", **settings) as gw:
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{gw.port}") as channel:
            yield channel


def method(channel: grpc.aio.Channel, name: str, kind: str):
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


async def test_unary_call_with_its_trailers_and_deadline():
    async with grpc_server() as (upstream, echo), through_gatehouse(upstream) as channel:
        call = method(channel, "Unary", "unary_unary")(b"hello", timeout=5)
        assert await call == b"echo:hello"
        assert await call.code() == grpc.StatusCode.OK
        trailers = dict(await call.trailing_metadata())
    assert trailers["x-trailer"] == "t1" and trailers["x-trailer-2"] == "two"
    # The client's deadline reached the upstream as grpc-timeout, less what the hops took.
    (remaining,) = echo.deadlines
    assert remaining is not None and 3.0 < remaining <= 5.0


async def test_a_status_code_message_and_trailers_arrive_intact():
    async with grpc_server() as (upstream, _), through_gatehouse(upstream) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await method(channel, "Unary", "unary_unary")(b"fail now", timeout=5)
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "refusé: fail now"
    assert dict(error.trailing_metadata())["x-reason"] == "asked-to-fail"


async def test_server_streaming():
    async with grpc_server() as (upstream, _), through_gatehouse(upstream) as channel:
        call = method(channel, "Stream", "unary_stream")(b"50", timeout=10)
        parts = [part async for part in call]
        assert await call.code() == grpc.StatusCode.OK
    assert parts == [f"part {n}".encode() for n in range(50)]


async def test_client_streaming():
    async def messages() -> AsyncIterator[bytes]:
        for n in range(20):
            yield str(n).encode()

    async with grpc_server() as (upstream, _), through_gatehouse(upstream) as channel:
        result = await method(channel, "Collect", "stream_unary")(messages(), timeout=10)
    assert result == b"+".join(str(n).encode() for n in range(20))


async def test_bidirectional_ping_pong_does_not_wait_for_the_end_of_the_request():
    async with grpc_server() as (upstream, _), through_gatehouse(upstream) as channel:
        call = method(channel, "Chat", "stream_stream")(timeout=10)
        replies = []
        with anyio.fail_after(8):
            for n in range(10):  # each reply is awaited before the next message is sent
                await call.write(f"ping {n}".encode())
                replies.append(await call.read())
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    assert replies == [f"re:ping {n}".encode() for n in range(10)]


async def test_an_unreachable_upstream_is_unavailable_at_once():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind((LOOPBACK, 0))
        closed = f"http://{LOOPBACK}:{sock.getsockname()[1]}"  # bound, not listening: refused
    async with through_gatehouse(closed) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await method(channel, "Unary", "unary_unary")(b"hello", timeout=20)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not connect to the upstream" in info.value.details()
    assert time.monotonic() - started < 5


async def test_an_upstream_slower_than_the_routes_read_timeout_is_deadline_exceeded():
    async with grpc_server() as (upstream, _), through_gatehouse(upstream, timeout={"read": 1}) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await method(channel, "Unary", "unary_unary")(b"slow", timeout=20)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
