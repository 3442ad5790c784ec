"""Tracing set-up: off costs nothing; on builds a tracer only with the SDK."""

from __future__ import annotations

import app
from app.observability.tracing import Tracer, build_tracer, http_route, resource_attributes, split_host


def test_tracing_none_builds_no_tracer_and_console_builds_one():
    assert build_tracer("none") is None
    assert isinstance(build_tracer("console"), Tracer)


def test_resource_defaults_yield_to_the_standard_otel_variables():
    assert resource_attributes({}) == {"service.name": "gatehouse", "service.version": app.__version__}
    assert resource_attributes({"OTEL_SERVICE_NAME": "edge"}) == {"service.version": app.__version__}
    both = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=edge, service.version=2.0,team=platform"}
    assert resource_attributes(both) == {}


def test_http_route_is_the_prefix_template_and_host_splits_into_address_and_port():
    assert [http_route(p) for p in ("/api", "/", "/a/b")] == ["/api/*", "/*", "/a/b/*"]
    assert split_host("example.com:8443") == ("example.com", 8443)
    assert split_host("example.com") == ("example.com", None)
    assert split_host("[::1]:8080") == ("::1", 8080)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("host:notaport") == ("host", None)


def test_a_new_trace_is_a_version_00_traceparent_with_nonzero_ids():
    import re

    from app.observability.tracing import continue_trace, parse_traceparent

    for _ in range(50):
        value = continue_trace(None)
        assert re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-00", value)
        assert parse_traceparent(value) is not None  # not the all-zero trace or span
    caller = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert continue_trace(caller)[:36] == caller[:36] and continue_trace(caller)[-3:] == b"-01"
