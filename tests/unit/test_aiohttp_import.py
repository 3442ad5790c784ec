"""aiohttp imported without its import-time CA-store loads (``app.outbound.aiohttp_import``).

The contexts whose ``set_default_verify_paths`` was put off still verify against the
default store once used: TLS handshakes over memory BIOs (no sockets) against a leaf from
a throwaway CA given as ``SSL_CERT_FILE``, which OpenSSL reads when the store is loaded.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.outbound.aiohttp_import import DeferredVerifyPaths, verify_paths_deferred
from tests.certs import TestCA

ROOT = Path(__file__).resolve().parents[2]

CONTEXTS = """
import json, ssl, sys
for name in sys.argv[1:]:
    __import__(name)
import aiohttp.connector as connector
print(json.dumps([
    [type(c).__name__, ssl.SSLContext.cert_store_stats(c)["x509_ca"], int(c.verify_mode), c.check_hostname]
    for c in (connector._SSL_CONTEXT_VERIFIED, connector._SSL_CONTEXT_UNVERIFIED)
]))
"""


def aiohttp_contexts(*first: str) -> list[list[object]]:
    """aiohttp's two default contexts in a fresh interpreter that imported ``first`` before aiohttp."""
    done = subprocess.run(
        [sys.executable, "-c", CONTEXTS, *first], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_aiohttp_still_loads_the_ca_store_twice_at_import() -> None:
    """When this fails, aiohttp no longer builds its contexts at import: remove app/outbound/aiohttp_import.py."""
    contexts = aiohttp_contexts()
    assert [kind for kind, *_ in contexts] == ["SSLContext", "SSLContext"]
    assert all(isinstance(loaded, int) and loaded > 0 for _, loaded, *_ in contexts)


@pytest.mark.parametrize("first", ["app.outbound.transport", "app.main"])
def test_the_gateway_imports_aiohttp_without_loading_them(first: str) -> None:
    verified, unverified = aiohttp_contexts(first)
    # As aiohttp configured them, with no certificate loaded yet.
    assert verified == ["DeferredVerifyPaths", 0, int(ssl.CERT_REQUIRED), True]
    assert unverified == ["DeferredVerifyPaths", 0, int(ssl.CERT_NONE), False]


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    """A TLS handshake between ``client`` and ``server`` over memory BIOs; raises what the client raises."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    if name == "client":
                        raise
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.fixture
def server_and_ca(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca = TestCA(tmp_path)
    leaf = ca.issue()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(leaf.cert, leaf.key)
    return server, ca.ca_pem


@pytest.fixture
def trusted_server(server_and_ca: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server whose CA is the default store's (``SSL_CERT_FILE``), as OpenSSL reads it when loaded."""
    server, ca_pem = server_and_ca
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))
    return server


def deferred_default_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Built as aiohttp's ``_make_ssl_context`` builds its two, inside ``verify_paths_deferred``."""
    with verify_paths_deferred() as noted:
        verified = ssl.create_default_context()
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        unverified.set_default_verify_paths()
    assert noted == [verified, unverified]
    return verified, unverified


def test_a_deferred_context_loads_the_default_store_at_first_use(trusted_server: ssl.SSLContext) -> None:
    server = trusted_server
    verified, unverified = deferred_default_contexts()
    assert type(verified) is DeferredVerifyPaths
    assert ssl.SSLContext.cert_store_stats(verified)["x509_ca"] == 0
    handshake(verified, server)  # trusts the CA only once the store is loaded
    assert type(verified) is ssl.SSLContext
    assert verified.cert_store_stats()["x509_ca"] == 1
    handshake(unverified, server)
    assert unverified.get_ca_certs() != []


def test_a_deferred_context_still_refuses_a_server_the_store_does_not_trust(
    server_and_ca: tuple[ssl.SSLContext, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = server_and_ca
    monkeypatch.setenv("SSL_CERT_FILE", str(TestCA(tmp_path, "other").ca_pem))
    verified, _ = deferred_default_contexts()
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(verified, server)


def test_outside_the_deferral_contexts_load_the_store_at_once() -> None:
    with verify_paths_deferred():
        pass
    context = ssl.create_default_context()
    assert type(context) is ssl.SSLContext
    assert ssl.SSLContext.cert_store_stats(context)["x509_ca"] > 0


def test_only_plain_contexts_of_the_importing_thread_are_deferred(trusted_server: ssl.SSLContext) -> None:
    """A subclass, or a context another thread builds meanwhile, loads the store at once as it asked."""
    server = trusted_server

    class Subclass(ssl.SSLContext):
        pass

    built: list[ssl.SSLContext] = []
    with verify_paths_deferred() as noted:
        subclass = Subclass(ssl.PROTOCOL_TLS_CLIENT)
        subclass.set_default_verify_paths()
        other = threading.Thread(target=lambda: built.append(ssl.create_default_context()))
        other.start()
        other.join(10)
    assert noted == [] and type(subclass) is Subclass and type(built[0]) is ssl.SSLContext
    for context in (subclass, built[0]):
        assert ssl.SSLContext.cert_store_stats(context)["x509_ca"] == 1
        handshake(context, server)


def test_a_store_that_fails_to_load_is_loaded_again_at_the_next_use(
    trusted_server: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The context stays deferred until the store is in: no handshake ever runs against an empty one."""
    server = trusted_server
    verified, _ = deferred_default_contexts()
    real = ssl.SSLContext.set_default_verify_paths

    def failing(_context: ssl.SSLContext) -> None:
        raise OSError("store unreadable")

    monkeypatch.setattr(ssl.SSLContext, "set_default_verify_paths", failing)
    with pytest.raises(OSError, match="store unreadable"):
        handshake(verified, server)
    assert type(verified) is DeferredVerifyPaths
    monkeypatch.setattr(ssl.SSLContext, "set_default_verify_paths", real)
    handshake(verified, server)
    assert type(verified) is ssl.SSLContext
