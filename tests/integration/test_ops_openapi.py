"""The ops API's OpenAPI document, behind the admin token, and schemathesis runs against a live gateway.

Schemathesis generates requests from the document (valid ones, and invalid ones
that must be refused with a 4xx), sends them over real sockets and checks each
answer: no 5xx, a documented status, content type, headers and body schema.
"""

from __future__ import annotations

import anyio.to_thread
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.generation import GenerationMode

from tests.gateway import route, run_gateway
from tests.integration.test_webhooks import post_signed, store_url
from tests.servers import run_uvicorn
from tests.webhooks import ADMIN_TOKEN, RecordingTarget, endpoint

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES = 30  # per operation and mode: bounded, so the run takes seconds


async def test_the_openapi_document_needs_the_admin_token(upstream):
    server, _ = upstream
    async with httpx.AsyncClient() as client:
        async with run_gateway(route("a", "/a", server.url), admin_token=ADMIN_TOKEN) as gw:
            url = f"{gw.url}/_gatehouse/openapi.json"
            anonymous = await client.get(url)
            wrong = await client.get(url, headers={"authorization": "Bearer not-the-token"})
            admin = await client.get(url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        async with run_gateway(route("a", "/a", server.url)) as gw:
            disabled = await client.get(f"{gw.url}/_gatehouse/openapi.json")
    assert (anonymous.status_code, wrong.status_code, disabled.status_code) == (401, 401, 403)
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert admin.status_code == 200
    document = admin.json()
    assert document["openapi"].startswith("3.1")
    assert "/_gatehouse/reload" in document["paths"] and "/_gatehouse/webhooks/deliveries" in document["paths"]
    assert "/a" not in document["paths"]  # proxied routes are not part of the ops API
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin_token (GATEHOUSE_ADMIN_TOKEN).",
    }
    reload = document["paths"]["/_gatehouse/reload"]["post"]
    assert reload["security"] == [{"HTTPBearer": []}]
    assert reload["responses"]["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    # Loading it is schemathesis' own validation of the document.
    assert len(list(schemathesis.openapi.from_dict(document).get_all_operations())) == len(
        [op for path in document["paths"].values() for op in path]
    )


def fuzz(document: dict, base_url: str, examples: int) -> list[str]:
    """Run every operation with ``examples`` positive and negative cases; the failures found, as text."""
    schema = schemathesis.openapi.from_dict(document)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        spec = document["paths"][operation.path][operation.method.lower()]
        # Invalid requests need something to make invalid: a parameter or a body.
        has_input = bool(spec.get("parameters") or spec.get("requestBody"))
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_input else (GenerationMode.POSITIVE,)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,  # the same cases each run: a failure here is reproducible
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                # Passed as the call's headers, under the scheme's own spelling, the token counts as the
                # real one: the auth checks then probe the same request without it and with a wrong one.
                case.call_and_validate(base_url=base_url, headers=ADMIN)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # a check failed: keep going, report them all
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return failures


async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(upstream, tmp_path):
    server, _ = upstream
    target = RecordingTarget()
    async with run_uvicorn(target, log_level="warning") as sink:
        hook = endpoint("billing", "/hooks/billing", sink.url)
        async with (
            run_gateway(
                route("a", "/a", server.url),
                webhooks=[hook],
                webhook_store=store_url(tmp_path),
                admin_token=ADMIN_TOKEN,
            ) as gw,
            httpx.AsyncClient() as client,
        ):
            # Some data, so the webhook endpoints answer with bodies, not only 404s.
            assert (await post_signed(client, f"{gw.url}/hooks/billing", "msg_1", {"n": 1})).status_code == 202
            document = (await client.get(f"{gw.url}/_gatehouse/openapi.json", headers=ADMIN)).json()
            # schemathesis is synchronous (requests): it runs in a thread while the gateway serves here.
            failures = await anyio.to_thread.run_sync(fuzz, document, gw.url, EXAMPLES)
    assert failures == [], "\n\n".join(failures)
