"""Reference: a small streaming reverse proxy on aiohttp (server and client), one process, uvloop.

Bodies stream both ways (request: the server's StreamReader feeds the client
request; response: ``iter_any`` into a ``StreamResponse``), hop-by-hop headers are
dropped, Content-Length is kept so responses are not re-chunked.

    python -m bench.ref_aiohttp_proxy --port 8003 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _forwardable(headers: CIMultiDictProxy[str], *drop: str) -> CIMultiDict[str]:
    skip = HOP_BY_HOP.union(drop)
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in skip)


async def proxy(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + request.raw_path
    headers = _forwardable(request.headers, "host")
    data = request.content if request.body_exists else None
    response: web.StreamResponse | None = None
    try:
        async with session.request(request.method, url, headers=headers, data=data, allow_redirects=False) as upstream:
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=_forwardable(upstream.headers)
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except ClientError as exc:
        if response is not None and response.prepared:
            raise  # headers are out: all we can do is drop the connection
        return web.Response(status=502, text=f"upstream error: {type(exc).__name__}\n")


async def serve(host: str, port: int, upstream: str) -> None:
    app = web.Application(client_max_size=0)
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_route("*", "/{tail:.*}", proxy)
    session = ClientSession(
        connector=TCPConnector(limit=100),
        timeout=ClientTimeout(total=None, sock_connect=5, sock_read=30),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
    app[SESSION] = session
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048).start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8001")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
