"""aiohttp, imported without loading the system CA store twice at import time.

aiohttp (3.14.5, and its master) builds two TLS contexts when ``aiohttp.connector`` is
imported (``_SSL_CONTEXT_VERIFIED`` and ``_SSL_CONTEXT_UNVERIFIED``, for connectors given
no context of their own; aio-libs/aiohttp#9029), and each loads the system CA store:
2.7 MiB of RSS in a gateway with no HTTPS upstream, with no option or variable to skip
it. Gatehouse gives aiohttp a context of its own for every HTTPS upstream
(``clients.ssl_context``) and none for plain HTTP, so it never uses those two.

``import_aiohttp`` imports aiohttp with ``set_default_verify_paths`` put off for the plain
``SSLContext``s the importing thread builds meanwhile: each loads the store when it is first
used (``wrap_bio``, ``wrap_socket``) or asked about its certificates, so a connector left to
aiohttp's defaults still verifies against the system store. A use never sees an empty store:
a load that fails is tried again at the next use, and a use on another thread waits for it.
That first use reads the store on the event loop, as building the context at first use
would. When aiohttp builds them lazily itself, this module can go
(``tests/unit/test_aiohttp_import.py`` says when).
"""

from __future__ import annotations

import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOADING = threading.Lock()  # one store load at a time, for every deferred context


class DeferredVerifyPaths(ssl.SSLContext):
    """An ``SSLContext`` whose ``set_default_verify_paths`` was put off: it runs before the first use,
    and the context is then a plain ``ssl.SSLContext`` again."""

    def _load(self) -> None:
        # Load, then leave the class: a use that arrives meanwhile (another thread; loading releases
        # the GIL) waits here instead of handshaking against an empty store, and a load that fails
        # leaves the context deferred, to be loaded again at its next use.
        with _LOADING:
            if type(self) is DeferredVerifyPaths:
                ssl.SSLContext.set_default_verify_paths(self)
                self.__class__ = ssl.SSLContext  # type: ignore[assignment] # same layout: a subclass without slots

    def set_default_verify_paths(self) -> None:
        self._load()

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load()
        return ssl.SSLContext.wrap_bio(self, *args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load()
        return ssl.SSLContext.wrap_socket(self, *args, **kwargs)

    def get_ca_certs(self, binary_form: bool = False) -> Any:
        self._load()
        return ssl.SSLContext.get_ca_certs(self, binary_form)

    def cert_store_stats(self) -> dict[str, int]:
        self._load()
        return ssl.SSLContext.cert_store_stats(self)


@contextmanager
def verify_paths_deferred() -> Iterator[list[ssl.SSLContext]]:
    """While inside, ``set_default_verify_paths`` on a plain ``SSLContext`` built by this thread makes it a
    ``DeferredVerifyPaths`` (it loads the store at first use) and notes it; any other context (a
    subclass, or one another thread builds meanwhile: the method is the class's) loads at once."""
    noted: list[ssl.SSLContext] = []
    original = ssl.SSLContext.set_default_verify_paths
    importing = threading.get_ident()

    def defer(self: ssl.SSLContext) -> None:
        if type(self) is ssl.SSLContext and threading.get_ident() == importing:
            self.__class__ = DeferredVerifyPaths
            noted.append(self)
        else:
            original(self)

    ssl.SSLContext.set_default_verify_paths = defer  # type: ignore[method-assign]
    try:
        yield noted
    finally:
        ssl.SSLContext.set_default_verify_paths = original  # type: ignore[method-assign]


def import_aiohttp() -> None:
    """Import aiohttp (see the docstring); nothing to do if its connector is already imported."""
    if "aiohttp.connector" in sys.modules:
        return
    with verify_paths_deferred():
        import aiohttp  # noqa: F401
