"""A short description of the machine a measurement was taken on (timings mean little without it)."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Dict

import torch

from hidiff.utils.threads import usable_cores


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def describe_machine(device: torch.device | str = "cpu") -> Dict[str, object]:
    """CPU, cores, memory, torch build and threads, load average, and the GPU if one is used."""
    device = torch.device(device)
    info: Dict[str, object] = {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": _memory_gib(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": load_average(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(info: Dict[str, object]) -> str:
    """One line for a table caption."""
    parts = [f"{info['cpu']}", f"{info['usable_cores']} cores", f"{info['memory_gib']} GiB",
             f"torch {info['torch']} ({info['torch_threads']} threads)"]
    if info.get("gpu"):
        parts.append(str(info["gpu"]))
    if info.get("load_average"):
        parts.append("load " + "/".join(f"{v:.2f}" for v in info["load_average"]))  # type: ignore[union-attr]
    return ", ".join(parts)
