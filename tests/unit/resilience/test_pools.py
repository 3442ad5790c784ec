from app.config.settings import Settings
from app.proxy.exchange import chain_for
from app.proxy.forwarding import send_upstream
from app.proxy.routing import CompiledRoute, RouteTable
from app.resilience.bulkhead import Bulkhead
from app.resilience.endpoint import PooledEndpoint
from app.resilience.pools import RoutePools


def table(**settings):
    built = Settings(**settings)
    return RouteTable(CompiledRoute.compile(r, built.timeout, *built.policies_for(r)) for r in built.routes)


def test_a_route_without_resilience_settings_runs_send_upstream_and_nothing_else():
    routes = table(routes=[{"name": "plain", "prefix": "/p", "upstream": "http://a"}])
    upstreams = RoutePools(routes)
    (route,) = routes.routes
    assert upstreams.endpoint_for(route) is send_upstream
    assert chain_for(route, [upstreams.bulkhead_for], upstreams.endpoint_for(route)) is send_upstream
    assert upstreams.pools == {} and upstreams.bulkheads == {}


def test_targets_retries_and_max_concurrent_build_their_parts_once():
    routes = table(
        routes=[
            {"name": "two", "prefix": "/two", "upstream": ["http://a", "http://b"]},
            {"name": "retried", "prefix": "/r", "upstream": "http://c", "max_concurrent": 2},
        ],
        retries={"attempts": 2},
    )
    upstreams = RoutePools(routes)
    two, retried = sorted(routes.routes, key=lambda r: r.name, reverse=True)
    assert isinstance(upstreams.endpoint_for(two), PooledEndpoint)
    assert isinstance(upstreams.endpoint_for(retried), PooledEndpoint)
    assert isinstance(upstreams.bulkhead_for(retried), Bulkhead) and upstreams.bulkhead_for(two) is None
