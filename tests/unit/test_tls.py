"""TLS settings fail at start-up naming the setting and the file; the renewal check is throttled."""

from __future__ import annotations

import ssl

import pytest

from app.config.settings import ConfigError, Settings
from app.config.tls import TlsSettings
from app.serving.tls import CertificateReloader, subject_name
from tests.certs import TestCA


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path)


def test_a_missing_certificate_file_names_the_setting_and_the_file(tmp_path, ca):
    server = ca.issue(name="server")
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as info:
        Settings(tls={"cert_file": str(missing), "key_file": str(server.key)})
    assert "tls.cert_file: cannot read certificate" in str(info.value)
    assert str(missing) in str(info.value)


def test_a_key_that_does_not_match_the_certificate_names_both_files(ca):
    one, other = ca.issue(name="one"), ca.issue(name="other")
    with pytest.raises(ConfigError) as info:
        Settings(tls={"cert_file": str(one.cert), "key_file": str(other.key)})
    message = str(info.value)
    assert "tls: cert_file" in message and str(one.cert) in message and str(other.key) in message


def test_a_key_file_that_is_not_pem_is_refused(ca):
    server = ca.issue(name="server")
    with pytest.raises(ConfigError, match=r"tls.key_file: .* holds no PEM private key"):
        Settings(tls={"cert_file": str(server.cert), "key_file": str(server.cert)})


def test_a_bad_client_ca_file_is_refused(tmp_path, ca):
    server = ca.issue(name="server")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"tls.client_ca_file: .*junk.pem.* does not load as a CA bundle"):
        Settings(tls={"cert_file": str(server.cert), "key_file": str(server.key), "client_ca_file": str(junk)})


def test_mtls_auth_needs_a_client_ca(ca):
    server = ca.issue(name="server")
    with pytest.raises(ConfigError, match=r"routes\[0\] 'api' -> auth: type mtls needs tls.client_ca_file"):
        Settings(
            tls={"cert_file": str(server.cert), "key_file": str(server.key)},
            routes=[{"name": "api", "prefix": "/api", "upstream": "http://x", "auth": {"type": "mtls"}}],
        )


def test_a_route_client_certificate_needs_both_files_and_an_https_upstream(ca):
    client = ca.issue(name="client")
    base = {"name": "api", "prefix": "/api", "upstream": "https://x"}
    with pytest.raises(ConfigError, match="set both or neither"):
        Settings(routes=[base | {"client_cert_file": str(client.cert)}])
    with pytest.raises(ConfigError, match=r"routes\[0\] 'api' -> .*needs an https:// upstream"):
        Settings(
            routes=[
                base
                | {"upstream": "http://x", "client_cert_file": str(client.cert), "client_key_file": str(client.key)}
            ]
        )
    with pytest.raises(ConfigError, match=r"routes\[0\] 'api' -> client_key_file: cannot read private key"):
        Settings(routes=[base | {"client_cert_file": str(client.cert), "client_key_file": "/nonexistent/key.pem"}])


def test_the_renewal_check_runs_at_most_once_per_interval_and_moves_new_handshakes(ca):
    now = [100.0]
    server = ca.issue(name="server")
    tls = TlsSettings(cert_file=server.cert, key_file=server.key)
    reloader = CertificateReloader(tls, ["http/1.1"], check_interval=1.0, clock=lambda: now[0])
    ca.issue(name="server")
    handshake = reloader.context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    reloader._on_handshake(handshake, None, None)
    assert reloader.reloads == 0  # within the interval the files are not looked at
    now[0] += 1.0
    reloader._on_handshake(handshake, None, None)
    assert reloader.reloads == 1
    assert handshake.context is reloader.current is not reloader.context
    assert reloader.check() is False  # nothing changed since


def test_subject_names_are_rfc4514_most_specific_first_and_escaped():
    cert = {"subject": ((("countryName", "GB"),), (("organizationName", "A, B"),), (("commonName", "svc+1"),))}
    assert subject_name(cert) == "CN=svc\\+1,O=A\\, B,C=GB"
    assert subject_name({}) is None
