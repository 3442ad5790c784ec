"""Peak-RSS growth of a proxy process while 1 GiB streams through it, each direction.

Growth is VmHWM (peak resident set) after the transfer minus VmRSS before it, read
from /proc/<pid>/status. The proxy is freshly started per direction, so its peak
reflects only start-up, one warm-up request and the transfer itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from bench.procs import memory_kib, process_tree

CHUNK = 1 << 20
TIMEOUT = httpx.Timeout(60.0)


@dataclass
class StreamResult:
    direction: str
    expected_bytes: int
    transferred_bytes: int
    status: int
    seconds: float
    rss_before_mib: float
    peak_mib: float
    rss_after_mib: float
    growth_mib: float
    processes: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and self.transferred_bytes == self.expected_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _snapshot(pid: int) -> dict[int, dict[str, int]]:
    return {p: memory_kib(p) for p in process_tree(pid)}


def _download(url: str, deadline: float) -> tuple[int, int]:
    received = 0
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client, client.stream("GET", url) as response:
        for chunk in response.iter_raw(CHUNK):
            received += len(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"download not finished in time ({received} bytes)")
    return response.status_code, received


def _body(size: int, deadline: float) -> Iterator[bytes]:
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"upload not finished in time ({sent} bytes)")
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


def _upload(url: str, size: int, deadline: float) -> tuple[int, int]:
    # An explicit Content-Length makes httpx send the generator as a sized body, not chunked.
    headers = {"content-length": str(size), "content-type": "application/octet-stream"}
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        response = client.post(url, content=_body(size, deadline), headers=headers)
    try:
        received = int(json.loads(response.content)["received"])
    except (ValueError, KeyError, TypeError):
        received = -1
    return response.status_code, received


def measure(pid: int, direction: str, url: str, size: int, time_limit: float = 300.0) -> StreamResult:
    """Stream ``size`` bytes through the proxy at ``url`` ("download" or "upload")."""
    before = _snapshot(pid)
    started = time.monotonic()
    deadline = started + time_limit
    status, transferred, error = 0, 0, None
    try:
        if direction == "download":
            status, transferred = _download(url, deadline)
        else:
            status, transferred = _upload(url, size, deadline)
    except (httpx.HTTPError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.monotonic() - started
    after = _snapshot(pid)
    # Growth per process (a supervisor and its worker, if the CLI forks); report the largest.
    growth_kib, peak_kib, rss_before, rss_after = 0, 0, 0, 0
    for proc, values in after.items():
        base = before.get(proc, {}).get("VmRSS", 0)
        growth = values["VmHWM"] - base
        if growth >= growth_kib:
            growth_kib, peak_kib, rss_before, rss_after = growth, values["VmHWM"], base, values["VmRSS"]
    return StreamResult(
        direction=direction,
        expected_bytes=size,
        transferred_bytes=transferred,
        status=status,
        seconds=round(seconds, 2),
        rss_before_mib=round(rss_before / 1024, 1),
        peak_mib=round(peak_kib / 1024, 1),
        rss_after_mib=round(rss_after / 1024, 1),
        growth_mib=round(growth_kib / 1024, 1),
        processes=len(after),
        error=error,
    )
