"""Real servers on ephemeral loopback ports, in the test's own event loop.

``run_uvicorn`` serves an ASGI app (or a prepared ``uvicorn.Config``) with a
real ``uvicorn.Server``; ``run_hypercorn_h2`` serves one over HTTP/2 (h2c with
prior knowledge, or TLS with ALPN ``h2`` and a throwaway ``trustme`` CA);
``raw_http`` speaks HTTP/1.1 bytes that no client library would send.

Every socket is bound here, to 127.0.0.1 port 0, so tests never race for a
port; every wait is bounded, and leaving a context manager closes everything it
opened so that ``filterwarnings = error`` stays quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import hypercorn.config
import trustme
import uvicorn
from hypercorn.asyncio.run import worker_serve
from hypercorn.utils import wrap_app

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 5.0
SHUTDOWN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A uvicorn server listening on ``url``."""

    url: str
    port: int
    server: uvicorn.Server
    host: str = LOOPBACK


@dataclass(frozen=True, slots=True)
class RunningH2Server:
    """A hypercorn server speaking HTTP/2 on ``url``; ``ca_pem`` is set when it uses TLS."""

    url: str
    port: int
    config: hypercorn.config.Config
    ca_pem: Path | None = None
    host: str = LOOPBACK

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server's CA (httpx 0.28 wants a context, not a path)."""
        if self.ca_pem is None:
            raise RuntimeError("this server does not use TLS")
        return ssl.create_default_context(cafile=str(self.ca_pem))


class _Server(uvicorn.Server):
    # In-process servers must not take over SIGINT/SIGTERM: Ctrl+C belongs to
    # pytest, and nested servers would restore each other's handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def loopback_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def wait_stopped(task: asyncio.Task[None], timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        await asyncio.wait({task})
    return task.done()


@contextlib.asynccontextmanager
async def run_uvicorn(
    app: Any = None,
    *,
    config: uvicorn.Config | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    port: int = 0,
    **config_overrides: Any,
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` (or a prepared ``config``) with uvicorn on an ephemeral loopback port.

    With ``app``, the config is uvicorn's defaults plus ``config_overrides``.
    A prepared ``config`` (for example from ``app.serving.uvicorn_server.server_config``) is used
    as it is, except that its host and port are ignored: the server listens on
    a socket bound here (to ``port``, ephemeral unless a test needs a server to
    come back on a known port). A ``Config`` can be served once.

    On exit the server shuts down gracefully; if that takes longer than
    ``shutdown_timeout`` its in-flight tasks are cancelled and ``TimeoutError``
    is raised, because a test that leaves a request hanging has a bug.
    """
    if (app is None) == (config is None):
        raise TypeError("pass exactly one of app or config=")
    if config is None:
        config = uvicorn.Config(app, host=LOOPBACK, port=0, **config_overrides)
    elif config_overrides:
        raise TypeError("config overrides go into the prepared Config, not run_uvicorn")

    server = _Server(config)
    sock = loopback_socket(port)
    port = sock.getsockname()[1]

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn calls sys.exit() when lifespan startup fails; inside a
            # task that would escape to the event loop and end the test run.
            raise RuntimeError(f"uvicorn exited with status {exc.code} (see the log above)") from None

    task = asyncio.create_task(serve(), name=f"uvicorn:{port}")
    try:
        with anyio.fail_after(STARTUP_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()  # raises the startup error
                    raise RuntimeError("uvicorn stopped before it started")
                await anyio.sleep(0.005)
        scheme = "https" if config.is_ssl else "http"
        yield RunningServer(url=f"{scheme}://{LOOPBACK}:{port}", port=port, server=server)
    finally:
        server.should_exit = True
        try:
            # Shielded: a test cancelled by its own deadline still stops its server.
            with anyio.CancelScope(shield=True):
                await _stop_uvicorn(server, task, port, shutdown_timeout)
        finally:
            sock.close()


async def _stop_uvicorn(server: uvicorn.Server, task: asyncio.Task[None], port: int, timeout: float) -> None:
    if not await wait_stopped(task, timeout):
        # Not force_exit: that would skip the lifespan shutdown and leave its
        # task pending. Ending the exchanges lets the shutdown run to the end.
        for pending in list(server.server_state.tasks):
            pending.cancel()
        for connection in list(server.server_state.connections):
            connection.transport.abort()
        if not await wait_stopped(task, 1.0):
            task.cancel()
            await wait_stopped(task, 1.0)
        raise TimeoutError(f"uvicorn on port {port} did not shut down within {timeout}s")
    if not task.cancelled():
        task.result()


@contextlib.asynccontextmanager
async def run_hypercorn_h2(
    app: Any, *, tls: bool, shutdown_timeout: float = SHUTDOWN_TIMEOUT
) -> AsyncIterator[RunningH2Server]:
    """Serve ``app`` with hypercorn over HTTP/2 on an ephemeral loopback port.

    ``tls=False`` serves cleartext, where hypercorn accepts h2c with prior
    knowledge (``httpx.AsyncClient(http1=False, http2=True)``) as well as
    HTTP/1.1. ``tls=True`` serves TLS with ALPN ``h2`` (then ``http/1.1``) under
    a throwaway CA whose PEM is ``ca_pem``; trust it with ``client_ssl_context()``.

    Close TLS clients (the gateway's pool too) before leaving: asyncio waits up
    to 30 s for the peer's close_notify, so an idle connection whose client is
    still open holds shutdown past the bound and ``TimeoutError`` is raised.
    """
    config = hypercorn.config.Config()
    config.graceful_timeout = shutdown_timeout
    with contextlib.ExitStack() as stack:
        ca_pem: Path | None = None
        if tls:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatehouse-ca-")))
            ca = trustme.CA()
            ca_pem = directory / "ca.pem"
            ca.cert_pem.write_to_path(str(ca_pem))
            leaf = ca.issue_cert(LOOPBACK, "localhost")
            config.certfile = str(directory / "cert.pem")
            config.keyfile = str(directory / "key.pem")
            for n, pem in enumerate(leaf.cert_chain_pems):
                pem.write_to_path(config.certfile, append=n > 0)
            leaf.private_key_pem.write_to_path(config.keyfile)

        sock = stack.enter_context(loopback_socket())
        sock.listen()  # connections queue in the backlog until hypercorn accepts them
        port = sock.getsockname()[1]
        # hypercorn's public serve() binds its own sockets and cannot report an
        # ephemeral port; worker_serve takes ours, as hypercorn's own workers do.
        sockets = hypercorn.config.Sockets(
            secure_sockets=[sock] if tls else [], insecure_sockets=[] if tls else [sock], quic_sockets=[]
        )
        stop = asyncio.Event()
        lifespan_done = asyncio.Event()

        async def watch_lifespan(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return

            async def watched_send(message: Any) -> None:
                await send(message)
                if message["type"].startswith("lifespan.startup."):
                    lifespan_done.set()

            try:
                await app(scope, receive, watched_send)
            finally:
                lifespan_done.set()  # an app without lifespan support raises or returns

        wrapped = wrap_app(watch_lifespan, config.wsgi_max_body_size, "asgi")
        task = asyncio.create_task(
            worker_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait),
            name=f"hypercorn:{port}",
        )
        try:
            with anyio.fail_after(STARTUP_TIMEOUT):
                await lifespan_done.wait()
                # The socket already listens, so this is only to surface an
                # early failure (say, loading the certificate) here.
                for _ in range(10):
                    await asyncio.sleep(0)
            if task.done():
                task.result()
                raise RuntimeError("hypercorn stopped before it started")
            scheme = "https" if tls else "http"
            yield RunningH2Server(url=f"{scheme}://{LOOPBACK}:{port}", port=port, config=config, ca_pem=ca_pem)
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                # hypercorn itself cancels exchanges still open after graceful_timeout.
                if not await wait_stopped(task, shutdown_timeout + 1.0):
                    task.cancel()
                    await wait_stopped(task, 1.0)
                    raise TimeoutError(f"hypercorn on port {port} did not shut down within {shutdown_timeout}s")
            if not task.cancelled():
                task.result()


@dataclass(frozen=True, slots=True)
class RawResponse:
    """One HTTP/1.1 response as it came off the wire (body de-chunked)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header_values(self, name: bytes) -> list[bytes]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]


async def raw_http(host: str, port: int, request_bytes: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``request_bytes`` exactly as given; return every byte read back.

    Reading stops at the end of the first final (non-1xx) response, judged by
    its Content-Length or chunked framing, or when the server closes the
    connection (a reset counts as a close: servers reset after rejecting a
    malformed request). ``parse_response`` splits the result.
    """
    head_request = request_bytes.split(b" ", 1)[0] == b"HEAD"
    received = bytearray()
    with anyio.fail_after(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request_bytes)
            await writer.drain()
            while _parse(bytes(received), head_request, eof=False) is None:
                data = await reader.read(65536)
                if not data:
                    break
                received += data
        except ConnectionResetError:
            pass
        finally:
            writer.close()
            with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
                await writer.wait_closed()
    return bytes(received)


def parse_response(data: bytes, *, head_request: bool = False) -> RawResponse:
    """The final response in bytes from ``raw_http``; ``ValueError`` if it is incomplete."""
    parsed = _parse(data, head_request, eof=True)
    if parsed is None:
        raise ValueError(f"incomplete HTTP response: {data[:200]!r}")
    return parsed


def _parse(data: bytes, head_request: bool, *, eof: bool) -> RawResponse | None:
    start = 0
    while True:
        end_of_head = data.find(b"\r\n\r\n", start)
        if end_of_head < 0:
            return None
        status_line, *lines = data[start:end_of_head].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = [(name, value.strip()) for name, _, value in (line.partition(b":") for line in lines)]
        start = end_of_head + 4
        if not (100 <= status < 200 and status != 101):
            break  # interim responses (100 Continue) precede the final one
    response = RawResponse(status, headers, b"")
    if head_request or status in (101, 204, 304):
        return response
    if b"chunked" in b",".join(response.header_values(b"transfer-encoding")).lower():
        body = _dechunk(data, start)
        return None if body is None else RawResponse(status, headers, body)
    lengths = response.header_values(b"content-length")
    if lengths:
        length = int(lengths[0])
        return None if len(data) - start < length else RawResponse(status, headers, data[start : start + length])
    return RawResponse(status, headers, data[start:]) if eof else None


def _dechunk(data: bytes, pos: int) -> bytes | None:
    body = bytearray()
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(data[pos:line_end].split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            # Optional trailer fields, then an empty line.
            trailers_end = pos if data[pos : pos + 2] == b"\r\n" else data.find(b"\r\n\r\n", pos)
            if trailers_end < 0 or len(data) < trailers_end + 2:
                return None
            return bytes(body)
        if len(data) < pos + size + 2:
            return None
        body += data[pos : pos + size]
        pos += size + 2
