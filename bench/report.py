"""Turn results into the console tables and the ratios; pure functions over plain dicts."""

from __future__ import annotations

from typing import Any

RATIO_BASES = ("gatehouse-httpcore", "fastapi-proxy-lib", "aiohttp", "nginx", "direct", "gatehouse")
# ``gatehouse@REV`` targets (``--baseline``) are ratio bases too: after / before.


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}us" if value < 1 else f"{value:.2f}ms"


def throughput_table(rows: list[dict[str, Any]]) -> str:
    header = f"{'target':<18} {'response':<8} {'req/s':>10} {'MiB/s':>8} {'p50':>9} {'p99':>9} "
    header += f"{'errors':>7} {'cpu%':>5} {'req/cpu-s':>9} {'RSS MiB':>7}  notes"
    lines = [header, "-" * len(header)]
    for row in rows:
        notes = []
        if row["errors"]:
            notes.append(", ".join(f"{k}={v}" for k, v in row["errors"].items()))
        notes.extend(row["check_failures"])
        cpu = row.get("server_cpu_percent")
        per_cpu, rss = row.get("req_per_cpu_s"), row.get("rss_after_mib")
        lines.append(
            f"{row['target']:<18} {row['response']:<8} {row['requests_per_sec']:>10,.0f} "
            f"{row['transfer_per_sec_mib']:>8,.0f} {_ms(row['p50_ms']):>9} {_ms(row['p99_ms']):>9} "
            f"{row['error_count']:>7} {'-' if cpu is None else f'{cpu:.0f}':>5} "
            f"{'-' if per_cpu is None else f'{per_cpu:,}':>9} {'-' if rss is None else f'{rss:.0f}':>7}  "
            + ("FLAGGED: " + "; ".join(notes) if row["flagged"] else "")
        )
    return "\n".join(lines)


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (target, response), the round with the median req/s (the lower middle of an even count).

    Its ``req_per_cpu_s`` is the median over the rounds of that figure on its own.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["response"]), []).append(row)
    out = []
    for group in groups.values():
        ordered = sorted(group, key=lambda row: row["requests_per_sec"])
        per_cpu = sorted(row["req_per_cpu_s"] for row in group if row.get("req_per_cpu_s"))
        median = {"req_per_cpu_s": per_cpu[(len(per_cpu) - 1) // 2]} if per_cpu else {}
        out.append({**ordered[(len(ordered) - 1) // 2], **median, "rounds": len(ordered)})
    return out


def ratios(
    rows: list[dict[str, Any]], subject: str = "gatehouse", key: str = "requests_per_sec", suffix: str = ""
) -> dict[str, dict[str, float]]:
    """``{"gatehouse/aiohttp": {"small": 1.7, "1mib": 1.1}, ...}`` for ``key`` (req/s), where both ran."""
    rps = {(row["target"], row["response"]): row.get(key) for row in rows}
    out: dict[str, dict[str, float]] = {}
    bases = [*RATIO_BASES, *sorted({target for target, _ in rps if target.startswith("gatehouse@")})]
    for base in bases:
        if base == subject:
            continue
        for (target, response), value in rps.items():
            other = rps.get((base, response))
            if target == subject and other and value:
                out.setdefault(f"{subject}/{base}{suffix}", {})[response] = round(value / other, 3)
    return out


def all_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Gatehouse (defaults, then ``access_log: off``) over every reference, by req/s and by req per CPU-second."""
    out: dict[str, dict[str, float]] = {}
    for subject in ("gatehouse", "gatehouse-nolog"):
        out |= ratios(rows, subject)
        out |= ratios(rows, subject, "req_per_cpu_s", " per cpu-s")
    return out


def ratios_text(values: dict[str, dict[str, float]]) -> str:
    if not values:
        return "ratios: n/a (gatehouse or the reference targets did not run)"
    lines = ["req/s ratios:"]
    for name, by_response in values.items():
        parts = ", ".join(f"{response} {ratio:.2f}x" for response, ratio in by_response.items())
        lines.append(f"  {name:<42} {parts}")
    return "\n".join(lines)


def memory_header() -> str:
    header = (
        f"{'target':<18} {'direction':<9} {'MiB':>6} {'secs':>6} {'MiB/s':>6} "
        f"{'RSS before':>10} {'peak':>7} {'growth':>7}  status"
    )
    return header + "\n" + "-" * len(header)


def memory_table(results: list[dict[str, Any]]) -> str:
    if not results:
        return "memory: not measured"
    lines = [memory_header()]
    for row in results:
        mib = row["transferred_bytes"] / (1 << 20)
        rate = mib / row["seconds"] if row["seconds"] else 0.0
        status = "ok" if row["ok"] else f"FLAGGED: HTTP {row['status']}, {row['error'] or 'byte count mismatch'}"
        lines.append(
            f"{row['target']:<18} {row['direction']:<9} {mib:>6.0f} {row['seconds']:>6.1f} {rate:>6.0f} "
            f"{row['rss_before_mib']:>10.1f} {row['peak_mib']:>7.1f} {row['growth_mib']:>7.1f}  {status}"
        )
    return "\n".join(lines)
