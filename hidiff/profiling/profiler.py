"""Profile an option file: parameters, MACs/FLOPs, latency and peak memory of every case.

Counting runs in this process on the ``meta`` device (no memory, no time).
Latency and memory are measured for each case in a fresh Python process
(``hidiff.profiling.worker``), so allocations of earlier cases never count and
each case starts from a cold allocator, as a user's process would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from hidiff.config import load_options
from hidiff.config.yaml_io import load_yaml
from hidiff.errors import ConfigError
from hidiff.models import build_model
from hidiff.profiling.cases import Case, build_cases, padded_size
from hidiff.profiling.counting import count_flops, count_parameters, reference_formulation
from hidiff.profiling.machine import describe_machine, load_average
from hidiff.profiling.memory import PeakMemory, release_freed_memory
from hidiff.profiling.timing import synchronize, time_call

RESULT_MARK = "HIDIFF_PROFILE_CASE "


@dataclass
class ProfileSpec:
    """Everything needed to rebuild a case in another process."""

    opt: str
    size: Tuple[int, int]
    overrides: List[str] = field(default_factory=list)
    batch: int = 1
    device: str = "cpu"
    warmup: int = 1
    runs: int = 5
    threads: Optional[int] = None
    cases: Optional[List[str]] = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ProfileSpec":
        data = json.loads(text)
        data["size"] = tuple(data["size"])
        return cls(**data)


def load_profile_options(path: str, overrides: Sequence[str] = ()):
    """Load an option file as training options when it has a ``train`` block (all its networks)."""
    raw = load_yaml(path)
    is_train = isinstance(raw, dict) and raw.get("train") is not None
    return load_options(path, overrides, is_train=is_train)


def build_profile_model(options, device: torch.device | str):
    """The stage model of ``options`` with fresh weights on ``device`` (built directly there for meta)."""
    device = torch.device(device)
    if device.type == "meta":
        with torch.device("meta"):
            return build_model(options)
    torch.manual_seed(0)
    return build_model(options).to(device)


def _unique_params(modules: Sequence[torch.nn.Module]) -> int:
    seen, total = set(), 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _count(case: Case, reference: bool) -> int:
    grad = torch.enable_grad() if case.grad else torch.inference_mode()
    if reference:
        with reference_formulation(case.modules), grad:
            return count_flops(case.counted())
    with grad:
        return count_flops(case.counted())


def count_cases(spec: ProfileSpec, options=None) -> Dict[str, dict]:
    """Parameters and MAC/FLOP counts of every case (meta device)."""
    options = options or load_profile_options(spec.opt, spec.overrides)
    model = build_profile_model(options, "meta")
    model.train(False)
    out: Dict[str, dict] = {}
    for case in build_cases(model, spec.size, batch=spec.batch, device="meta", names=spec.cases, options=options):
        if case.grad:
            model.train(True)
        flops = _count(case, reference=True)
        notes = list(case.notes)
        try:
            executed: Optional[int] = _count(case, reference=False) // 2
        except (RuntimeError, NotImplementedError, TypeError) as exc:  # a fast path that cannot run on meta
            executed = None
            notes.append(f"executed MACs not countable on the meta device: {str(exc).splitlines()[0][:120]}")
        model.train(False)
        out[case.name] = {"name": case.name, "label": case.label, "params": _unique_params(case.modules),
                          "macs": flops // 2, "flops": flops, "macs_executed": executed, "notes": notes}
    out["_networks"] = {f"net_{k}": count_parameters(v) for k, v in model.networks().items()}  # type: ignore
    return out


def measure_case(spec: ProfileSpec, name: str) -> dict:
    """Latency and peak memory of case ``name``, in this process.

    The warm-up calls run first; then (CPU) the memory they freed is given back to the OS and the peak is
    reset, so the peak and delta are those of the timed calls alone."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    options = load_profile_options(spec.opt, spec.overrides)
    model = build_profile_model(options, device)
    (case,) = build_cases(model, spec.size, batch=spec.batch, device=device, names=[name], options=options)
    model.train(case.grad)
    meter = PeakMemory(device)
    ctx = torch.enable_grad() if case.grad else torch.inference_mode()
    with ctx:
        for _ in range(spec.warmup):  # before the reset: the peak is that of calls after the warm-up
            case.run()
        synchronize(device)
        released = release_freed_memory() if device.type == "cpu" else False
        meter.reset()
        load_before = load_average()
        timing = time_call(case.run, device=device, warmup=0, runs=spec.runs)
        timing.warmup = spec.warmup
        memory = meter.read()
    memory["freed_memory_released"] = released
    return {"name": name, "latency": timing.as_dict(), "memory": memory,
            "load_average_before": load_before, "load_average_after": load_average(),
            "threads": torch.get_num_threads()}


def run_worker(module: str, args: Sequence[str], *, threads: Optional[int] = None,
               timeout: Optional[float] = None, what: Optional[str] = None, mark: str = RESULT_MARK) -> dict:
    """``python -m module *args`` in a fresh interpreter; the JSON after ``mark`` on its stdout."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return worker_result(proc.returncode, proc.stdout, proc.stderr, mark=mark, what=what or module)


def worker_result(returncode: Optional[int], stdout: str, stderr: str, *, mark: str, what: str) -> dict:
    """The JSON a finished worker printed after ``mark``; a RuntimeError with its output's tail if it failed."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(mark)]
    if returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-15:]
        raise RuntimeError(f"{what} failed (exit code {returncode}):\n" + "\n".join(tail))
    return json.loads(lines[-1][len(mark):])


def measure_in_subprocess(spec: ProfileSpec, name: str, *, timeout: Optional[float] = None) -> dict:
    """``measure_case`` in a fresh interpreter (``python -m hidiff.profiling.worker``)."""
    return run_worker("hidiff.profiling.worker", [spec.to_json(), name], threads=spec.threads, timeout=timeout,
                      what=f"profiling case '{name}'")


def profile(spec: ProfileSpec, *, latency: bool = True, in_process: bool = False, log=None) -> dict:
    """The full report: counts for every case and, unless ``latency=False``, timings and memory."""
    options = load_profile_options(spec.opt, spec.overrides)
    counts = count_cases(spec, options)
    networks = counts.pop("_networks")
    pad = options.val.window_size
    cases: List[dict] = []
    for name, row in counts.items():
        if latency:
            if log:
                log(f"measuring {name} ({spec.runs} runs after {spec.warmup} warm-up) ...")
            m = measure_case(spec, name) if in_process else measure_in_subprocess(spec, name)
            row.update({k: m[k] for k in ("latency", "memory", "load_average_before", "load_average_after",
                                          "threads")})
            if in_process:
                row["memory"]["note"] = "measured in the profiler's process: earlier cases may count"
        cases.append(row)
    return {
        "tool": "hidiff.profile", "option_file": spec.opt, "overrides": list(spec.overrides),
        "model_type": options.model_type, "size_hw": list(spec.size),
        "padded_hw": list(padded_size(spec.size, pad)), "batch": spec.batch, "device": spec.device,
        "dtype": "float32", "mac_convention": "1 MAC = 2 FLOPs; conv/linear/matmul only (torch.utils.flop_counter); "
        "'macs' = reference formulation, 'macs_executed' = the configured fast path",
        "networks_params": networks, "machine": describe_machine(spec.device),
        "in_process": bool(in_process and latency),
        "threads": spec.threads or torch.get_num_threads(), "cases": cases,
    }
