"""Reference: fastapi-proxy-lib's ``reverse_http_app`` as its docs show it, under uvicorn.

Same server stack as Gatehouse (uvicorn, one worker, uvloop + httptools, no access
log). The library's default ``httpx.AsyncClient`` pool (100 connections, 20 kept
alive) matches Gatehouse's default ``limits``.

    python -m bench.ref_fastapi_proxy_lib --port 8002 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi_proxy_lib.fastapi.app import reverse_http_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8001")
    args = parser.parse_args()
    app = reverse_http_app(base_url=args.upstream.rstrip("/") + "/")  # the library requires a trailing /
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
