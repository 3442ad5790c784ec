import pytest

from app.config.upstream import parse_upstream
from app.errors import BadRequest
from app.proxy.urls import encode_query, normalise_path, rewrite_location, upstream_target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", "/"),
        (b"/api/users/42", "/api/users/42"),
        (b"/api//users///42", "/api/users/42"),
        (b"/api/users/", "/api/users/"),
        (b"/api/./users", "/api/users"),
        (b"/api/x/../users", "/api/users"),
        (b"/api/users/.", "/api/users/"),
        (b"/api/users/x/..", "/api/users/"),
        (b"/%61dmin", "/admin"),  # unreserved escapes decode (RFC 3986 6.2.2.2)
        (b"/api/%7euser", "/api/~user"),
        (b"/api/a%2fb", "/api/a%2Fb"),  # an encoded slash stays encoded
        (b"/api/caf\xc3\xa9", "/api/caf%C3%A9"),  # raw UTF-8 gets escaped
        (b"/api/%e2%82%ac", "/api/%E2%82%AC"),
        (b"/api/a%20b", "/api/a%20b"),
    ],
)
def test_paths_normalise_to_one_canonical_form(raw, expected):
    assert normalise_path(raw).path == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/..",
        b"/api/../..",
        b"/api/%2e%2e/%2e%2e/etc",
        b"/api/%2E%2E/../x",
        b"/api/..%2f..%2fetc",
        b"/api/..%5c..%5cetc",
        b"/api/..\\..\\etc",
        b"/api/%c0%ae%c0%ae/x",  # overlong UTF-8 for '.'
        b"/api/%e0%80%ae",
        b"/api/%zz",
        b"/api/%2",
        b"/api/%00",
        b"/api/a%0d%0aX-Injected:%201",
        b"api/no-leading-slash",
    ],
)
def test_hostile_paths_are_rejected(raw):
    with pytest.raises(BadRequest):
        normalise_path(raw)


def test_plain_paths_take_the_fast_path_without_segment_bookkeeping():
    assert normalise_path(b"/api/users/42").raw_segments is None
    assert normalise_path(b"/api/./x").raw_segments == ("api", ".", "x")


@pytest.mark.parametrize(
    ("url", "origin", "base"),
    [
        ("http://users:8000/v1", "http://users:8000", "/v1"),
        ("http://users:8000/v1/", "http://users:8000", "/v1"),
        ("https://api.example.com", "https://api.example.com", ""),
        ("http://127.0.0.1:80/", "http://127.0.0.1", ""),
        ("http://[::1]:9000/x", "http://[::1]:9000", "/x"),
    ],
)
def test_upstream_urls_split_into_origin_and_base_path(url, origin, base):
    upstream = parse_upstream(url)
    assert upstream.origin == origin
    assert upstream.base_path == base


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://x", "http"),
        ("http://", "host"),
        ("http://user:pw@x", "credentials"),
        ("http://x/v1?a=1", "query"),
        ("http://x/v1#f", "fragment"),
        ("http://x/a/../b", "plain"),
        ("http://x:99999", "valid URL"),
    ],
)
def test_bad_upstream_urls_say_why(url, reason):
    with pytest.raises(ValueError, match=reason):
        parse_upstream(url)


@pytest.mark.parametrize(
    ("base", "prefix", "strip", "path", "query", "expected"),
    [
        ("/v1", "/api/users", True, "/api/users/42", b"x=1", b"/v1/42?x=1"),
        ("/v1", "/api/users", False, "/api/users/42", b"x=1", b"/v1/api/users/42?x=1"),
        ("/v1", "/api/users", True, "/api/users", b"", b"/v1"),
        ("/v1", "/api/users", True, "/api/users/", b"", b"/v1/"),
        ("", "/api", True, "/api", b"", b"/"),
        ("", "/", True, "/a/b", b"", b"/a/b"),
        ("/base", "/", True, "/a", b"", b"/base/a"),
        ("", "/api", True, "/api/x", b"b=2&a=1&a=1&s=%2F&p=a+b&u=|{}", b"/x?b=2&a=1&a=1&s=%2F&p=a+b&u=|{}"),
    ],
)
def test_upstream_target_joins_base_path_and_keeps_query_bytes(base, prefix, strip, path, query, expected):
    assert upstream_target(base, prefix, strip, path, query) == expected


def test_non_ascii_query_bytes_are_escaped_and_nothing_else_changes():
    assert encode_query(b"q=caf\xc3\xa9&x=%zz") == b"q=caf%C3%A9&x=%zz"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://users:8000/v1/login?next=/x", "/api/users/login?next=/x"),
        ("http://users:8000/v1", "/api/users"),
        ("/v1/items/7#frag", "/api/users/items/7#frag"),
        ("http://users:8000/other", None),  # outside the base path
        ("http://users:80001/v1/x", None),  # another origin that shares a prefix
        ("https://elsewhere.example/v1/x", None),
        ("//evil.example/v1", None),
        ("relative/path", None),
    ],
)
def test_location_on_the_upstream_maps_onto_the_gateway_prefix(location, expected):
    rewritten = rewrite_location(
        location, origin="http://users:8000", base_path="/v1", prefix="/api/users", strip_prefix=True
    )
    assert rewritten == expected
