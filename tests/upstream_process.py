"""The test upstream as its own process (``python -m tests.upstream_process --port N``),
for tests that kill an upstream with SIGKILL."""

from __future__ import annotations

import argparse

import uvicorn

from tests.upstreams import make_upstream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app, _ = make_upstream()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
