"""Fail when `app/` breaks its layering: an import cycle between groups, an import a package's
docstring does not allow, or a module past 400 lines.

A group is a subpackage of `app` (`app.proxy`, `app.edge`, ...) or a top-level module
(`app.errors`, `app.cli`, ...). Every import counts: module level, inside functions and
under `TYPE_CHECKING`, because a cycle hidden in a function is still a cycle a reader has
to hold in their head. Each package's `__init__.py` docstring ends with a line
`May import: ``app.x``, ``app.y``.` (or `nothing else of the app`); that line is the
contract, so the documentation and the code cannot drift apart.

Why a script and not import-linter: import-linter's contracts are written per pair of
layers and ignore imports inside functions by default; this check needs no list to keep
in step with the tree (a new group is checked the day it appears) and runs in ~50 ms.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

MAX_LINES = 400
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "app"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def group_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return ".".join(parts[:2]) if len(parts) > 1 else PACKAGE


def imported_modules(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (1 if is_package else 0)
                prefix = ".".join(base[:keep])
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.add(target)
            # `from app import proxy` imports the subpackage itself.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def group_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], list[str]] = defaultdict(list)
    known = {module_name(p) for p in (ROOT / PACKAGE).rglob("*.py")}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        module = module_name(path)
        source = group_of(module)
        assert source is not None
        edges.setdefault(source, set())
        for target in imported_modules(path, module):
            if target not in known:
                continue
            dest = group_of(target)
            if dest is None or dest == source or dest == PACKAGE:
                continue
            edges[source].add(dest)
            why[(source, dest)].append(f"{module} -> {target}")
    return edges, why


def allowed_imports(group: str) -> set[str] | None:
    """The groups ``group``'s docstring allows it to import; None when it states no contract."""
    init = ROOT / Path(*group.split(".")) / "__init__.py"
    if not init.is_file():
        return None
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    match = re.search(r"May import:(.*?)(?:\n\n|$)", doc, re.S)
    if match is None:
        return None
    return set(re.findall(r"``(app(?:\.\w+)?)``", match.group(1)))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    failures: list[str] = []
    edges, why = group_graph()
    for component in cycles(edges):
        failures.append("import cycle between " + ", ".join(component) + ":")
        members = set(component)
        for (source, dest), reasons in sorted(why.items()):
            if source in members and dest in members:
                failures.extend(f"    {reason}" for reason in reasons[:3])
    for source in sorted(edges):
        allowed = allowed_imports(source) if source != PACKAGE else set()
        if allowed is None:
            if (ROOT / Path(*source.split(".")) / "__init__.py").is_file():
                failures.append(f"{source}/__init__.py: the docstring must end with a 'May import:' line")
            continue
        for dest in sorted(edges[source] - allowed):
            failures.append(f"{source} may not import {dest} (its __init__ docstring allows {sorted(allowed)}):")
            failures.extend(f"    {reason}" for reason in why[(source, dest)][:3])
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            failures.append(f"{path.relative_to(ROOT)} has {lines} lines (max {MAX_LINES}): split it by concern")
    if "-v" in sys.argv:
        for source in sorted(edges):
            print(f"{source} -> {', '.join(sorted(edges[source])) or '-'}")  # noqa: T201
    for line in failures:
        print(line, file=sys.stderr)  # noqa: T201
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
