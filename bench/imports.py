"""Where a started gateway's resident memory goes: RSS growth per imported package.

Builds the app (``app.main.create_app``) from ``--config`` and runs its lifespan
once, as a server process does before its first request, with an import hook that
reads VmRSS (/proc/self/statm) before and after every first import. Each import's
growth minus that of the imports it triggers is charged to its top-level package
(``app.*`` modules to their subpackage), the way ``python -X importtime`` reports
self time. What is left (the interpreter before the first import, and memory the
app builds outside imports) is printed as its own lines. Linux only.

    .venv/bin/python -m bench.imports --config examples/gatehouse.yaml
"""

from __future__ import annotations

import argparse
import builtins
import collections
import os
import sys
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def package(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "app" else parts[0]


class ImportMeter:
    """Charges RSS growth during each first import to its package, exclusive of nested imports."""

    def __init__(self) -> None:
        self.own: collections.Counter[str] = collections.Counter()
        self._stack: list[list[Any]] = []
        self._import = builtins.__import__

    def __enter__(self) -> ImportMeter:
        builtins.__import__ = self._metered
        return self

    def __exit__(self, *_: object) -> None:
        builtins.__import__ = self._import

    def _metered(self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level or name in sys.modules:
            return self._import(name, globals, locals, fromlist, level)
        start = rss()
        self._stack.append([package(name), 0])
        try:
            return self._import(name, globals, locals, fromlist, level)
        finally:
            key, nested = self._stack.pop()
            grown = rss() - start
            self.own[key] += grown - nested
            if self._stack:
                self._stack[-1][1] += grown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/gatehouse.yaml", help="Gatehouse YAML (default: the example)")
    parser.add_argument("--top", type=int, default=30, help="packages to list (default 30)")
    args = parser.parse_args(argv)
    os.environ["GATEHOUSE_CONFIG"] = args.config
    before = rss()
    with ImportMeter() as meter:
        import anyio

        import app.main

        gateway = app.main.create_app()

        async def start_and_stop() -> None:
            async with gateway.router.lifespan_context(gateway):
                pass

        anyio.run(start_and_stop)
    total = rss()
    imported = sum(meter.own.values())
    print(f"{'MiB':>6}  package (RSS growth while first imported, nested imports excluded)")
    for name, grown in meter.own.most_common(args.top):
        print(f"{grown / MIB:6.2f}  {name}")
    rest = imported - sum(grown for _, grown in meter.own.most_common(args.top))
    print(f"{rest / MIB:6.2f}  {len(meter.own) - args.top} other packages")
    print(f"{imported / MIB:6.2f}  all imports ({len(sys.modules)} modules)")
    print(f"{before / MIB:6.2f}  the interpreter before the first import")
    print(f"{(total - before - imported) / MIB:6.2f}  built outside imports (the app, its lifespan)")
    print(f"{total / MIB:6.2f}  RSS after create_app and the lifespan")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
