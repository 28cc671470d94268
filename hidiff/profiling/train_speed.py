"""Training-step speed and memory of several variants of one stage, compared in one run.

For every case (an option file at one batch x size) the variants (plain/fast
formulation, precision, activation checkpointing) are built in one process and
timed interleaved (:func:`hidiff.profiling.train_step.time_interleaved`), so
their ratio holds on a machine whose load changes; the peak memory of each
variant's step is then measured in a fresh process of its own.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from hidiff.config.yaml_io import override_key
from hidiff.errors import ConfigError
from hidiff.profiling.train_step import (ALL_STAGES, StepSpec, TrainStep, UnsupportedVariant, measure_step_memory,
                                         memory_in_subprocess, time_interleaved)

#: the variant every ratio refers to
BASELINE = "plain"


@dataclass(frozen=True)
class SpeedCase:
    """One option file at one batch and crop size."""

    key: str
    opt: str
    batch: int
    size: Tuple[int, int]

    @property
    def title(self) -> str:
        return f"{self.key}, {self.batch}x{self.size[0]}x{self.size[1]}"


def parse_batch_size(text: str) -> Tuple[int, Tuple[int, int]]:
    """``'4x128x128'`` -> (4, (128, 128)); ``'2x256'`` -> (2, (256, 256))."""
    try:
        dims = [int(p) for p in text.lower().replace("*", "x").split("x")]
    except ValueError:
        dims = []
    if len(dims) == 2:
        dims.append(dims[1])
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"--sizes: expected BATCHxHxW (e.g. 4x128x128), got {text!r}")
    return dims[0], (dims[1], dims[2])


#: option keys every variant sets for itself, and the benchmark's flag that sets them instead
VARIANT_KEYS: Dict[Tuple[str, ...], str] = {
    ("train", "checkpoint_levels"): "--checkpoint-levels (or --no-checkpointing)",
    ("train", "amp"): "--precisions",
    ("train", "keep_cpu_memory"): "--system-malloc",
}


def refuse_variant_keys(overrides: Sequence[str], keys: Optional[Dict[Tuple[str, ...], str]] = None) -> None:
    """A ConfigError for an override of a key the variants set themselves (``keys``, by default
    :data:`VARIANT_KEYS`: key path -> the flag that sets it): it would be overridden by every row, so the rows
    would not be what the override asked for."""
    for item in overrides:
        parts = tuple(p.strip().lower() for p in override_key(item))   # a misspelt case is refused here too
        for reserved, flag in (VARIANT_KEYS if keys is None else keys).items():
            n = min(len(parts), len(reserved))
            if parts and parts[:n] == reserved[:n]:
                raise ConfigError(f"-o {item}: {'.'.join(reserved)} is set by each variant (row) of the benchmark; "
                                  f"use {flag} instead")


def variant_specs(case: SpeedCase, *, formulations: Sequence[str] = ("plain", "fast"),
                  precisions: Sequence[str] = ("fp32",), checkpoint_levels: Sequence = ALL_STAGES,
                  device: str = "cpu",
                  threads: Optional[int] = None, overrides: Sequence[str] = (),
                  keep_memory: Optional[bool] = None) -> List[StepSpec]:
    """The variants of ``case``: every formulation in fp32, the fast one in every other precision, and the
    fast one with activation checkpointing of ``checkpoint_levels`` (none if empty).  Each sets its precision
    and checkpointing itself, so an override of those keys is refused (:func:`refuse_variant_keys`).
    ``keep_memory``: their memory-measuring processes keep freed memory as the trainer does on a CPU (None:
    the option file's ``train.keep_cpu_memory``; the timing process sets it for itself)."""
    refuse_variant_keys(overrides)
    base = StepSpec(opt=case.opt, batch=case.batch, size=case.size, device=device, threads=threads,
                    overrides=list(overrides), keep_memory=keep_memory, precision="fp32", checkpoint_levels=[])
    specs = [replace(base, formulation=f) for f in formulations]
    fast = "fast" if "fast" in formulations else formulations[-1]
    specs += [replace(base, formulation=fast, precision=p) for p in precisions if p != "fp32"]
    if checkpoint_levels:
        specs.append(replace(base, formulation=fast, checkpoint_levels=list(checkpoint_levels)))
    return specs


def run_case(case: SpeedCase, specs: Sequence[StepSpec], *, warmup: int = 1, repeats: int = 2,
             memory: str = "subprocess", log: Optional[Callable[[str], None]] = None) -> dict:
    """Measure each variant's memory and time the variants interleaved.

    ``memory``: ``'subprocess'`` (each variant in a fresh process), ``'in_process'``
    (CUDA only: one variant alive at a time, so the allocator's peak is that
    variant's own) or ``'none'``.
    """
    if memory not in ("subprocess", "in_process", "none"):
        raise ConfigError(f"memory: expected subprocess, in_process or none, got {memory!r}")
    steps: Dict[str, Callable[[], object]] = {}
    skipped: Dict[str, str] = {}
    built: Dict[str, TrainStep] = {}
    for spec in specs:  # weights and optimisers only: no step has run yet
        try:
            built[spec.label] = TrainStep(spec)
            steps[spec.label] = built[spec.label].step
        except UnsupportedVariant as exc:
            skipped[spec.label] = str(exc)
    if not steps:
        raise ConfigError(f"{case.title}: no variant can run here ({'; '.join(skipped.values())})")
    device = next(iter(built.values())).device
    fresh: Dict[str, dict] = {}
    if memory == "subprocess":  # before any step here, so the measuring processes compete with no activations
        for spec in specs:
            if spec.label not in skipped:
                if log:
                    log(f"{case.title}: peak memory of {spec.label} in a fresh process")
                fresh[spec.label] = memory_in_subprocess(spec)
    if memory == "in_process" and device.type != "cuda":
        raise ConfigError("memory='in_process' needs CUDA (RSS never shrinks back for the next variant)")
    if log:
        log(f"{case.title}: timing {', '.join(steps)} interleaved ({warmup} warm-up + {repeats} rounds)")
    timing = time_interleaved(steps, device=device, warmup=warmup, repeats=repeats, log=log)
    losses = {label: ts.last for label, ts in built.items()}
    del built, steps
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    rows = []
    base = timing["variants"].get(BASELINE, {})
    base_s = base.get("median_s")
    for spec in specs:
        if spec.label in skipped:
            rows.append({"variant": spec.label, "skipped": skipped[spec.label]})
            continue
        t = timing["variants"][spec.label]
        row = {"variant": spec.label, "formulation": spec.formulation, "precision": spec.precision,
               "checkpointing": spec.checkpointing, "checkpoint_levels": spec.checkpoint_levels, **t, "steps_per_s": 1.0 / t["median_s"],
               "samples_per_s": case.batch / t["median_s"],
               "speedup_vs_plain": (base_s / t["median_s"]) if base_s else None,
               "round_speedups_vs_plain": [p / v for p, v in zip(base.get("samples_s", []), t["samples_s"])],
               "loss_after_timing": losses[spec.label]["total"]}
        if memory == "in_process":
            if log:
                log(f"{case.title}: peak memory of {spec.label} (one variant alive at a time)")
            fresh[spec.label] = measure_step_memory(spec)
            torch.cuda.empty_cache()
        if spec.label in fresh:
            row["memory"] = fresh[spec.label].get("memory")
        rows.append(row)
    base_mem = next((_peak(r) for r in rows if r["variant"] == BASELINE), None)
    for r in rows:
        peak = _peak(r)
        r["peak_bytes"] = peak
        r["memory_vs_plain"] = (peak / base_mem) if (peak and base_mem) else None
    return {"case": case.key, "title": case.title, "opt": case.opt, "batch": case.batch, "size_hw": list(case.size),
            "memory_mode": memory,
            "load_average_before": timing["load_average_before"], "load_average_after": timing["load_average_after"],
            "warmup": warmup, "repeats": repeats, "rows": rows}


def _peak(row: dict) -> Optional[int]:
    mem = row.get("memory") or {}
    return mem.get("cuda_peak_allocated_bytes", mem.get("peak_rss_bytes"))


def _gib(n: Optional[float]) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f}"


def _x(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def format_table(results: Sequence[dict], machine: str, device: str) -> str:
    """A markdown table: one row per case and variant, ratios against the plain formulation of the same case."""
    mem_name = "peak alloc GiB" if device.startswith("cuda") else "peak RSS GiB"
    lines = [f"machine: {machine}", "",
             f"| case | variant | median s/step | min-max s | cpu s | steps/s | samples/s | speed vs plain | "
             f"per round | {mem_name} | step delta GiB | memory vs plain | load before -> after |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for res in results:
        la, lb = res["load_average_before"], res["load_average_after"]
        load = f"{la[0]:.2f} -> {lb[0]:.2f}" if la and lb else "n/a"
        for r in res["rows"]:
            if "skipped" in r:
                lines.append(f"| {res['title']} | {r['variant']} | n/a ({r['skipped']}) |" + " |" * 10)
                continue
            mem = r.get("memory") or {}
            lines.append(f"| {res['title']} | {r['variant']} | {r['median_s']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} "
                         f"| {r['cpu_s']:.2f} | {r['steps_per_s']:.3f} | {r['samples_per_s']:.2f} | "
                         f"{_x(r['speedup_vs_plain'])} | {', '.join(_x(v) for v in r['round_speedups_vs_plain'])} | "
                         f"{_gib(r['peak_bytes'])} | {_gib(mem.get('delta_bytes'))} | "
                         f"{_x(r['memory_vs_plain'])} | {load} |")
    modes = {res.get("memory_mode") for res in results}
    where = {"subprocess": "each variant in a fresh process", "in_process": "one variant alive at a time",
             "none": "not measured"}
    lines += ["", "Each case's variants were timed in one process, one step of each in turn (order rotating every "
              "round); 'speed vs plain' = median step time of plain / median of the variant, 'per round' = the same "
              "ratio within each round (steps run back to back). Peak memory: one step "
              f"after a warm-up step, {'; '.join(where.get(m, str(m)) for m in sorted(modes, key=str))} ('step delta' "
              "= the step's peak minus the memory held before it: weights, gradients, optimiser state"
              + ("; on a CPU the memory the warm-up freed is given back to the OS before it (malloc_trim), so the "
                 "delta is the step's own whether or not freed memory is kept" if not device.startswith("cuda")
                 else "") + ")."]
    return "\n".join(lines)
