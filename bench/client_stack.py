"""What an httpx-style client's ``send`` costs per request, with a transport that does nothing.

    python -m bench.client_stack httpx            # the client Gatehouse uses
    python -m bench.client_stack httpx2           # its successor, if installed (pip install httpx2)
    valgrind --tool=callgrind python -m bench.client_stack httpx --rounds 1   # then --rounds 3: the
                                                  # difference / 2,000 is instructions per send

Each request is built with the public constructor, sent with ``send(stream=True)``,
read with ``aiter_raw`` and closed, as the gateway does; the transport answers with
an in-memory response, so only the client's own work is measured. It also counts how
many of 100 closed responses are left for the cyclic garbage collector (httpx 0.28
leaves each response and its body stream in a reference cycle; see
``app/outbound/fastpath.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import time
from typing import Any

WARMUP = 500
PER_ROUND = 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.client_stack", description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=("httpx", "httpx2"), help="the client package to measure")
    parser.add_argument("--rounds", type=int, default=5, help=f"rounds of {PER_ROUND} sends; the best is shown (5)")
    return parser.parse_args(argv)


async def measure(mod: Any, rounds: int) -> tuple[float, int]:
    """Best microseconds per send+read+close over ``rounds``, and responses left to the cyclic GC per 100."""

    class Answer(mod.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        async def handle_async_request(self, request: Any) -> Any:
            fields = [(b"content-type", b"application/json"), (b"content-length", b"2")]
            return mod.Response(200, headers=fields, stream=mod.ByteStream(b"{}"), request=request)

    client = mod.AsyncClient(transport=Answer())
    url = mod.URL("http://upstream.test/small.json")
    headers = [(b"host", b"upstream.test"), (b"x-request-id", b"abc"), (b"x-forwarded-for", b"127.0.0.1")]

    async def one() -> None:
        response = await client.send(mod.Request("GET", url, headers=headers), stream=True)
        async for _ in response.aiter_raw():
            pass
        await response.aclose()

    for _ in range(WARMUP):
        await one()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(PER_ROUND):
            await one()
        best = min(best, (time.perf_counter() - started) / PER_ROUND * 1e6)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(100):
            await one()
        gc.collect()
        cycles = sum(1 for obj in gc.garbage if isinstance(obj, mod.Response))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    await client.aclose()
    return best, cycles


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mod = importlib.import_module(args.module)
    best, cycles = asyncio.run(measure(mod, args.rounds))
    print(f"{args.module} {mod.__version__}: {best:.1f} us per send+read+close (best of {args.rounds} x {PER_ROUND})")
    print(f"responses left to the cyclic GC: {cycles} of 100")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
