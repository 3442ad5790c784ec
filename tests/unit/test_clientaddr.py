import ipaddress

import pytest

from app.proxy.clientaddr import client_address

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("203.0.113.9", [(b"x-forwarded-for", b"10.0.0.1")], "203.0.113.9"),  # untrusted peer: its own address
        ("10.0.0.2", [], "10.0.0.2"),  # a trusted peer that names nobody
        ("10.0.0.2", [(b"x-forwarded-for", b"198.51.100.7")], "198.51.100.7"),
        ("10.0.0.2", [(b"x-forwarded-for", b"1.1.1.1, 198.51.100.7, 10.0.0.3")], "198.51.100.7"),  # spoofed left
        ("10.0.0.2", [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"198.51.100.7")], "198.51.100.7"),
        ("10.0.0.2", [(b"x-forwarded-for", b"10.0.0.5, 10.0.0.3")], "10.0.0.5"),  # all trusted: the left-most
        ("10.0.0.2", [(b"x-forwarded-for", b"garbage, 10.0.0.3")], "10.0.0.3"),  # no further than readable hops
        ("10.0.0.2", [(b"x-forwarded-for", b"198.51.100.7:5555")], "198.51.100.7"),
        ("10.0.0.2", [(b"forwarded", b'for=1.1.1.1, for="[2001:db8::1]:4711";proto=https')], "2001:db8::1"),
        ("10.0.0.2", [(b"forwarded", b"for=unknown")], "10.0.0.2"),
        ("fd00::1", [(b"x-forwarded-for", b"2001:db8::2")], "2001:db8::2"),
    ],
)
def test_the_client_is_the_right_most_untrusted_hop(peer, headers, client):
    assert client_address(peer, headers, TRUSTED) == client


def test_nothing_is_trusted_without_trusted_proxies():
    assert client_address("10.0.0.2", [(b"x-forwarded-for", b"1.2.3.4")], ()) == "10.0.0.2"
