"""Gatehouse: an API gateway and webhook relay."""

import sys

__version__ = "0.1.0"

# httpx's ``__init__`` imports its command-line client (``httpx._main``: click, pygments, rich) whenever
# those happen to be installed, only to export ``httpx.main`` for the ``httpx`` command. Gatehouse never
# calls it, and rich arrives with unrelated packages (fastapi[standard], typer, schemathesis in dev):
# 3-4 MiB RSS in every gateway process. A ``None`` entry in ``sys.modules`` makes that one import raise
# ModuleNotFoundError (https://docs.python.org/3/reference/import.html#the-module-cache), which httpx
# catches: in this process ``httpx.main`` then asks for ``pip install 'httpx[cli]'``. The ``httpx``
# command runs in its own process and is unaffected. Nothing changes if httpx was imported first.
if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # typeshed leaves out the documented None
