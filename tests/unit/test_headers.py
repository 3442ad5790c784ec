import pytest

from app.proxy.headers import VALID_HOST, HeaderPlan, client_response_headers, upstream_request_headers, valid_host


def plan(**overrides):
    options = dict(
        upstream_authority="users:8000",
        preserve_host=False,
        prefix="/api",
        strip_prefix=True,
        request_set={},
        request_remove=[],
        response_set={},
        response_remove=[],
    )
    options.update(overrides)
    return HeaderPlan.build(**options)


def names(headers):
    return [name for name, _ in headers]


def value(headers, name):
    found = [v for n, v in headers if n == name]
    assert len(found) == 1, f"{name!r} appears {len(found)} times"
    return found[0]


def inbound(headers, the_plan=None, *, trusted=False, client_ip="10.0.0.9"):
    return upstream_request_headers(headers, the_plan or plan(), client_ip=client_ip, scheme="https", trusted=trusted)


def test_hop_by_hop_and_connection_listed_headers_are_stripped_upstream():
    result = inbound(
        [
            (b"host", b"gw.example"),
            (b"connection", b"keep-alive, X-Secret-Hop"),
            (b"keep-alive", b"timeout=5"),
            (b"te", b"trailers"),
            (b"upgrade", b"h2c"),
            (b"proxy-authorization", b"Basic eA=="),
            (b"x-secret-hop", b"1"),
            (b"accept", b"*/*"),
        ]
    )
    assert names(result.headers) == [
        b"host",
        b"accept",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-request-id",
        b"traceparent",
    ]


def test_host_is_the_upstream_unless_preserved():
    assert value(inbound([(b"host", b"gw.example")]).headers, b"host") == b"users:8000"
    kept = inbound([(b"host", b"gw.example")], plan(preserve_host=True))
    assert value(kept.headers, b"host") == b"gw.example"


def test_forwarded_headers_from_untrusted_clients_are_replaced():
    result = inbound(
        [
            (b"host", b"gw.example"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-host", b"spoofed"),
            (b"forwarded", b"for=1.2.3.4"),
        ]
    )
    assert value(result.headers, b"x-forwarded-for") == b"10.0.0.9"
    assert value(result.headers, b"x-forwarded-proto") == b"https"
    assert value(result.headers, b"x-forwarded-host") == b"gw.example"
    assert b"forwarded" not in names(result.headers)


def test_forwarded_headers_from_trusted_proxies_are_extended():
    result = inbound(
        [
            (b"host", b"internal"),
            (b"x-forwarded-for", b"1.2.3.4, 5.6.7.8"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-host", b"public.example"),
            (b"x-forwarded-prefix", b"/edge"),
        ],
        trusted=True,
    )
    assert value(result.headers, b"x-forwarded-for") == b"1.2.3.4, 5.6.7.8, 10.0.0.9"
    assert value(result.headers, b"x-forwarded-proto") == b"http"
    assert value(result.headers, b"x-forwarded-host") == b"public.example"
    assert value(result.headers, b"x-forwarded-prefix") == b"/edge/api"


def test_sane_request_id_is_kept_and_insane_one_replaced():
    assert inbound([(b"x-request-id", b"abc-123")]).request_id == b"abc-123"
    generated = inbound([(b"x-request-id", b"bad id\x7f")]).request_id
    assert generated != b"bad id\x7f" and len(generated) == 32
    assert len(inbound([]).request_id) == 32


def test_repeated_headers_stay_separate_lines_in_order():
    result = inbound([(b"cookie", b"a=1"), (b"accept", b"x"), (b"cookie", b"b=2")])
    assert [v for n, v in result.headers if n == b"cookie"] == [b"a=1", b"b=2"]


def test_content_length_and_chunked_framing_are_reported():
    assert inbound([(b"content-length", b"12")]).content_length == 12
    chunked = inbound([(b"transfer-encoding", b"gzip, chunked")])
    assert chunked.chunked is True
    # The client's coding list is hop-by-hop; the upstream hop is framed as plain chunked.
    assert value(chunked.headers, b"transfer-encoding") == b"chunked"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"5, 6")],
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"content-length", b"-1")],
    ],
)
def test_ambiguous_framing_is_refused(headers):
    with pytest.raises(ValueError):
        inbound(headers)


def test_identical_duplicate_content_length_is_sent_once():
    result = inbound([(b"content-length", b"5"), (b"content-length", b"5")])
    assert names(result.headers).count(b"content-length") == 1


def test_route_header_rules_set_and_remove():
    the_plan = plan(request_set={"X-Api-Version": "2"}, request_remove=["X-Debug"])
    result = inbound([(b"x-debug", b"1"), (b"x-api-version", b"1")], the_plan)
    assert value(result.headers, b"x-api-version") == b"2"
    assert b"x-debug" not in names(result.headers)


def test_a_connection_field_naming_forwarded_drops_a_trusted_proxys_forwarded():
    fields = [(b"host", b"gw.example"), (b"connection", b"Forwarded"), (b"forwarded", b"for=1.2.3.4")]
    assert b"forwarded" not in names(inbound(fields, trusted=True).headers)
    kept = inbound([(b"host", b"gw.example"), (b"forwarded", b"for=1.2.3.4")], trusted=True)
    assert value(kept.headers, b"forwarded") == b"for=1.2.3.4"


def test_connection_keep_alive_alone_changes_nothing_else_upstream():
    with_it = inbound([(b"host", b"gw.example"), (b"connection", b"keep-alive"), (b"accept", b"*/*")])
    without = inbound([(b"host", b"gw.example"), (b"accept", b"*/*")])
    assert names(with_it.headers) == names(without.headers)


def test_response_headers_drop_hop_by_hop_date_server_and_keep_cookies_apart():
    out = client_response_headers(
        [
            (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
            (b"Server", b"upstream/1.0"),
            (b"Connection", b"close, X-Internal"),
            (b"X-Internal", b"secret"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Content-Encoding", b"gzip"),
        ],
        plan(response_set={"X-Frame-Options": "DENY"}, response_remove=["X-Powered-By"]),
        b"rid-1",
    )
    assert out.content_length is None and not out.has_location
    assert out.headers == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-encoding", b"gzip"),
        (b"x-frame-options", b"DENY"),
        (b"x-request-id", b"rid-1"),
    ]


def test_response_connection_keep_alive_drops_only_itself():
    fields = [(b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5"), (b"ETag", b'"a"'), (b"Vary", b"Accept")]
    out = client_response_headers(fields, plan(), b"r")
    assert out.headers == [(b"etag", b'"a"'), (b"vary", b"Accept"), (b"x-request-id", b"r")]


def test_response_pass_notes_content_length_and_location():
    out = client_response_headers([(b"Content-Length", b"12"), (b"Location", b"/x")], plan(), b"r")
    assert out.content_length == 12 and out.has_location


def test_a_remembered_host_answer_is_the_patterns_each_time():
    hosts = [b"example.com", b"127.0.0.1:8080", b"[::1]:443", b"a b", b"x@y", b"host:99999x", b"", b"a..b", b"h_1.-"]
    for _ in range(2):  # the second round is answered from the cache
        for host in hosts:
            assert valid_host(host) is (VALID_HOST.match(host) is not None), host
    assert valid_host(b"evil.example\r\nx: y") is False
