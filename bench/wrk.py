"""Run wrk and parse its ``--latency`` report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.procs import Cores

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass
class WrkResult:
    requests_per_sec: float = 0.0
    p50_ms: float | None = None
    p75_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    transfer_per_sec_mib: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_count": self.error_count}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unparsed wrk duration {text!r}")
    return float(match[1]) * _TIME_UNITS[match[2]]


def parse(output: str) -> WrkResult:
    result = WrkResult(raw=output)
    for percent, value in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)", output, re.M):
        setattr(result, f"p{percent}_ms", _ms(value))
    if match := re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M):
        result.requests_per_sec = float(match[1])
    if match := re.search(r"^Transfer/sec:\s+([\d.]+)([KMGT]?B)", output, re.M):
        result.transfer_per_sec_mib = float(match[1]) * _SIZE_UNITS[match[2]] / (1 << 20)
    if match := re.search(r"^\s+(\d+) requests in", output, re.M):
        result.requests = int(match[1])
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        for name, value in zip(("connect", "read", "write", "timeout"), match.groups(), strict=True):
            if int(value):
                result.errors[name] = int(value)
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        result.errors["non_2xx_3xx"] = int(match[1])
    return result


def run(
    wrk: str,
    url: str,
    *,
    duration: int,
    connections: int,
    cores: Cores,
    latency: bool = True,
    headers: tuple[str, ...] = (),
) -> WrkResult:
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s"] + (["--latency"] if latency else [])
    command += [arg for header in headers for arg in ("-H", header)] + [url]
    completed = subprocess.run(cores.wrap(command, cores.client), capture_output=True, text=True, timeout=duration + 60)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    result = parse(completed.stdout)
    if completed.stderr.strip():
        result.raw += "\n[stderr]\n" + completed.stderr
    return result
