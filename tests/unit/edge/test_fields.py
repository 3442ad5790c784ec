"""``with_fields``: what a filter adds to the upstream's response, through httpx's ``Headers`` internals."""

from __future__ import annotations

import httpx

from app.edge.fields import with_fields

CORS = frozenset({b"access-control-allow-origin", b"access-control-max-age"})


def upstream(*fields: tuple[str, str]) -> httpx.Response:
    return httpx.Response(200, headers=list(fields))


def test_added_fields_come_after_the_upstreams_and_read_back_through_httpx():
    response = upstream(("Content-Type", "text/plain"), ("RateLimit", '"origin";r=9'))
    with_fields(response, [(b"ratelimit", b'"api-60s";r=4'), (b"x-new", b"1")])
    assert response.headers.raw == [
        (b"Content-Type", b"text/plain"),
        (b"RateLimit", b'"origin";r=9'),
        (b"ratelimit", b'"api-60s";r=4'),
        (b"x-new", b"1"),
    ]
    assert response.headers.get_list("ratelimit") == ['"origin";r=9', '"api-60s";r=4']
    assert response.headers["x-new"] == "1" and "x-new" in response.headers


def test_dropped_fields_go_whatever_their_case_and_the_rest_keep_their_order():
    response = upstream(("Access-Control-Allow-Origin", "*"), ("ETag", '"x"'), ("access-control-max-age", "9"))
    with_fields(response, [(b"access-control-allow-origin", b"https://app.test")], CORS)
    assert response.headers.raw == [(b"ETag", b'"x"'), (b"access-control-allow-origin", b"https://app.test")]


def test_a_vary_joins_the_last_vary_the_upstream_sent_or_is_added():
    response = upstream(("Vary", "Accept"), ("Vary", "Accept-Encoding"))
    with_fields(response, [(b"vary", b"Origin")])
    assert response.headers.raw == [(b"Vary", b"Accept"), (b"Vary", b"Accept-Encoding, Origin")]
    assert response.headers["vary"] == "Accept, Accept-Encoding, Origin"
    bare = with_fields(upstream(), [(b"vary", b"Origin")])
    assert bare.headers.raw == [(b"vary", b"Origin")]


def test_a_value_that_is_not_ascii_still_reads_back():
    response = upstream(("Content-Type", "text/plain"))
    assert response.headers.encoding == "ascii"  # decided before the edit
    with_fields(response, [(b"access-control-allow-origin", "https://b\u00fccher.test".encode("latin-1"))])
    assert response.headers["access-control-allow-origin"] == "https://b\u00fccher.test"
