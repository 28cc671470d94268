"""Human-readable table and one-line JSON for a profile result."""
from __future__ import annotations

import json
from typing import List, Optional

from hidiff.profiling.counting import gmac
from hidiff.profiling.machine import machine_line


def _gib(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f}"


def _ms(v: Optional[float]) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def format_table(result: dict) -> str:
    """A markdown table (one row per case) with a caption naming the file, size, device and machine."""
    h, w = result["size_hw"]
    ph, pw = result["padded_hw"]
    cuda = result["device"].startswith("cuda")
    mem_cols = ["peak alloc GiB", "peak reserved GiB"] if cuda else ["peak RSS GiB", "RSS delta GiB"]
    head = ["case", "params", "GMAC", "GFLOP", "GMAC executed", "median ms", "min-max ms", "IQR ms", "cpu ms",
            *mem_cols]
    lines: List[str] = [
        f"{result['option_file']} ({result['model_type']}), input {result['batch']}x{h}x{w}"
        + (f" (padded to {ph}x{pw})" if (ph, pw) != (h, w) else "") + f", {result['device']}, {result['dtype']}",
        f"machine: {machine_line(result['machine'])}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for c in result["cases"]:
        lat, mem = c.get("latency"), c.get("memory") or {}
        if cuda:
            mem_vals = [_gib(mem.get("cuda_peak_allocated_bytes")), _gib(mem.get("cuda_peak_reserved_bytes"))]
        else:
            mem_vals = [_gib(mem.get("peak_rss_bytes")), _gib(mem.get("delta_bytes"))]
        row = [c["label"], f"{c['params']:,}", gmac(c["macs"]), f"{c['flops'] / 1e9:.2f}", gmac(c["macs_executed"]),
               _ms(lat and lat["median_ms"]),
               f"{_ms(lat['min_ms'])}-{_ms(lat['max_ms'])}" if lat else "n/a",
               _ms(lat and lat["iqr_ms"]), _ms(lat and lat["cpu_ms"]), *mem_vals]
        lines.append("| " + " | ".join(row) + " |")
    runs = next((c["latency"] for c in result["cases"] if c.get("latency")), None)
    if runs:
        lines.append("")
        where = ("every case in the profiler's own process (--in-process: memory may include earlier cases)"
                 if result.get("in_process") else "each case in a fresh process")
        lines.append(f"latency: {runs['warmup']} warm-up + {runs['runs']} timed runs per case, {where}; peak memory "
                     f"of the timed runs; load average before/after each case is in the JSON line")
    notes = sorted({n for c in result["cases"] for n in c.get("notes", [])})
    lines += [f"note: {n}" for n in notes]
    lines.append("MACs: " + result["mac_convention"])
    return "\n".join(lines)


def json_line(result: dict) -> str:
    """The whole result as one JSON line (machine-readable, for comparisons run by run)."""
    return json.dumps(result, sort_keys=False, separators=(",", ":"))
