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
