"""An unexpected error in an ops endpoint is answered as problem+json, with nothing of the exception in it."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from app.assembly.problems import install_error_handlers

pytestmark = pytest.mark.anyio


async def test_an_unexpected_exception_is_a_problem_500_and_a_log_line(caplog):
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise OverflowError("secret-internal-detail")

    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="gatehouse"):
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            response = await client.get("/boom", headers={"x-request-id": "req-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:gatehouse:problem:internal" and problem["instance"] == "/boom"
    assert problem["request_id"] == "req-1"
    assert "secret-internal-detail" not in response.text
    assert any("OverflowError" in (r.exc_text or "") for r in caplog.records)
