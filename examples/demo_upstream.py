"""A tiny upstream to put behind Gatehouse: ``python -m examples.demo_upstream --port 8001``.

``GET /hello``   a JSON greeting
``ANY /echo``    the method, path, query, headers and body size it received
``GET /stream``  a few server-sent events (``?count=5&interval=0.2``)
``GET /slow``    answers after ``?seconds=`` (at most 60), to see timeouts (504)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import AsyncIterator

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def _bounded(request: Request, name: str, default: float, high: float) -> float:
    try:
        value = float(request.query_params.get(name, default))
    except ValueError:
        return default
    return min(max(value, 0.0), high)


async def hello(_: Request) -> Response:
    return JSONResponse({"message": "Hello from the demo upstream", "service": "demo"})


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            # A list of pairs, not a dict: repeated headers stay visible.
            "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in request.headers.raw],
            "body_bytes": len(body),
        }
    )


async def stream(request: Request) -> Response:
    count = int(_bounded(request, "count", 5, 100))
    interval = _bounded(request, "interval", 0.2, 5.0)

    async def events() -> AsyncIterator[bytes]:
        for number in range(1, count + 1):
            data = json.dumps({"n": number, "of": count})
            yield f"id: {number}\nevent: tick\ndata: {data}\n\n".encode()
            if number < count:
                await anyio.sleep(interval)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def slow(request: Request) -> Response:
    seconds = _bounded(request, "seconds", 1.0, 60.0)
    await anyio.sleep(seconds)
    return JSONResponse({"slept": seconds})


app = Starlette(
    routes=[
        Route("/hello", hello, methods=["GET"]),
        Route("/echo", echo, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        Route("/stream", stream, methods=["GET"]),
        Route("/slow", slow, methods=["GET"]),
    ]
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo_upstream", description="A tiny upstream to put behind Gatehouse."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    # uvicorn re-raises the signal it stopped on once it has shut down; on SIGTERM that
    # lands here and makes a graceful stop exit 0 rather than 143.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
