"""Clients speak HTTP/2 to Gatehouse under hypercorn: h2c with prior knowledge, h2 over TLS by ALPN."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket

import anyio
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import hyperframe.frame
import pytest

from tests.certs import TestCA
from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, run_uvicorn
from tests.upstreams import LARGE_CHUNK, make_upstream

pytestmark = pytest.mark.anyio

NGHTTP = shutil.which("nghttp")
H2LOAD = shutil.which("h2load")
needs_nghttp2 = pytest.mark.skipif(
    NGHTTP is None or H2LOAD is None, reason="nghttp2-client is not installed (scripts/test-services installs it)"
)


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path)


@pytest.fixture
def tls(ca):
    server = ca.issue(name="server")
    return {"cert_file": str(server.cert), "key_file": str(server.key)}


async def test_h2c_with_prior_knowledge(upstream):
    up, _ = upstream
    async with (
        run_gateway(route("api", "/api", up.url), http_server="hypercorn") as gw,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):
        body = bytes(range(256)) * 1000
        response = await client.post(f"{gw.url}/api/echo?x=1", content=body)
        async with httpx.AsyncClient() as http1:
            plain = await http1.get(f"{gw.url}/api/echo")
    assert response.http_version == "HTTP/2"
    echo = response.json()
    assert echo["body_length"] == len(body) and echo["query_string"] == "x=1"
    assert response.headers["server"] == "gatehouse"
    assert plain.http_version == "HTTP/1.1" and plain.status_code == 200


async def test_h2_over_tls_by_alpn_with_a_renewable_certificate(ca, tls, upstream):
    up, _ = upstream
    async with (
        run_gateway(route("api", "/api", up.url), http_server="hypercorn", tls=tls) as gw,
        httpx.AsyncClient(http2=True, verify=ca.client_context()) as client,
    ):
        responses = await asyncio.gather(*(client.get(f"{gw.url}/api/echo?n={n}") for n in range(20)))
        problem = await client.get(f"{gw.url}/nowhere")
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert [r.json()["query_string"] for r in responses] == [f"n={n}" for n in range(20)]
    assert {dict(r.json()["headers"])["x-forwarded-proto"] for r in responses} == {"https"}
    assert problem.status_code == 404 and problem.headers["content-type"] == "application/problem+json"


async def test_mtls_identity_reaches_routes_under_hypercorn(ca, upstream):
    up, _ = upstream
    clients = TestCA(ca.directory, name="clients")
    alice = clients.issue("alice@example.com", common_name="alice", name="alice")
    server = ca.issue(name="server")
    tls = {"cert_file": str(server.cert), "key_file": str(server.key), "client_ca_file": str(clients.ca_pem)}
    auth = {"type": "mtls", "identity_header": "X-Client"}
    async with (
        run_gateway(route("api", "/api", up.url, auth=auth), http_server="hypercorn", tls=tls) as gw,
        httpx.AsyncClient(http2=True, verify=ca.client_context(alice)) as client,
    ):
        response = await client.get(f"{gw.url}/api/echo")
    assert response.http_version == "HTTP/2"
    assert dict(response.json()["headers"])["x-client"] == "CN=alice,OU=clients,O=Gatehouse"


@needs_nghttp2
async def test_nghttp_and_h2load_over_tls(tls, upstream):
    up, _ = upstream
    async with run_gateway(route("api", "/api", up.url), http_server="hypercorn", tls=tls) as gw:
        url = f"{gw.url}/api/echo"
        nghttp = await anyio.run_process([NGHTTP, "-nv", url], check=False)
        load = await anyio.run_process([H2LOAD, "-n", "200", "-c", "2", "-m", "10", url], check=False)
    trace = nghttp.stdout.decode()
    assert nghttp.returncode == 0, nghttp.stderr.decode()
    assert "The negotiated protocol: h2" in trace
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", trace)
    report = load.stdout.decode()
    assert load.returncode == 0, report
    assert "Application protocol: h2" in report
    assert re.search(r"requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed", report), report
    assert re.search(r"status codes: 200 2xx", report), report


async def test_a_client_that_opens_streams_and_never_reads_is_bounded():
    """Flow control holds each response where it is: the upstream is no longer read, nothing piles up in
    Gatehouse, other clients are served, and a stream over the limit ends the connection, which frees it all."""
    app, stats = make_upstream()
    size = 64 * 1024 * 1024
    # Each stuck stream holds an upstream connection: the pool must have room for the other client.
    limits = {"max_connections": 150}
    async with (
        run_uvicorn(app) as up,
        run_gateway(
            route("api", "/api", up.url), http_server="hypercorn", limits=limits, shutdown_grace=2, timeout={"write": 3}
        ) as gw,
    ):
        sock = socket.create_connection((LOOPBACK, gw.port))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})

        headers = [
            (":method", "GET"),
            (":path", f"/api/large?bytes={size}"),
            (":scheme", "http"),
            (":authority", f"{LOOPBACK}:{gw.port}"),
        ]

        async def open_streams(count: int) -> None:
            for _ in range(count):
                conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
            await loop.sock_sendall(sock, conn.data_to_send())

        async def open_one_too_many() -> None:
            """A HEADERS frame h2 would refuse to send (over the server's limit), written by hand."""
            frame = hyperframe.frame.HeadersFrame(conn.highest_outbound_stream_id + 2)
            frame.data = conn.encoder.encode(headers)
            frame.flags.add("END_STREAM")
            frame.flags.add("END_HEADERS")
            await loop.sock_sendall(sock, frame.serialize())

        async def read_for(seconds: float) -> list[h2.events.Event]:
            """Read frames, never acknowledging data (no WINDOW_UPDATE is ever sent)."""
            events: list[h2.events.Event] = []
            with anyio.move_on_after(seconds):
                while data := await loop.sock_recv(sock, 65536):
                    events.extend(conn.receive_data(data))
                    conn.data_to_send()  # settings ACKs and the like: dropped, the client is hostile
            return events

        try:
            rss_before = _rss()
            await open_streams(100)  # hypercorn's limit of concurrent streams
            first = await read_for(3)
            open_before = stats.open_streams
            sent = sum(record.chunks_sent for record in stats.streams) * LARGE_CHUNK
            grown = _rss() - rss_before
            async with httpx.AsyncClient(http1=False, http2=True) as other:
                assert (await other.get(f"{gw.url}/api/echo")).status_code == 200
            await open_one_too_many()
            last = await read_for(5)
        finally:
            sock.close()
        await stats.wait_for(lambda: stats.open_streams == 0, timeout=15)
        await stats.wait_for(lambda: gw.connections_in_use() == 0, timeout=5)
    assert sum(isinstance(e, h2.events.ResponseReceived) for e in first) == 100
    assert 0 < open_before <= 100
    # The upstream (in this process too) wrote what the kernel's socket buffers took; this process held
    # a small part of it (without the fix in app/serving/hypercorn_server.py it held all of it).
    assert sent > 100 * 1024 * 1024, sent
    assert grown < sent / 4, (grown, sent)
    terminated = [e for e in last if isinstance(e, h2.events.ConnectionTerminated)]
    assert terminated and terminated[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR


def _rss() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_connection_dropped_with_responses_in_flight_frees_their_upstream_connections(upstream):
    """hypercorn 0.18 kept such exchanges waiting for ever; after 10 of them the route's pool was empty."""
    up, _ = upstream
    limits = {"max_connections": 10}
    async with run_gateway(route("api", "/api", up.url), http_server="hypercorn", limits=limits) as gw:
        for _ in range(3):
            sock = socket.create_connection((LOOPBACK, gw.port))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})  # nothing may be sent back
            authority = f"{LOOPBACK}:{gw.port}"
            for _ in range(10):
                headers = [(":method", "GET"), (":path", "/api/echo"), (":scheme", "http"), (":authority", authority)]
                conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
            await loop.sock_sendall(sock, conn.data_to_send())
            responses = 0
            with anyio.move_on_after(5):
                while responses < 10 and (data := await loop.sock_recv(sock, 65536)):
                    responses += sum(isinstance(e, h2.events.ResponseReceived) for e in conn.receive_data(data))
            assert responses == 10  # headers out, bodies held by the closed window
            sock.close()
            with anyio.fail_after(5):
                while gw.connections_in_use():
                    await anyio.sleep(0.02)
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            assert (await client.get(f"{gw.url}/api/echo")).status_code == 200
