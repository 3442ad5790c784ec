"""TLS termination: HTTPS on the listening port, certificate renewal, client certificates, upstream mTLS."""

from __future__ import annotations

import ssl

import anyio
import httpx
import pytest

from tests.certs import TestCA, peer_certificate
from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn
from tests.upstreams import make_upstream

pytestmark = pytest.mark.anyio


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path)


def tls_settings(ca: TestCA, **extra):
    server = ca.issue(name="server")
    return {"cert_file": str(server.cert), "key_file": str(server.key), **extra}


async def test_https_is_served_and_the_upstream_sees_the_https_scheme(ca, upstream):
    up, _ = upstream
    async with (
        run_gateway(route("api", "/api", up.url), tls=tls_settings(ca)) as gw,
        httpx.AsyncClient(verify=ca.client_context()) as client,
    ):
        assert gw.url.startswith("https://")
        response = await client.get(f"{gw.url}/api/echo")
    assert response.status_code == 200
    assert dict(response.json()["headers"])["x-forwarded-proto"] == "https"


async def test_plain_http_to_the_tls_port_gets_no_answer(ca, upstream):
    up, stats = upstream
    async with run_gateway(route("api", "/api", up.url), tls=tls_settings(ca)) as gw, httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{gw.port}/api/echo")
    assert sum(stats.requests.values()) == 0


async def test_a_renewed_certificate_is_served_to_new_connections_without_dropping_open_ones(ca, upstream):
    up, _ = upstream
    settings = tls_settings(ca)
    async with run_gateway(route("api", "/api", up.url), tls=settings) as gw:
        async with httpx.AsyncClient(verify=ca.client_context()) as kept:
            first = await kept.get(f"{gw.url}/api/echo")
            old = peer_certificate(first)
            ca.issue(name="server")  # the renewal: same paths, new certificate and key
            renewed = None
            with anyio.fail_after(10):
                while renewed is None:
                    await anyio.sleep(0.3)
                    async with httpx.AsyncClient(verify=ca.client_context()) as fresh:
                        seen = peer_certificate(await fresh.get(f"{gw.url}/api/echo"))
                    renewed = seen if seen != old else None
            # The connection opened before the renewal is still open, on the old certificate.
            again = await kept.get(f"{gw.url}/api/echo")
            assert again.status_code == 200
            assert again.extensions["network_stream"] is first.extensions["network_stream"]
            assert peer_certificate(again) == old


async def test_a_half_written_certificate_keeps_the_old_one_in_service(ca, upstream):
    up, _ = upstream
    settings = tls_settings(ca)
    async with run_gateway(route("api", "/api", up.url), tls=settings) as gw:
        async with httpx.AsyncClient(verify=ca.client_context()) as client:
            old = peer_certificate(await client.get(f"{gw.url}/api/echo"))
        with open(settings["cert_file"], "r+b") as cert:
            cert.truncate(100)
        await anyio.sleep(1.2)  # past the reloader's check interval
        for _ in range(2):
            async with httpx.AsyncClient(verify=ca.client_context()) as client:
                response = await client.get(f"{gw.url}/api/echo")
            assert response.status_code == 200
            assert peer_certificate(response) == old


@pytest.mark.parametrize("required", [True, False], ids=["required", "optional"])
async def test_mtls_auth_passes_the_certificate_subject_as_the_identity(ca, upstream, required):
    up, stats = upstream
    clients = TestCA(ca.directory, name="clients")
    alice = clients.issue("alice@example.com", common_name="alice", name="alice")
    tls = tls_settings(ca, client_ca_file=str(clients.ca_pem), client_cert="required" if required else "optional")
    auth = {"type": "mtls", "identity_header": "X-Client"}
    async with run_gateway(route("api", "/api", up.url, auth=auth), tls=tls) as gw:
        async with httpx.AsyncClient(verify=ca.client_context(alice)) as client:
            response = await client.get(f"{gw.url}/api/echo", headers={"X-Client": "CN=mallory"})
        assert response.status_code == 200
        assert [v for k, v in response.json()["headers"] if k == "x-client"] == ["CN=alice,OU=clients,O=Gatehouse"]
        anonymous = httpx.AsyncClient(verify=ca.client_context())
        async with anonymous:
            if required:
                with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                    await anonymous.get(f"{gw.url}/api/echo")
            else:
                refused = await anonymous.get(f"{gw.url}/api/echo")
                assert refused.status_code == 403
                assert refused.headers["content-type"] == "application/problem+json"
    assert stats.requests["/echo"] == 1


async def test_mtls_auth_with_a_subject_list_refuses_other_certificates(ca, upstream):
    up, stats = upstream
    clients = TestCA(ca.directory, name="clients")
    bob = clients.issue("bob@example.com", common_name="bob", name="bob")
    tls = tls_settings(ca, client_ca_file=str(clients.ca_pem))
    auth = {"type": "mtls", "subjects": ["CN=alice,OU=clients,O=Gatehouse"]}
    async with (
        run_gateway(route("api", "/api", up.url, auth=auth), tls=tls) as gw,
        httpx.AsyncClient(verify=ca.client_context(bob)) as client,
    ):
        response = await client.get(f"{gw.url}/api/echo")
    assert response.status_code == 403
    assert sum(stats.requests.values()) == 0


async def test_a_route_presents_its_client_certificate_to_an_upstream_that_requires_one(ca):
    app, stats = make_upstream()
    clients = TestCA(ca.directory, name="clients")
    gatehouse = clients.issue("gatehouse.internal", common_name="gatehouse", name="gatehouse")
    upstream_cert = ca.issue(name="upstream")
    async with run_uvicorn(
        app,
        ssl_certfile=str(upstream_cert.cert),
        ssl_keyfile=str(upstream_cert.key),
        ssl_ca_certs=str(clients.ca_pem),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_level="warning",
    ) as up:
        with_cert = route(
            "mtls",
            "/mtls",
            up.url,
            verify=str(ca.ca_pem),
            client_cert_file=str(gatehouse.cert),
            client_key_file=str(gatehouse.key),
        )
        without = route("plain", "/plain", up.url, verify=str(ca.ca_pem))
        async with run_gateway(with_cert, without) as gw, httpx.AsyncClient() as client:
            ok = await client.get(f"{gw.url}/mtls/echo")
            refused = await client.get(f"{gw.url}/plain/echo")
    assert ok.status_code == 200
    assert refused.status_code == 502
    assert stats.requests["/echo"] == 1


async def test_mtls_auth_covers_websocket_handshakes(ca):
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from tests.websocket_upstream import run_websocket_upstream

    clients = TestCA(ca.directory, name="clients")
    alice = clients.issue("alice@example.com", common_name="alice", name="alice")
    tls = tls_settings(ca, client_ca_file=str(clients.ca_pem), client_cert="optional")
    auth = {"type": "mtls", "identity_header": "X-Client"}
    with anyio.fail_after(20):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url, auth=auth), tls=tls) as gw:
            url = gw.url.replace("https://", "wss://") + "/ws/echo"
            async with connect(url, ssl=ca.client_context(alice)) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, ssl=ca.client_context()):
                    pass
    assert refused.value.response.status_code == 403
    _, headers = up.handshakes[0]
    assert headers["x-client"] == "CN=alice,OU=clients,O=Gatehouse"
    assert len(up.handshakes) == 1
