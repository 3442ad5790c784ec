import pytest

from app.config.settings import Settings
from app.errors import BadRequest
from app.proxy.routing import CompiledRoute, RouteTable
from app.proxy.urls import normalise_path


@pytest.fixture
def table():
    settings = Settings(
        routes=[
            {"name": "api", "prefix": "/api", "upstream": "http://api:80/v1"},
            {"name": "users", "prefix": "/api/users", "upstream": "http://users"},
            {"name": "admin", "prefix": "/admin", "upstream": "http://admin", "methods": ["GET", "post"]},
            {"name": "catch-all", "prefix": "/", "upstream": "http://web"},
        ]
    )
    return RouteTable(CompiledRoute.compile(route, settings.timeout) for route in settings.routes)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api", "api"),
        ("/api/", "api"),
        ("/api/users", "users"),
        ("/api/users/42", "users"),
        ("/api/usersx", "api"),  # whole segments only
        ("/apix", "catch-all"),
        ("/", "catch-all"),
        ("/admin/x/y", "admin"),
    ],
)
def test_longest_whole_segment_prefix_wins(table, path, route):
    assert table.match(path).name == route


def test_no_catch_all_means_no_match():
    settings = Settings(routes=[{"name": "a", "prefix": "/a", "upstream": "http://a"}])
    table = RouteTable(CompiledRoute.compile(r, settings.timeout) for r in settings.routes)
    assert table.match("/b") is None
    assert table.match("/ab") is None


@pytest.mark.parametrize(
    ("raw", "route"),
    [
        (b"/api/users/a/../b", "users"),
        (b"/api/./users/1", "users"),
        (b"/public/../admin", "admin"),  # routed by the resolved path, admin's rules apply
    ],
)
def test_dot_segments_inside_a_route_resolve(table, raw, route):
    assert table.resolve(normalise_path(raw))[0].name == route


@pytest.mark.parametrize("raw", [b"/api/users/../x", b"/api/%2e%2e/admin", b"/admin/x/../../api"])
def test_dot_segments_climbing_out_of_a_route_are_refused(table, raw):
    with pytest.raises(BadRequest):
        table.resolve(normalise_path(raw))


def test_methods_and_allow_header(table):
    admin = table.match("/admin")
    assert admin.allows("GET") and admin.allows("HEAD") and admin.allows("POST")
    assert not admin.allows("DELETE")
    assert admin.allow == b"GET, POST"
    assert table.match("/api").allows("PATCH")


def test_route_timeouts_override_the_defaults_field_by_field():
    settings = Settings(
        timeout={"read": 10},
        routes=[{"name": "a", "prefix": "/a", "upstream": "http://a", "timeout": {"connect": 1}}],
    )
    compiled = CompiledRoute.compile(settings.routes[0], settings.timeout)
    assert compiled.timeout_extension == {"connect": 1.0, "read": 10.0, "write": 30.0, "pool": 5.0}
