"""TLS for the listening port: the server's SSL context, renewed certificates, the client certificate's subject.

``CertificateReloader.context`` is the context the server listens with. Its SNI
callback runs at the start of every handshake (with or without SNI); at most
once a second it looks at the certificate and key files, and when they have
changed it builds a new context from them. Each new handshake is then moved to
the newest context, so a renewed certificate is served without a restart while
open connections keep the one they started with. Files caught half-written do
not load; the old certificate stays until they do.

The client certificate's subject reaches the app as the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_name"]``), from
``ClientCertificateMixin`` under uvicorn and ``SubjectSSLObject`` under hypercorn.
"""

from __future__ import annotations

import contextvars
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from app.config.tls import TlsSettings

log = logging.getLogger("gatehouse.tls")

CHECK_INTERVAL = 1.0  # seconds between looks at the certificate files (at a handshake, never in between)

# RFC 4514's short names for the attributes Python's ``getpeercert`` reports.
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def build_server_context(tls: TlsSettings, alpn: Sequence[str]) -> ssl.SSLContext:
    """A server context from ``tls``'s files, offering ``alpn`` (``h2`` first when HTTP/2 is served)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # HTTP/2 requires 1.2 or later (RFC 9113, 9.2)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=str(tls.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    context.set_alpn_protocols(list(alpn))
    context.sslobject_class = SubjectSSLObject
    return context


class CertificateReloader:
    """Owns the listening context and moves each new handshake to the newest certificate."""

    def __init__(
        self,
        tls: TlsSettings,
        alpn: Sequence[str],
        *,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tls = tls
        self._alpn = tuple(alpn)
        self._interval = check_interval
        self._clock = clock
        self._stamp = self._files_stamp()
        self.context = build_server_context(tls, self._alpn)
        self.current = self.context
        self._next_check = clock() + check_interval
        self.context.sni_callback = self._on_handshake
        self.reloads = 0

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [os.stat(path) for path in (self._tls.cert_file, self._tls.key_file)]
        except OSError:
            return None  # mid-swap: look again at a later handshake
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def _on_handshake(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: Any) -> None:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._interval
            self.check()
        if self.current is not self.context:
            ssl_object.context = self.current

    def check(self) -> bool:
        """Load the files again if they changed; ``True`` if new handshakes now get a new certificate."""
        stamp = self._files_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            fresh = build_server_context(self._tls, self._alpn)
        except (ssl.SSLError, OSError) as exc:
            log.warning(
                "tls: %s / %s changed but do not load (%s); still serving the previous certificate",
                self._tls.cert_file,
                self._tls.key_file,
                exc,
            )
            return False
        self.current = fresh
        self._stamp = stamp
        self.reloads += 1
        log.info("tls: loaded the renewed certificate from %s", self._tls.cert_file)
        return True


def subject_name(certificate: dict[str, Any]) -> str | None:
    """A ``getpeercert()`` subject as RFC 4514 (most specific first: ``CN=a,O=b``); ``None`` if there is none."""
    rdns = certificate.get("subject")
    if not rdns:
        return None
    parts = ("+".join(f"{_SHORT_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn) for rdn in rdns)
    return ",".join(reversed(list(parts)))


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension for a connection (the parts Gatehouse uses, the rest ``None``)."""
    certificate = ssl_object.getpeercert()
    return {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": subject_name(certificate) if certificate else None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


# Under hypercorn: the connection's TLS extension, set in the connection's task (see SubjectSSLObject).
CONNECTION_TLS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("gatehouse_tls", default=None)


class SubjectSSLObject(ssl.SSLObject):
    """An ``SSLObject`` that publishes the peer's certificate to the task that asks which protocol was chosen.

    hypercorn asks ``selected_alpn_protocol()`` once per connection, in the
    connection's own task, before it starts any request task; request tasks
    inherit that task's context, so they see ``CONNECTION_TLS``. hypercorn does
    not put the TLS extension in the scope itself (0.18).
    """

    def selected_alpn_protocol(self) -> str | None:
        CONNECTION_TLS.set(tls_extension(self))
        return super().selected_alpn_protocol()
