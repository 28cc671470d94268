"""The CUDA-path checks of ``benchmarks/gpu_check.py`` (registered in :mod:`hidiff.profiling.checkrun`).

Every check runs the GoPro option files' networks (``options/stage1_gopro.yml``,
``stage2_gopro.yml``, ``test_gopro.yml``; random init) on CUDA at 256x256, or,
in a dry run, the same code on the CPU with tiny networks and sizes
(:data:`TINY`), where the parts that need CUDA are recorded as skipped.
Optional packages (onnx, onnxruntime, onnxscript) are imported inside the
checks that use them, only when asked for (``--onnx``); a missing one then fails
that part, naming it.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import importlib.util
import logging
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
import yaml

from hidiff.config import load_options
from hidiff.config.load import apply_overrides
from hidiff.config.yaml_io import load_yaml
from hidiff.data.build import build_dataset
from hidiff.data.loader import build_dataloader
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.engine.trainer import Trainer
from hidiff.inference.export import export_onnx, export_torchscript, parity
from hidiff.inference.tiler import TileOptions, auto_tile_options, restore_image
from hidiff.profiling.cases import build_cases
from hidiff.profiling.checkrun import NO_CUDA, REGISTRY, CheckFailed, Context, check, run_group
from hidiff.profiling.machine import describe_machine, machine_line
from hidiff.profiling.profiler import build_profile_model, load_profile_options
from hidiff.profiling.train_speed import SpeedCase, format_table, run_case, variant_specs
from hidiff.profiling.train_step import FORMULATIONS, StepSpec, TrainStep, time_interleaved

STAGE_FILES = {"1": "options/stage1_gopro.yml", "2": "options/stage2_gopro.yml", "test": "options/test_gopro.yml"}
# Tiny networks of the same classes for the dry run (per network block).
TINY: Dict[str, Dict[str, object]] = {
    "network_g": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 2, 2],
                  "embed_dim": 16},
    "network_le": {"embed_dim": 16, "block_num": 1},
    "network_le_dm": {"embed_dim": 16, "block_num": 1},
    "network_d": {"in_channel": 64, "out_channel": 64, "inner_channel": 32, "block_num": 3},
}
# The compile check's network on CUDA: GoPro stage-1 widths and classes, one block per level.  Compile time
# grows with depth; the full network's first compiled step took over 137 s on an H100 (docs/speed.md).
SHALLOW_FOR_COMPILE = ("network_g.num_blocks=[1,1,1,1]", "network_g.num_refinement_blocks=1",
                       "network_le.block_num=1")
# Largest relative difference of a mixed-precision loss from the fp32 loss: at the first step (same weights,
# rounding only) always; at any of the steps unless rounding alone moves fp32 further (amp_verdict).
AMP_TOLERANCE = {"bf16": 0.02, "fp16": 0.01}
# A trajectory of optimiser steps amplifies any rounding.  On CUDA the check also runs fp32 with TF32 off
# ("fp32-strict"); mixed precision may then drift from fp32 by up to this multiple of that drift.
AMP_DRIFT_FACTOR = 2.0
# Largest relative loss difference between two fp32 runs of the same steps (memory layout, compile): CPU, and
# CUDA, where convolutions run in TF32 (PyTorch's default) and the layouts pick different kernels.
FP32_TOLERANCE = {"cpu": 1e-3, "cuda": 5e-3}


# ------------------------------------------------------------------ helpers
def opt_path(ctx: Context, key: str) -> str:
    return str(Path(ctx.repo) / STAGE_FILES[key])


def tiny_overrides(ctx: Context, key: str) -> List[str]:
    """``-o`` style overrides shrinking the networks of option file ``key`` (dry run only)."""
    if not ctx.dry_run:
        return []
    raw = load_yaml(opt_path(ctx, key))
    out = []
    for block, values in TINY.items():
        if block in raw:
            out += [f"{block}.{k}={v}".replace(" ", "") for k, v in values.items()]
    return out


def train_size(ctx: Context) -> tuple:
    """(batch, (H, W)) of the training checks."""
    return (2, (32, 32)) if ctx.dry_run else (2, (256, 256))


def sync(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


@contextlib.contextmanager
def tf32_off():
    """fp32 convolutions and matmuls without TF32 (PyTorch's CUDA default uses TF32 for convolutions)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def free_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def rel_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest |a - b| / |b| over paired values; infinite where any value is not finite (a NaN loss must fail
    every tolerance, and Python's ``max`` would drop it)."""
    pairs = list(zip(a, b))
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in pairs):
        return math.inf
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in pairs)


def amp_verdict(losses: Sequence[float], ref: Sequence[float], tol: float, strict_drift: Optional[float]) -> dict:
    """Judge a mixed-precision loss trajectory against fp32's.

    The first step starts from the same weights, so its difference is rounding alone and must be within
    ``tol``.  Later steps also carry the drift that any rounding causes along 20 optimiser steps; they must be
    within ``tol``, or within :data:`AMP_DRIFT_FACTOR` times ``strict_drift`` (how far fp32 with TF32 off drifts
    from fp32 over the same steps) where that is larger.
    """
    first = rel_diff(losses[:1], ref[:1])
    worst = rel_diff(losses, ref)
    allowed = max(tol, AMP_DRIFT_FACTOR * strict_drift) if strict_drift is not None else tol
    problems = []
    if first > tol:
        problems.append(f"first-step loss differs from fp32 by {first:.3g} (relative) > {tol}")
    if worst > allowed:
        basis = (f"max({tol}, {AMP_DRIFT_FACTOR:g} x fp32-strict drift {strict_drift:.3g})"
                 if strict_drift is not None else f"{tol}")
        problems.append(f"loss differs from fp32 by {worst:.3g} (relative) at its worst step > {allowed:.3g} = {basis}")
    return {"first_step_rel_diff": first, "max_rel_diff": worst, "allowed": allowed, "problems": problems}


def write_pairs(root: Path, n: int, size: int, seed: int = 0) -> tuple:
    """``n`` smooth random sharp/blurry PNG pairs of ``size`` px under ``root/input`` and ``root/target``."""
    rng = np.random.default_rng(seed)
    lq_dir, gt_dir = root / "input", root / "target"
    lq_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
        gt = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(gt_dir / f"im{i:02d}.png"), gt)
        cv2.imwrite(str(lq_dir / f"im{i:02d}.png"), cv2.blur(gt, (5, 5)))
    return lq_dir, gt_dir


def training_options(ctx: Context, root: Path, *, stage: str = "1", total_iter: int = 4, save_every: int = 2,
                     amp: Optional[str] = None, overrides: Sequence[str] = ()) -> Path:
    """A runnable copy of a GoPro training file on generated data under ``root``; returns its path.

    Only what a short run needs changes: the data (generated pairs, fixed crop,
    no progressive schedule, no validation), the iteration counts, logging and
    checkpoint cadence, and the constant learning rate.  The networks, losses,
    optimiser and clip are the file's.
    """

    crop = 32 if ctx.dry_run else 128
    lq, gt = write_pairs(root / "data", n=6, size=crop + 16)
    raw = copy.deepcopy(load_yaml(opt_path(ctx, stage)))
    train_set = dict(raw["datasets"]["train"])
    for key in ("mini_batch_sizes", "iters", "gt_sizes"):
        train_set.pop(key, None)
    train_set.update(dataroot_lq=str(lq), dataroot_gt=str(gt), gt_size=crop, batch_size_per_gpu=2,
                     num_worker_per_gpu=0)
    raw["datasets"] = {"train": train_set}
    raw["name"] = f"check_{root.name}"
    raw["num_gpu"] = "auto" if ctx.cuda else 0
    raw["path"] = {"experiments_root": str(root / "experiments")}
    raw["train"]["total_iter"] = total_iter
    raw["train"].pop("scheduler", None)
    if amp:
        raw["train"]["amp"] = {"enabled": True, "dtype": amp}
    raw["logger"] = {"print_freq": 1, "save_checkpoint_freq": save_every, "use_tb_logger": False, "keep_last": 0,
                     "pbar": False}
    raw = dict(apply_overrides(raw, list(tiny_overrides(ctx, stage)) + list(overrides)))
    path = root / f"{raw['name']}.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def latest_state(experiments: Path):
    """The newest complete checkpoint of the only run under ``experiments``."""
    runs = [p for p in experiments.iterdir() if p.is_dir() and "_archived_" not in p.name]
    if len(runs) != 1:
        raise AssertionError(f"expected one run folder under {experiments}, found {[p.name for p in runs]}")
    state = CheckpointStore(runs[0]).latest_valid()
    if state is None:
        raise AssertionError(f"no complete checkpoint in {runs[0]}")
    return state


def pipeline_of(ctx: Context, formulation: str = "fast"):
    """The GoPro inference pipeline (``options/test_gopro.yml``, random weights) on the check's device."""
    options = load_profile_options(opt_path(ctx, "test"), list(FORMULATIONS[formulation]) + tiny_overrides(ctx, "test"))
    model = build_profile_model(options, ctx.device)
    return model.pipeline().eval()


# ------------------------------------------------------------ precision
def _losses(ctx: Context, spec, steps: int) -> dict:
    """``steps`` training steps of ``spec``: the same data and diffusion noise per step for every variant."""
    ts = TrainStep(spec)
    losses, skipped, times = [], 0, []
    for k in range(steps):
        ts.set_data(1000 + k)
        torch.manual_seed(2000 + k)
        t0 = time.perf_counter()
        terms = ts.step()
        sync(ctx)
        times.append(time.perf_counter() - t0)
        losses.append(terms["total"])
        skipped += not (math.isfinite(terms["grad_norm"]) and math.isfinite(terms["total"]))
    peak = torch.cuda.max_memory_allocated() if ctx.cuda else None
    del ts
    free_cuda()
    return {"losses": losses, "nonfinite_steps": skipped, "first_step_s": times[0],
            "median_step_s": statistics.median(times[1:] or times), "cuda_peak_allocated_bytes": peak}


def runs_table(runs: Dict[str, dict]) -> str:
    """Markdown: one row per run of a comparison (first and last loss, difference, step times, memory)."""
    lines = ["| run | first loss | last loss | first-step rel diff | max rel diff (allowed) | non-finite steps | "
             "first step s | median s/step | peak alloc GiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in runs.items():
        peak = r.get("cuda_peak_allocated_bytes")
        diff = r.get("max_rel_diff_vs_fp32", r.get("max_rel_diff"))
        first = r.get("first_step_rel_diff_vs_fp32")
        allowed = r.get("allowed_rel_diff")
        lines.append(f"| {label} | {r['losses'][0]:.6g} | {r['losses'][-1]:.6g} | "
                     f"{'-' if first is None else f'{first:.2e}'} | "
                     f"{'-' if diff is None else f'{diff:.2e}'}{'' if allowed is None else f' ({allowed:.2e})'} | "
                     f"{r.get('nonfinite_steps', '-')} | "
                     f"{r['first_step_s']:.3f} | {r['median_step_s']:.3f} | "
                     f"{'n/a' if peak is None else f'{peak / 2**30:.2f}'} |")
    return "\n".join(lines)


def _precision_parity(ctx: Context, stage: str) -> dict:
    batch, size = train_size(ctx)
    steps = 2 if ctx.dry_run else 20
    base = StepSpec(opt=opt_path(ctx, stage), batch=batch, size=size, device=ctx.device,
                    overrides=tiny_overrides(ctx, stage))
    runs: Dict[str, dict] = {}
    parts: Dict[str, str] = {}
    for label in ("fp32", "fp32-strict", "bf16", "fp16"):
        if label != "fp32" and not ctx.cuda:
            parts[label] = NO_CUDA
            continue
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats()
        precision = "fp32" if label == "fp32-strict" else label
        with tf32_off() if label == "fp32-strict" else contextlib.nullcontext():
            runs[label] = _losses(ctx, replace(base, precision=precision), steps)
        losses = runs[label]["losses"]
        if not all(math.isfinite(v) for v in losses):
            raise AssertionError(f"{label}: non-finite loss in {losses}")
        parts[label] = "passed"
    ref = runs["fp32"]["losses"]
    drift = None
    if "fp32-strict" in runs:
        drift = rel_diff(runs["fp32-strict"]["losses"], ref)
        runs["fp32-strict"]["max_rel_diff_vs_fp32"] = drift
    for precision, tol in AMP_TOLERANCE.items():
        if precision in runs:
            verdict = amp_verdict(runs[precision]["losses"], ref, tol, drift)
            runs[precision].update(max_rel_diff_vs_fp32=verdict["max_rel_diff"],
                                   first_step_rel_diff_vs_fp32=verdict["first_step_rel_diff"],
                                   allowed_rel_diff=verdict["allowed"])
            if verdict["problems"]:
                skipped = runs[precision]["nonfinite_steps"]
                parts[precision] = ("failed: " + "; ".join(verdict["problems"])
                                    + (f" ({skipped} of {steps} steps skipped: non-finite gradients)" if skipped else ""))
    failed = {k: v for k, v in parts.items() if v.startswith("failed")}
    details = {"steps": steps, "batch": batch, "size": list(size), "tolerance_rel_vs_fp32": AMP_TOLERANCE,
               "drift_factor": AMP_DRIFT_FACTOR, "fp32_strict_drift": drift,
               "parts": parts, "runs": runs, "table": runs_table(runs)}
    if failed:
        raise CheckFailed("; ".join(f"{k} {v}" for k, v in failed.items()), details)
    return details


@check("amp_stage1", "stage 1: fp32 vs bf16 vs fp16 AMP training steps", 95, 40)
def amp_stage1(ctx: Context) -> dict:
    return _precision_parity(ctx, "1")


@check("amp_stage2", "stage 2: fp32 vs bf16 vs fp16 AMP training steps", 95, 40)
def amp_stage2(ctx: Context) -> dict:
    return _precision_parity(ctx, "2")


@check("amp_resume", "fp16 GradScaler state saved and resumed through the trainer's checkpoints", 60, 40)
def amp_resume(ctx: Context) -> dict:
    """Run A trains straight; run B stops half-way and resumes from its checkpoint; both must end alike."""
    root = ctx.work_dir("amp_resume")
    total = 2 if ctx.dry_run else 4
    extra = [] if ctx.dry_run else ["train.deterministic=true"]
    path_a = training_options(ctx, root / "a", amp="fp16", total_iter=total, save_every=total // 2, overrides=extra)
    path_b = training_options(ctx, root / "b", amp="fp16", total_iter=total, save_every=total // 2, overrides=extra)
    Trainer(load_options(path_a)).fit()
    Trainer(load_options(path_b), stop_after=total // 2).fit()
    mid = latest_state(root / "b" / "experiments")
    Trainer(load_options(path_b), resume="auto").fit()
    a, b = latest_state(root / "a" / "experiments"), latest_state(root / "b" / "experiments")
    if not (a.iteration == b.iteration == total and mid.iteration == total // 2):
        raise AssertionError(f"iterations: straight {a.iteration}, stopped {mid.iteration}, resumed {b.iteration}")
    scaler_a, scaler_b = a.state.get("scaler") or {}, b.state.get("scaler") or {}
    max_diff = 0.0
    for net, payload in a.networks.items():
        for key, value in payload["params"].items():
            other = b.networks[net]["params"][key]
            if not (torch.isfinite(value).all() and torch.isfinite(other).all()):
                raise AssertionError(f"net_{net}.{key}: weights not finite after the straight or the resumed run")
            max_diff = max(max_diff, float((value.float() - other.float()).abs().max()))
    details = {"scaler_straight": scaler_a, "scaler_resumed": scaler_b, "scaler_at_stop": mid.state.get("scaler"),
               "max_abs_weight_diff": max_diff, "bitwise_equal_weights": max_diff == 0.0, "parts": {}}
    if ctx.cuda:
        if not scaler_a or scaler_a != scaler_b:
            raise AssertionError(f"GradScaler state after resume {scaler_b} != straight run {scaler_a}")
        details["parts"]["grad_scaler"] = "passed"
    else:
        details["parts"]["grad_scaler"] = NO_CUDA + ": fp16 AMP falls back to fp32 on the CPU, no scaler state"
    if max_diff > (0.0 if ctx.dry_run else 1e-4):
        raise AssertionError(f"weights after resume differ from the straight run by {max_diff:.3g}")
    return details


# ------------------------------------------------------------- runtime paths
# In the background: about a minute of process start, rendezvous and NCCL set-up with the GPU mostly idle, and
# a verdict (the trainer ran under torchrun) that no check beside it can change.
@check("ddp", "DDP (NCCL) at world size 1 through torchrun and the trainer", 90, 90, background=True)
def ddp(ctx: Context) -> dict:
    root = ctx.work_dir("ddp")
    backend = "nccl" if ctx.cuda else "gloo"
    path = training_options(ctx, root, total_iter=2, save_every=2, overrides=[f"dist_params.backend={backend}"])
    script = Path(ctx.repo) / "scripts" / "train.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script),
           "-opt", str(path), "--launcher", "pytorch"]
    proc = run_group(cmd, timeout=max(10, ctx_budget(ctx, "ddp") - 10))
    logs = sorted((root / "experiments").rglob("train_*.log"))
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    details = {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "backend": backend,
               "parts": {"nccl": "passed" if ctx.cuda else NO_CUDA + " (gloo was used)"}}
    if proc.returncode != 0:
        details["stderr_tail"] = proc.stderr.strip().splitlines()[-12:]
        raise AssertionError(f"torchrun exited with {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    expected = f"world size 1 (backend {backend})"
    if expected not in text:
        raise AssertionError(f"the training log does not say '{expected}'")
    details["final_iteration"] = latest_state(root / "experiments").iteration
    return details


def ctx_budget(ctx: Context, name: str) -> float:
    return REGISTRY[name].budget(ctx)


def _compare_steps(ctx: Context, specs: Dict[str, object], steps: int) -> dict:
    """Run each spec for ``steps`` steps on the same data; losses, step times and the largest loss difference."""
    out = {}
    for label, spec in specs.items():
        ts = TrainStep(spec)
        losses, times = [], []
        for k in range(steps):
            ts.set_data(1000 + k)
            torch.manual_seed(2000 + k)
            t0 = time.perf_counter()
            losses.append(ts.step()["total"])
            sync(ctx)
            times.append(time.perf_counter() - t0)
        out[label] = {"losses": losses, "first_step_s": times[0],
                      "median_step_s": statistics.median(times[1:] or times)}
        del ts
        free_cuda()
    return out


@check("channels_last", "train.channels_last: same losses as the default layout", 45, 30)
def channels_last(ctx: Context) -> dict:
    batch, size = train_size(ctx)
    ov = tiny_overrides(ctx, "1")
    specs = {flag: StepSpec(opt=opt_path(ctx, "1"), batch=batch, size=size, device=ctx.device,
                            overrides=ov + [f"train.channels_last={flag}"]) for flag in ("false", "true")}
    runs = _compare_steps(ctx, specs, 2 if ctx.dry_run else 5)
    d = rel_diff(runs["true"]["losses"], runs["false"]["losses"])
    if not all(math.isfinite(v) for r in runs.values() for v in r["losses"]):
        raise AssertionError("non-finite loss")
    tol = FP32_TOLERANCE["cuda" if ctx.cuda else "cpu"]
    if d > tol:
        raise AssertionError(f"channels_last losses differ by {d:.3g} (relative) > {tol}")
    runs["true"]["max_rel_diff"] = d
    return {"runs": runs, "max_rel_diff": d, "tolerance": tol,
            "table": runs_table({f"channels_last={k}": v for k, v in runs.items()})}


@check("compile", "train.compile (torch.compile): same losses as eager", 180, 150, background=True)
def compile_check(ctx: Context) -> dict:
    """``train.compile=true`` against the default: on CUDA torch.compile's default backend (inductor, as the
    trainer); in a dry run dynamo with the eager backend (no C++ build), through the same option.

    A full run starts it in the background, so its step times (and ``speedup_after_compile``) are taken beside
    the checks its report names, not alone."""
    batch, size = train_size(ctx)
    ov = tiny_overrides(ctx, "1") if ctx.dry_run else list(SHALLOW_FOR_COMPILE)
    specs = {"eager": StepSpec(opt=opt_path(ctx, "1"), batch=batch, size=size, device=ctx.device, overrides=ov),
             "compiled": StepSpec(opt=opt_path(ctx, "1"), batch=batch, size=size, device=ctx.device,
                                  overrides=ov + ["train.compile=true"],
                                  compile_backend="eager" if ctx.dry_run else None)}
    runs = _compare_steps(ctx, specs, 2 if ctx.dry_run else 6)
    d = rel_diff(runs["compiled"]["losses"], runs["eager"]["losses"])
    tol = FP32_TOLERANCE["cuda" if ctx.cuda else "cpu"]
    details = {"runs": runs, "max_rel_diff": d, "tolerance": tol,
               "backend": "eager (dry run)" if ctx.dry_run else "inductor",
               "network": "tiny (dry run)" if ctx.dry_run else "GoPro stage 1 widths, " + ", ".join(ov),
               "compile_s": runs["compiled"]["first_step_s"] - runs["eager"]["first_step_s"],
               "speedup_after_compile": runs["eager"]["median_step_s"] / runs["compiled"]["median_step_s"]}
    runs["compiled"]["max_rel_diff"] = d
    details["table"] = runs_table(runs)
    if d > tol:
        raise AssertionError(f"compiled losses differ by {d:.3g} (relative) > {tol}")
    return details


@check("prefetch", "data prefetchers: same batches as the plain loader (CUDA side-stream copies)", 30, 20)
def prefetch(ctx: Context) -> dict:
    root = ctx.work_dir("prefetch")
    options = load_options(training_options(ctx, root))
    block = options.datasets["train"]

    def batches(mode: Optional[str]) -> list:
        ds = build_dataset(block, options.manual_seed)
        loader = build_dataloader(ds, phase="train", batch_size=2, num_workers=0, seed=options.manual_seed,
                                  prefetch=mode, pin_memory=mode == "cuda")
        out = []
        for i, batch in enumerate(loader):
            out.append(batch)
            if i == 2:
                break
        return out

    plain = batches(None)
    parts, details = {}, {"batches_compared": len(plain)}
    for mode in ("cpu", "cuda"):
        if mode == "cuda" and not ctx.cuda:
            parts[mode] = NO_CUDA
            continue
        got = batches(mode)
        for a, b in zip(plain, got):
            for key in ("lq", "gt"):
                if mode == "cuda" and b[key].device.type != "cuda":
                    raise AssertionError(f"prefetch cuda: batch['{key}'] is on {b[key].device}")
                if not torch.equal(a[key], b[key].cpu()):
                    raise AssertionError(f"prefetch {mode}: batch['{key}'] differs from the plain loader's")
        if len(got) != len(plain):
            raise AssertionError(f"prefetch {mode}: {len(got)} batches, plain loader {len(plain)}")
        parts[mode] = "passed"
    details["parts"] = parts
    return details


# --------------------------------------------------------------- inference
class _LimitedPipeline:
    """A pipeline whose ``restore`` raises out-of-memory above ``max_tiles`` per call (the dry-run stand-in
    for a memory cap; on CUDA the cap is real)."""

    def __init__(self, pipeline, max_tiles: int) -> None:
        self._p = pipeline
        self.max_tiles = max_tiles
        self.calls: List[int] = []

    def __getattr__(self, name):
        return getattr(self._p, name)

    def restore(self, lq, **kw):
        self.calls.append(int(lq.shape[0]))
        if lq.shape[0] > self.max_tiles:
            raise torch.OutOfMemoryError(f"simulated: {lq.shape[0]} tiles > {self.max_tiles}")
        return self._p.restore(lq, **kw)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@check("tiler_oom", "tiled inference: out-of-memory halves the tile batch, result unchanged", 60, 30)
def tiler_oom(ctx: Context) -> dict:
    pipe = pipeline_of(ctx)
    side, tile = (96, 32) if ctx.dry_run else (768, 256)
    lq = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    opts1 = TileOptions(size=tile, overlap=tile // 8, batch=1)
    ref = restore_image(pipe, lq, opts1, seed=5)
    handler = _Warnings()
    logger = logging.getLogger("hidiff.inference.tiler")
    logger.addHandler(handler)
    details: dict = {"image": [side, side], "tile": tile}
    try:
        if ctx.cuda:
            free_cuda()
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            restore_image(pipe, lq[..., :tile, :tile], opts1, seed=5)
            per_tile = torch.cuda.max_memory_allocated() - base
            cap = base + 3 * per_tile
            free_cuda()
            torch.cuda.set_per_process_memory_fraction(cap / total)
            details.update(per_tile_peak_bytes=per_tile, cap_bytes=cap,
                           mechanism="torch.cuda.set_per_process_memory_fraction")
            try:
                out = restore_image(pipe, lq, TileOptions(size=tile, overlap=tile // 8, batch=16), seed=5)
            finally:
                torch.cuda.set_per_process_memory_fraction(1.0)
        else:
            limited = _LimitedPipeline(pipe, max_tiles=2)
            out = restore_image(limited, lq, TileOptions(size=tile, overlap=tile // 8, batch=8), seed=5,
                                batch_on_cpu=True)
            details.update(mechanism="simulated out-of-memory above 2 tiles per forward (no CUDA)",
                           tiles_per_call=limited.calls)
    finally:
        logger.removeHandler(handler)
    halvings = [m for m in handler.messages if "out of memory" in m]
    diff = float((out - ref).abs().max())
    details.update(warnings=halvings, max_abs_diff_vs_batch_1=diff)
    if not halvings:
        raise AssertionError("no out-of-memory halving happened (the cap did not bite)")
    if not torch.isfinite(out).all() or diff > (1e-5 if not ctx.cuda else 1e-2):
        raise AssertionError(f"tiled result after halving differs from batch 1 by {diff:.3g}")
    return details


@check("tiler_auto", "tiled inference: automatic tile size from free memory", 60, 30, alone=True)
def tiler_auto(ctx: Context) -> dict:
    pipe = pipeline_of(ctx)
    details: dict = {}
    if ctx.cuda:
        side = 1024
        roomy = auto_tile_options(side, side, ctx.device)
        free = torch.cuda.mem_get_info()[0]
        ballast = torch.empty(max(0, free - int(8e9)), dtype=torch.uint8, device=ctx.device)
        try:
            tight = auto_tile_options(side, side, ctx.device)
            lq = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(4))
            out = restore_image(pipe, lq, None, seed=1)
        finally:
            del ballast
            free_cuda()
        details.update(image=[side, side], free_bytes_left=int(8e9), free_bytes_at_start=int(free),
                       with_all_memory=roomy.describe() if roomy else "whole image",
                       with_8GB_free=tight.describe() if tight else "whole image")
        if not isinstance(tight, TileOptions):
            raise AssertionError("with 8 GB free a 1024x1024 image was not tiled")
        if free <= 16e9:    # near 8 GB both budgets may pick the same tiles: compare only with a clear margin
            details["parts"] = {"roomy_vs_tight": f"not compared: only {free / 1e9:.1f} GB free at the start "
                                                  f"(needs more than 16 GB)"}
        elif not more_room(roomy, tight):
            raise AssertionError(f"with all memory free ({free / 1e9:.1f} GB) the automatic tiling "
                                 f"({details['with_all_memory']}) is not larger than with 8 GB free "
                                 f"({details['with_8GB_free']}): it does not follow free memory")
    else:
        small = auto_tile_options(64, 64, "cpu")
        tight = auto_tile_options(520, 520, "cpu")
        lq = torch.rand(1, 3, 520, 520, generator=torch.Generator().manual_seed(4))
        out = restore_image(pipe, lq, None, seed=1)
        details.update(image=[520, 520], small_64=small.describe() if small else "whole image",
                       chosen=tight.describe() if tight else "whole image",
                       parts={"free_memory_rule": NO_CUDA + " (the CPU rule was exercised)"})
        if small is not None or not isinstance(tight, TileOptions):
            raise AssertionError("the CPU rule must keep 64x64 whole and tile 520x520")
    if out.shape != lq.shape or not torch.isfinite(out).all():
        raise AssertionError(f"automatic tiling returned {tuple(out.shape)} "
                             f"(finite: {bool(torch.isfinite(out).all())})")
    return details


@check("export", "export parity: TorchScript (and ONNX with --onnx) against eager", 240, 60)
def export(ctx: Context) -> dict:
    pipe = pipeline_of(ctx)
    side = 32 if ctx.dry_run else 256
    # a second size: a file traced at one size must run others (the example's stripes once became constants)
    other = (24, 40) if ctx.dry_run else (128, 192)
    root = ctx.work_dir("export")
    parts, details = {}, {"size": [side, side], "other_size": list(other), "device": ctx.device}

    def worst(path, kind):  # NaN-safe: a NaN at either size is the result (max() would drop it by position)
        diffs = [parity(pipe, path, kind, height=h, width=w) for h, w in ((side, side), other)]
        return next((d for d in diffs if d != d), max(diffs))

    t0 = time.perf_counter()
    ts = export_torchscript(pipe, root / "hidiff.pt", height=side, width=side)
    details["torchscript_max_abs_diff"] = d_ts = worst(ts, "torchscript")
    details["torchscript_s"] = time.perf_counter() - t0
    parts["torchscript"] = "passed" if d_ts <= 1e-3 else f"failed: max |diff| {d_ts:.3g} > 1e-3"
    missing = missing_onnx_packages()
    if not ctx.extra.get("onnx"):
        parts["onnx"] = ("skipped (not requested: the dynamo-based ONNX export of the network takes minutes of CPU; "
                         "add --onnx)")
    elif missing:
        parts["onnx"] = "failed: " + onnx_missing_message(missing)
    else:
        t0 = time.perf_counter()
        onnx_path = export_onnx(pipe, root / "hidiff.onnx", height=side, width=side)
        d_onnx = worst(onnx_path, "onnx")
        # ONNX runs on onnxruntime's CPU provider: against CUDA eager the gap is the devices' arithmetic.
        tol = 1e-3 if not ctx.cuda else 2e-2
        details.update(onnx_max_abs_diff=d_onnx, onnx_tolerance=tol, onnx_s=time.perf_counter() - t0)
        parts["onnx"] = "passed" if d_onnx <= tol else f"failed: max |diff| {d_onnx:.3g} > {tol}"
    details["parts"] = parts
    failed = [f"{k} {v}" for k, v in parts.items() if v.startswith("failed")]
    if failed:
        raise AssertionError("; ".join(failed))
    return details


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


#: what the ONNX part of the export check imports
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def missing_onnx_packages() -> List[str]:
    """The packages of :data:`ONNX_PACKAGES` that cannot be imported here."""
    return [m for m in ONNX_PACKAGES if not _importable(m)]


def onnx_missing_message(missing: Sequence[str]) -> str:
    """Why --onnx cannot run: the missing packages and what to do."""
    return (f"--onnx asked for the ONNX export, but package {', '.join(missing)} is missing here; install it (on "
            f"the GPU machine, which reaches no package index: carry its wheel and pip-install it from the file "
            f"first), or leave out --onnx")


def more_room(roomy: Optional[TileOptions], tight: Optional[TileOptions]) -> bool:
    """Whether the automatic tiling with more free memory (``roomy``) is larger than with less (``tight``):
    the whole image (None), a larger tile, or the same tile with more tiles per forward."""
    if roomy is None:
        return True
    if tight is None:
        return False
    return (roomy.size, roomy.batch) > (tight.size, tight.batch)


# ------------------------------------------------------------------- speed
@check("speed_inference", "inference speed: plain / fast, fp32 / bf16 / fp16", 120, 40, alone=True)
def speed_inference(ctx: Context) -> dict:

    sizes = [(32, 32)] if ctx.dry_run else [(256, 256), (720, 1280)]
    # "fast-whole": the fast formulation without row stripes (on CUDA "fast" takes images whole anyway)
    variants = [("plain", "fp32"), ("fast", "fp32")]
    variants += [("plain", "bf16"), ("fast", "bf16"), ("fast", "fp16")] if ctx.cuda else [("fast-whole", "fp32")]
    tables, rows_all = [], []
    for size in sizes:
        calls, own_bytes = {}, {}
        for formulation, precision in variants:
            whole = ["network_g.inference_chunk_pixels=0"] if formulation == "fast-whole" else []
            options = load_profile_options(opt_path(ctx, "test"),
                                           list(FORMULATIONS[formulation.split("-")[0]]) + whole
                                           + tiny_overrides(ctx, "test"))
            model = build_profile_model(options, ctx.device)
            model.train(False)
            (case,) = build_cases(model, size, batch=1, device=ctx.device, names=["pipeline"])
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

            def run(case=case, dtype=dtype):
                ac = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
                with torch.inference_mode(), ac:
                    return case.run()

            out = run()
            if torch.is_tensor(out) and not torch.isfinite(out).all():
                raise AssertionError(f"{formulation}+{precision} at {size}: non-finite output")

            calls[f"{formulation}+{precision}"] = run
            own_bytes[f"{formulation}+{precision}"] = sum(t.numel() * t.element_size() for t in
                                                          [*model.parameters(), *model.buffers()])
        timing = time_interleaved(calls, device=ctx.device, warmup=0 if ctx.dry_run else 1,
                                  repeats=1 if ctx.dry_run else 5)
        base = timing["variants"]["plain+fp32"]["median_s"]
        rows = []
        for label, fn in calls.items():
            t = timing["variants"][label]
            peak = None
            if ctx.cuda:
                # every variant's model is alive on the device: count the call's own use above what is held,
                # plus this variant's weights, not the others' (they inflated each peak by 0.1 GiB per variant)
                free_cuda()
                torch.cuda.reset_peak_memory_stats()
                held = torch.cuda.memory_allocated()
                fn()
                peak = torch.cuda.max_memory_allocated() - held + own_bytes[label]
            rows.append({"size": list(size), "variant": label, "median_s": t["median_s"],
                         "images_per_s": 1 / t["median_s"],
                         "speedup_vs_plain_fp32": base / t["median_s"], "cuda_peak_allocated_bytes": peak})
        rows_all += rows
        tables.append(_speed_md(rows, f"inference, 1x{size[0]}x{size[1]}", "images/s", "images_per_s"))
        del calls
        free_cuda()
    return {"rows": rows_all, "table": "\n\n".join(tables), "parts": {} if ctx.cuda else
            {"bf16": NO_CUDA, "fp16": NO_CUDA, "memory": NO_CUDA}}


def _speed_md(rows: List[dict], title: str, unit: str, key: str) -> str:
    lines = [f"{title}", "", f"| variant | median s | {unit} | speed vs plain fp32 | peak alloc GiB |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        peak = r.get("cuda_peak_allocated_bytes")
        lines.append(f"| {r['variant']} | {r['median_s']:.4f} | {r[key]:.2f} | {r['speedup_vs_plain_fp32']:.2f}x | "
                     f"{'n/a' if peak is None else f'{peak / 2**30:.2f}'} |")
    return "\n".join(lines)


@check("speed_training", "training speed: plain / fast / bf16 / fp16 / checkpointing / stored FFN / recomputed "
                         "branches, stages 1 and 2",
       150, 50, alone=True)
def speed_training(ctx: Context) -> dict:
    batch, size = train_size(ctx)
    results = []
    for stage in ("1", "2"):
        case = SpeedCase(f"stage {stage}", opt_path(ctx, stage), batch, size)
        specs = variant_specs(case, precisions=("fp32", "bf16", "fp16") if ctx.cuda else ("fp32",),
                              device=ctx.device, overrides=tiny_overrides(ctx, stage))
        specs += stored_ffn(specs) + recomputed_branches(specs)
        results.append(run_case(case, specs, warmup=0 if ctx.dry_run else 1, repeats=1 if ctx.dry_run else 3,
                                memory="in_process" if ctx.cuda else "none"))
        free_cuda()
    return {"results": results, "table": format_table(results, machine_line(describe_machine(ctx.device)), ctx.device),
            "parts": {} if ctx.cuda else {"bf16": NO_CUDA, "fp16": NO_CUDA, "memory": NO_CUDA}}


def stored_ffn(specs: Sequence[StepSpec]) -> List[StepSpec]:
    """The fast fp32 and bf16 variants with the feed-forward's gate stored (``train.recompute_ffn: false``).

    The recomputed gate (the default) cost no time on the CPU; on an H100 (run 6, docs/speed.md) fast+bf16 fell
    from run 4's 1.41x plain to 1.03x once it was the default, and only these variants, timed beside it, can
    tell whether it is the cause."""
    return [replace(s, overrides=[*s.overrides, "train.recompute_ffn=false"], tag="stored-ffn")
            for s in specs if s.formulation == "fast" and not s.checkpointing and s.precision in ("fp32", "bf16")]


def recomputed_branches(specs: Sequence[StepSpec]) -> List[StepSpec]:
    """The fast bf16 variant (fp32 where there is no CUDA) with ``train.recompute_branches``: what selective
    recomputation saves, and costs, beside mixed precision, the GPU's own memory lever (docs/speed.md)."""
    want = "bf16" if any(s.precision == "bf16" for s in specs) else "fp32"
    return [replace(s, overrides=[*s.overrides, "train.recompute_branches=true"], tag="branches")
            for s in specs if s.formulation == "fast" and not s.checkpointing and s.precision == want]


#: the order the checks run in.  The compile check, which waits mostly on inductor's CPU work (65 s of its 93 s
#: on an H100, docs/speed.md), starts first in the background; the checks whose verdicts do not depend on
#: timing run beside it; tiler_auto (it fills the device's memory) and the speed tables run alone at the end.
ORDER = ("compile", "amp_stage1", "amp_stage2", "amp_resume", "ddp", "channels_last", "prefetch", "tiler_oom",
         "export", "tiler_auto", "speed_inference", "speed_training")
