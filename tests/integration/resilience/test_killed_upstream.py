"""An upstream killed with SIGKILL mid-stream: the begun stream is cut short, never replayed."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway import route, run_gateway
from tests.processes import upstream_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_stream_from_an_upstream_killed_mid_stream_is_cut_short_not_retried(upstream):
    server, stats = upstream
    async with upstream_process() as doomed:
        retries = {"attempts": 3, "backoff": {"base": 0.01, "cap": 0.02}}
        async with run_gateway(route("up", "/up", [doomed.url, server.url], retries=retries)) as gw:
            async with httpx.AsyncClient() as client:
                received = []
                with pytest.raises(httpx.RemoteProtocolError):
                    params = {"chunks": 50, "delay": 0.1}
                    async with client.stream("GET", f"{gw.url}/up/stream", params=params) as response:
                        assert response.status_code == 200
                        async for line in response.aiter_lines():
                            received.append(line)
                            if len(received) == 2:
                                doomed.kill()
                assert 2 <= len(received) < 50
                assert stats.requests["/stream"] == 0  # the other target never got a replay
                await stats.wait_for(lambda: gw.connections_in_use() == 0)
                target = gw.upstreams()["up"]["targets"][0]
                assert target["in_flight"] == 0 and target["recent_failures"] == 1
                # The next requests fail over to the live target (GET is retried).
                for _ in range(3):
                    assert (await client.get(f"{gw.url}/up/echo")).status_code == 200
