"""The benchmark's output: a markdown table (medians, ratios against `direct` and each peer) and JSON."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from bench.harness import Plan, Results

# (key, label, lower is better, target for ours)
FIGURES: tuple[tuple[str, str, bool, str], ...] = (
    ("cold_start_ms", "cold start → first tools/list (ms)", True, "below mcp-remote"),
    ("echo_p50_ms", "echo p50 (ms)", True, "≤ direct + 0.5 ms"),
    ("echo_p99_ms", "echo p99 (ms)", True, "≤ 1.3 × direct"),
    ("cpu_per_call_ms", "bridge CPU per call (ms)", True, "≤ mcp-stdio"),
    ("throughput_8_per_s", "throughput, 8 in flight (calls/s)", False, "≥ 0.9 × direct"),
    ("throughput_32_per_s", "throughput, 32 in flight (calls/s)", False, "≥ 0.9 × direct"),
    ("big_1mib_ms", "1 MiB result (ms)", True, "≤ 1.2 × direct"),
    ("big_5mib_ms", "5 MiB result (ms)", True, ""),
    ("peak_rss_mib", "peak RSS of the bridge (MiB)", True, "≤ 70 MiB"),
    ("slow_echo_p50_ms", "20 ms remote: echo p50 (ms)", True, ""),
    ("slow_echo_p99_ms", "20 ms remote: echo p99 (ms)", True, ""),
    ("slow_throughput_8_per_s", "20 ms remote: throughput, 8 in flight", False, ""),
    ("slow_throughput_32_per_s", "20 ms remote: throughput, 32 in flight", False, ""),
)


def verdict(key: str, results: Results) -> str:
    ours, direct = results.value(key, "ours"), results.value(key, "direct")
    if ours is None:
        return ""
    if key == "cold_start_ms":
        peer = results.value(key, "mcp-remote")
        return "" if peer is None else ("met" if ours < peer else "NOT met")
    if key == "cpu_per_call_ms":
        peer = results.value(key, "mcp-stdio")
        return "" if peer is None else ("met" if ours <= peer else "NOT met")
    if key == "peak_rss_mib":
        return "met" if ours <= 70 else "NOT met"
    if direct is None:
        return ""
    checks = {
        "echo_p50_ms": ours <= direct + 0.5,
        "echo_p99_ms": ours <= 1.3 * direct,
        "throughput_8_per_s": ours >= 0.9 * direct,
        "throughput_32_per_s": ours >= 0.9 * direct,
        "big_1mib_ms": ours <= 1.2 * direct,
    }
    return "" if key not in checks else ("met" if checks[key] else "NOT met")


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def markdown(results: Results, names: list[str], header: dict[str, Any], notes: list[str]) -> str:
    peers = [n for n in names if n not in ("direct", "ours")]
    lines = [
        f"Machine: {header['cpus']} CPUs, {header['platform']}; Python {header['python']}; mcp {header['mcp']}; "
        + ", ".join(f"{k} {v}" for k, v in header["versions"].items()),
        f"Plan: {header['plan']}. Figures are medians over rounds; contenders ran interleaved.",
        "",
    ]
    columns = ["figure", *names, "ours / direct", *[f"ours / {p}" for p in peers], "target", "verdict"]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for key, label, _, target in FIGURES:
        if key not in results.samples:
            continue
        values = [results.value(key, n) for n in names]
        ours = results.value(key, "ours")
        ratios = []
        for other in ["direct", *peers]:
            base = results.value(key, other)
            if key == "cold_start_ms" and other == "direct":
                ratios.append("n/a")
            elif ours is None or base in (None, 0):
                ratios.append("—")
            else:
                ratios.append(f"{ours / base:.2f}")
        if key == "echo_p50_ms" and ours is not None and results.value(key, "direct") is not None:
            ratios[0] += f" (+{ours - results.value(key, 'direct'):.2f} ms)"
        row = [label, *[_fmt(v) for v in values], *ratios, target, verdict(key, results)]
        lines.append("| " + " | ".join(row) + " |")
    if results.requests:
        row = ["HTTP requests per start+list+close"]
        for name in names:
            counts = results.requests.get(name)
            row.append("—" if counts is None else
                       f"{sum(counts.values())} ({', '.join(f'{m} {c}' for m, c in sorted(counts.items()))})")
        row += [""] * (len(columns) - len(row))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Cold start of `direct` is the in-process connect of the SDK client (no process spawn): "
                 "shown for reference, not a ratio.")
    if "cpu_per_call_ms" in results.samples:
        lines.append("Bridge CPU per call: user + system time of the bridge's process tree over the echo latency "
                     "calls, summed over rounds and divided by all those calls; `direct` has no bridge.")
    for note in notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def header(versions: dict[str, str], plan: Plan) -> dict[str, Any]:
    import importlib.metadata

    return {
        "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": sys.version.split()[0],
        "mcp": importlib.metadata.version("mcp"),
        "versions": versions,
        "plan": ", ".join(f"{k}={v}" for k, v in vars(plan).items()),
    }


def as_json(results: Results, head: dict[str, Any]) -> dict[str, Any]:
    summary = {key: {name: results.value(key, name) for name in values}
               for key, values in results.samples.items()}
    # For pooled figures `medians` holds the pooled rate; `totals` holds what it was computed from.
    return {"header": head, "medians": summary, "samples": results.samples, "http_requests": results.requests,
            "totals": results.totals,
            "verdicts": {key: verdict(key, results) for key, *_ in FIGURES if key in results.samples}}
