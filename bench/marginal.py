"""What leaving some modules out would save: the RSS of their import subtrees, imported last.

``bench.imports`` charges each import its own growth in the order the app imports them,
so a module first imported by a big package is charged to that package. This answers the
other question, "what if these were not imported": it replays a started gateway's imports
(``python -X importtime`` of ``gatehouse serve``) with the named modules, and every module
first imported beneath them, replaced by empty stand-ins, reads VmRSS, then imports the real
ones and reads it again. The difference is what the rest of the process does not share with
them. Linux only; a few tenths of a MiB of noise.

    .venv/bin/python -X importtime -m app.cli serve --config one-route.yaml --port 18924 2>importtime.txt
    .venv/bin/python -m bench.marginal importtime.txt websockets app.serving.websocket_protocol
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import types
import warnings
from typing import Any

LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|( *)(\S+)")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / (1 << 20)


def imports(path: str) -> list[tuple[int, str]]:
    """(depth, module) in the order ``-X importtime`` printed them: each after the imports it made."""
    found = []
    with open(path) as lines:
        for line in lines:
            match = LINE.match(line)
            if match:
                found.append(((len(match[1]) - 1) // 2, match[2]))
    return found


def subtrees(entries: list[tuple[int, str]], names: list[str]) -> set[str]:
    """The named modules (and their submodules) plus every module first imported while they were."""
    chosen: set[str] = set()
    for index, (depth, name) in enumerate(entries):
        if any(name == wanted or name.startswith(wanted + ".") for wanted in names):
            chosen.add(name)
            before = index - 1
            while before >= 0 and entries[before][0] > depth:
                chosen.add(entries[before][1])
                before -= 1
    return chosen


class _Anything(type):
    # A stand-in's attributes: a class, so modules that subclass, call or annotate with them still import.
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Anything

    def __call__(cls, *_: Any, **__: Any) -> Any:
        return Anything

    def __getitem__(cls, _: Any) -> Any:
        return Anything

    def __or__(cls, _: Any) -> Any:
        return Anything

    __ror__ = __or__

    def __iter__(cls) -> Any:
        return iter(())


class Anything(metaclass=_Anything):
    pass


class StandIn(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (Anything,), {})


class StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name: str, _path: Any, _target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if name in self.names else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = StandIn(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except BaseException:  # noqa: B036 -- a replayed import may fail (Windows-only modules, optional extras)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.marginal", description=__doc__.splitlines()[0])
    parser.add_argument("importtime", help="stderr of `python -X importtime -m app.cli serve ...`")
    parser.add_argument("modules", nargs="+", help="modules to leave out (each with its submodules)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    entries = imports(args.importtime)
    left_out = subtrees(entries, args.modules)
    stand_ins = StandIns(left_out)
    sys.meta_path.insert(0, stand_ins)
    for _, name in entries:
        if name not in left_out:
            import_quietly(name)
    gc.collect()
    without = rss_mib()
    sys.meta_path.remove(stand_ins)
    for name in [name for name in sys.modules if isinstance(sys.modules[name], StandIn)]:
        del sys.modules[name]
    for _, name in entries:
        if name in left_out:
            import_quietly(name)
    gc.collect()
    print(f"{rss_mib() - without:5.2f} MiB  {len(left_out)} modules  ({' '.join(args.modules)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
