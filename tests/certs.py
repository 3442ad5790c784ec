"""Throwaway certificates on disk, from ``trustme``: a CA, a server leaf for 127.0.0.1, client leaves."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.servers import LOOPBACK


@dataclass(frozen=True, slots=True)
class CertFiles:
    cert: Path
    key: Path


class TestCA:
    """A CA whose files live in ``directory``; ``issue`` writes a leaf's chain and key there."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        self.name = name
        self.ca = trustme.CA(organization_name=f"Gatehouse test {name}")
        self.ca_pem = directory / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self._issued = 0

    def issue(self, *identities: str, common_name: str | None = None, name: str | None = None) -> CertFiles:
        self._issued += 1
        stem = name or f"leaf{self._issued}"
        leaf = self.ca.issue_cert(
            *(identities or (LOOPBACK, "localhost")),
            common_name=common_name,
            organization_name="Gatehouse",
            organization_unit_name=self.name,
        )
        files = CertFiles(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        write_leaf(leaf, files)
        return files

    def client_context(self, client: CertFiles | None = None) -> ssl.SSLContext:
        """A client context trusting this CA, presenting ``client`` if given."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        if client is not None:
            context.load_cert_chain(client.cert, client.key)
        return context


def write_leaf(leaf: trustme.LeafCert, files: CertFiles) -> None:
    """Write the chain and key of ``leaf``, each in one write (a reader never sees half a chain)."""
    files.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    files.key.write_bytes(leaf.private_key_pem.bytes())


def peer_certificate(response: object) -> bytes:
    """The DER certificate the server presented on the connection that carried ``response`` (httpx)."""
    stream = response.extensions["network_stream"]  # type: ignore[attr-defined]
    return stream.get_extra_info("ssl_object").getpeercert(binary_form=True)
