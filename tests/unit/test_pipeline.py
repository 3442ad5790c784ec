import httpx
import pytest

from app.config.settings import Settings
from app.proxy.exchange import build_chain, chain_for
from app.proxy.routing import CompiledRoute

pytestmark = pytest.mark.anyio


def compiled(**options):
    settings = Settings(routes=[{"name": "r", "prefix": "/r", "upstream": "http://r", **options}])
    return CompiledRoute.compile(settings.routes[0], settings.timeout)


async def test_filters_run_outermost_first_and_may_answer_alone():
    calls = []

    def tagging(tag):
        async def filter_(exchange, call_next):
            calls.append(f"{tag} in")
            response = await call_next(exchange)
            calls.append(f"{tag} out")
            return response

        return filter_

    async def short_circuit(exchange, call_next):  # noqa: ARG001
        return httpx.Response(204)

    async def endpoint(exchange):  # noqa: ARG001
        calls.append("endpoint")
        return httpx.Response(200)

    response = await build_chain([tagging("a"), tagging("b")], endpoint)(object())
    assert response.status_code == 200
    assert calls == ["a in", "b in", "endpoint", "b out", "a out"]
    assert (await build_chain([short_circuit, tagging("c")], endpoint)(object())).status_code == 204


async def test_route_settings_choose_which_filters_a_route_gets():
    async def endpoint(exchange):  # noqa: ARG001
        return httpx.Response(200)

    async def deny(exchange, call_next):  # noqa: ARG001
        return httpx.Response(403)

    def only_for_post_routes(route):
        return deny if route.methods == frozenset({"POST"}) else None

    assert (await chain_for(compiled(), [only_for_post_routes], endpoint)(object())).status_code == 200
    assert (await chain_for(compiled(methods=["POST"]), [only_for_post_routes], endpoint)(object())).status_code == 403
