"""TLS settings: the certificate Gatehouse serves, the CA it checks client certificates against.

Files are checked when the settings load, so a missing file, a file that is not
PEM, or a key that does not match its certificate fails start-up with the
setting's name and the file (``tls.key_file: ...``), not at the first handshake.
The checks use only ``ssl`` from the standard library.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from app.config.base import ConfigModel


def pem_file(path: Path, marker: str, what: str) -> Path:
    """``path`` if it is a readable file holding a PEM ``marker`` block; ``ValueError`` says what is wrong."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if marker not in text:
        raise ValueError(f"{str(path)!r} holds no PEM {what} (no '{marker}' line)")
    return path


def certificate_file(path: Path) -> Path:
    return pem_file(path, "-----BEGIN CERTIFICATE-----", "certificate")


def key_file(path: Path) -> Path:
    return pem_file(path, "PRIVATE KEY-----", "private key")


def check_key_pair(cert: Path, key: Path, *, cert_setting: str, key_setting: str) -> None:
    """Load ``cert`` and ``key`` together as OpenSSL will; ``ValueError`` names both settings and files."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"{cert_setting} {str(cert)!r} and {key_setting} {str(key)!r} do not load as a pair: {exc}"
        ) from None


class TlsSettings(ConfigModel):
    """Serve HTTPS (and HTTP/2 by ALPN) with ``cert_file`` (full chain, leaf first) and ``key_file``.

    Gatehouse re-reads both files when they change (checked at most once a
    second, at a new handshake): open connections keep the certificate they
    started with, new ones get the new certificate. ``client_ca_file`` asks
    clients for a certificate signed by that CA (``client_cert: required``
    refuses the handshake without one); ``auth: {type: mtls}`` on a route then
    takes the certificate's subject as the caller's identity.
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_cert: Literal["required", "optional"] = "required"

    @field_validator("cert_file")
    @classmethod
    def _cert(cls, value: Path) -> Path:
        return certificate_file(value)

    @field_validator("key_file")
    @classmethod
    def _key(cls, value: Path) -> Path:
        return key_file(value)

    @field_validator("client_ca_file")
    @classmethod
    def _ca(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        certificate_file(value)
        try:
            ssl.create_default_context(cafile=str(value))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{str(value)!r} does not load as a CA bundle: {exc}") from None
        return value

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        check_key_pair(self.cert_file, self.key_file, cert_setting="cert_file", key_setting="key_file")
        return self
