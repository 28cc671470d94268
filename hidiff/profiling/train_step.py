"""One optimisation step of a stage model, exactly as the trainer runs it, for timing and memory.

A step is: zero the gradients, forward the stage model under the run's
autocast (the model returns its loss terms), backward of ``'total'`` through
:class:`hidiff.engine.amp.Amp` (GradScaler for fp16), unscale, clip the global
gradient norm (``train.use_grad_clip`` / ``grad_clip_norm``), the non-finite
check (one host sync, as the trainer), and the optimiser step
(``train.optim_total``); ``train.channels_last`` and ``train.compile`` are
honoured as the trainer honours them.  Networks start from a fresh random init (seed 0), so a
stage-2 file needs no stage-1 weights.

Formulations (options of ``network_g``):

* ``fast``: the option file as shipped (fused attention maths, channels_last
  feature maps, inference stripes, the feed-forward's depthwise conv and gate recomputed in backward);
* ``plain``: the textbook formulation of the official code
  (``fused_attention: false, channels_last: false, inference_chunk_pixels: 0``; it never recomputes, whatever
  ``train.recompute_ffn`` says).

``checkpoint_levels`` (as ``train.checkpoint_levels``; :data:`ALL_STAGES` for every
stage) calls ``set_checkpoint_levels`` (activation checkpointing) on each
trainable network that has it.  ``precision``, ``checkpoint_levels`` and
``keep_memory`` left at None take the option file's (and its overrides')
``train.amp``, ``train.checkpoint_levels`` and ``train.keep_cpu_memory``, as the
trainer does; a value given in the spec (a benchmark's variant) replaces it.

:func:`time_interleaved` times several variants in one process, one step of
each in turn, so that a change of machine load hits every variant alike;
:func:`measure_step_memory` measures one variant's peak in a fresh process.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from hidiff.archs.unet_levels import STAGES, checkpoint_stages
from hidiff.engine.amp import Amp
from hidiff.engine.ema import ModelEMA
from hidiff.engine.formulation import channels_last_batch, compiled, prepare_networks
from hidiff.engine.optim import build_optimizer
from hidiff.errors import ConfigError
from hidiff.profiling.machine import load_average
from hidiff.profiling.memory import PeakMemory, release_freed_memory
from hidiff.profiling.profiler import build_profile_model, load_profile_options, run_worker
from hidiff.utils.malloc import keep_freed_memory

FORMULATIONS: Dict[str, Tuple[str, ...]] = {
    "fast": (),
    "plain": ("network_g.fused_attention=false", "network_g.channels_last=false",
              "network_g.inference_chunk_pixels=0"),
}
PRECISIONS = ("fp32", "bf16", "fp16")
#: activation checkpointing of every U-Net stage (``train.checkpoint_levels: [1, 2, 3, 4, refinement]``)
ALL_STAGES: Tuple[str, ...] = tuple(STAGES)
RESULT_MARK = "HIDIFF_TRAIN_STEP "


@dataclass
class StepSpec:
    """Everything needed to rebuild one training-step variant in another process."""

    opt: str
    batch: int
    size: Tuple[int, int]
    formulation: str = "fast"
    # None: the option file's train.amp (fp32 unless enabled; on a CPU fp32, as the trainer)
    precision: Optional[str] = None
    # None: the option file's train.checkpoint_levels; [] explicitly none
    checkpoint_levels: Optional[List[Union[int, str]]] = None
    device: str = "cpu"
    threads: Optional[int] = None
    overrides: List[str] = field(default_factory=list)
    seed: int = 0
    # glibc's malloc keeps freed memory, as the trainer on a CPU (None: the option file's train.keep_cpu_memory).
    # A process-wide setting: applied by the process that runs this variant alone (memory_in_subprocess's
    # worker, the side-by-side workers), not by TrainStep.
    keep_memory: Optional[bool] = None
    # a name for what ``overrides`` change, added to the label (two variants may differ in overrides alone)
    tag: str = ""
    # torch.compile's backend when train.compile is on (None: torch's default, inductor, as the trainer;
    # "eager" runs dynamo's tracing without a C++ build, for a CPU dry run)
    compile_backend: Optional[str] = None

    def __post_init__(self) -> None:
        if self.formulation not in FORMULATIONS:
            raise ConfigError(f"formulation: expected one of {', '.join(FORMULATIONS)}, got {self.formulation!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)} (or None: train.amp), "
                              f"got {self.precision!r}")
        if self.batch < 1 or min(self.size) < 1:
            raise ConfigError(f"batch and size must be positive, got batch {self.batch}, size {self.size}")
        self.size = tuple(self.size)  # type: ignore[assignment]
        if self.checkpoint_levels is not None:
            self.checkpoint_levels = list(self.checkpoint_levels)
            checkpoint_stages(self.checkpoint_levels)  # an unknown level fails here, named

    @property
    def checkpointing(self) -> bool:
        return bool(self.checkpoint_levels)

    @property
    def label(self) -> str:
        """What the spec sets: formulation, then precision, checkpointing and tag where given (a setting left to
        the option file is not named)."""
        parts = [self.formulation]
        if self.precision not in (None, "fp32"):
            parts.append(self.precision)
        if self.checkpointing:
            every = every_stage(self.checkpoint_levels)
            parts.append("ckpt" if every else "ckpt[" + ",".join(map(str, self.checkpoint_levels)) + "]")
        if self.tag:
            parts.append(self.tag)
        return "+".join(parts)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "StepSpec":
        return cls(**json.loads(text))


def every_stage(levels: Sequence[Union[int, str]]) -> bool:
    """Whether ``levels`` (as ``train.checkpoint_levels``) name every U-Net stage, however spelled."""
    return checkpoint_stages(levels) == frozenset(ALL_STAGES)


def parse_checkpoint_levels(text: str, key: str = "--checkpoint-levels") -> List[Union[int, str]]:
    """``'1,refinement'`` -> [1, 'refinement'] (levels 1-4 as numbers, stage names as given); ``'all'`` ->
    every stage; checked like ``train.checkpoint_levels``."""
    if text.strip() == "all":
        return list(ALL_STAGES)
    levels: List[Union[int, str]] = [int(t) if t.strip().isdigit() else t.strip() for t in text.split(",") if t.strip()]
    if not levels:
        raise ConfigError(f"{key}: expected comma-separated U-Net levels (1-4) or stage names, or 'all'; got {text!r}")
    checkpoint_stages(levels, key)
    return levels


class UnsupportedVariant(RuntimeError):
    """The variant cannot run here (e.g. no network offers activation checkpointing)."""


def random_batch(batch: int, size: Tuple[int, int], device: torch.device, seed: int, in_channels: int = 3,
                 ) -> Dict[str, torch.Tensor]:
    """A fixed random (lq, gt) pair in [0, 1), the same for every variant of a seed."""
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand((batch, in_channels, *size), generator=g)
    gt = torch.rand((batch, 3, *size), generator=g)
    return {"lq": lq.to(device), "gt": gt.to(device)}


def spec_options(spec: StepSpec):
    """The options of ``spec``: its file with the formulation's and the spec's overrides."""
    return load_profile_options(spec.opt, list(FORMULATIONS[spec.formulation]) + list(spec.overrides))


def keeps_memory(spec: StepSpec, options=None) -> bool:
    """Whether the process running ``spec`` alone keeps freed memory: ``spec.keep_memory``, else the option
    file's ``train.keep_cpu_memory`` (on a CPU only, as the trainer)."""
    if spec.device != "cpu":
        return False
    if spec.keep_memory is not None:
        return spec.keep_memory
    topt = (options if options is not None else spec_options(spec)).train
    return bool(topt is not None and topt.keep_cpu_memory)


class TrainStep:
    """A built variant: ``step()`` runs one optimisation step and returns the loss terms (host floats).

    ``precision`` and ``checkpoint_levels`` are what the step runs with: the spec's where it gives them, else
    the option file's ``train.amp`` and ``train.checkpoint_levels``."""

    def __init__(self, spec: StepSpec, options=None) -> None:

        self.spec = spec
        self.device = torch.device(spec.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available here")
        self.options = options if options is not None else spec_options(spec)
        topt = self.options.train
        if topt is None:
            raise ConfigError(f"{spec.opt}: no 'train' block; a training step needs a training option file")
        self.topt = topt
        if topt.grad_accum_steps > 1:
            raise UnsupportedVariant(f"train.grad_accum_steps {topt.grad_accum_steps}: a timed step is one forward "
                                     f"and backward per optimiser step; set it to 1 (-o train.grad_accum_steps=1) "
                                     f"and scale the batch instead")
        torch.manual_seed(spec.seed)
        self.model = build_profile_model(self.options, self.device)
        self.checkpoint_levels = list(topt.checkpoint_levels if spec.checkpoint_levels is None
                                      else spec.checkpoint_levels)
        try:   # the trainer's own set-up (hidiff/engine/formulation.py)
            self.checkpointed = prepare_networks(self.model, topt, self.checkpoint_levels)
        except ConfigError as exc:
            raise UnsupportedVariant(str(exc)) from None
        self.model.train(True)
        self.params = [p for p in self.model.trainable.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, topt.optim_total)
        if spec.precision is None:  # the option file's, as the trainer: fp32 with a warning off CUDA
            self.amp = Amp(topt.amp.enabled, topt.amp.dtype, self.device)
        else:
            self.amp = Amp(spec.precision != "fp32", "bf16" if spec.precision == "fp32" else spec.precision,
                           self.device)
            if spec.precision != "fp32" and not self.amp.enabled:
                raise UnsupportedVariant(f"{spec.precision} mixed precision needs CUDA (the trainer runs fp32 on "
                                         f"{self.device.type})")
        self.precision = "fp32" if not self.amp.enabled else ("bf16" if self.amp.dtype is torch.bfloat16 else "fp16")
        self.in_channels = int(getattr(self.model, "in_channels", 3))
        self.set_data(spec.seed + 1)
        self.step_module = compiled(self.model, topt, spec.compile_backend)
        # the trainer's EMA of the trained weights (train.ema_decay), updated after every step it takes
        self.ema = ({n: ModelEMA(net, topt.ema_decay) for n, net in self.model.trainable.items()}
                    if topt.ema_decay > 0 else {})
        self.last: Dict[str, float] = {}

    def set_data(self, seed: int) -> None:
        """Use the random batch of ``seed`` from now on (channels_last when ``train.channels_last``)."""
        data = channels_last_batch(random_batch(self.spec.batch, self.spec.size, self.device, seed,
                                                self.in_channels), self.topt)
        self.data = data

    def step(self) -> Dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        with self.amp.autocast():
            terms = self.step_module(self.data)
        self.amp.backward(terms["total"].float())
        self.amp.unscale_(self.optimizer)
        if self.topt.use_grad_clip:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.topt.grad_clip_norm)
        else:
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        values = torch.stack([gnorm.float().reshape(())] + [v.detach().float().reshape(()) for v in terms.values()])
        host = values.cpu().tolist()  # the trainer's one host sync per step (non-finite check)
        finite = all(v == v and abs(v) != float("inf") for v in host)
        self.amp.step(self.optimizer, skip=not finite)
        if finite:
            for n, e in self.ema.items():
                e.update(self.model.trainable[n])
        self.last = {"grad_norm": host[0], **{k: host[i + 1] for i, k in enumerate(terms)}}
        return self.last


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: Dict[str, Callable[[], object]], *, device: torch.device | str = "cpu",
                     warmup: int = 1, repeats: int = 3, log: Optional[Callable[[str], None]] = None) -> dict:
    """Time ``steps`` (label -> one step) in turn, ``repeats`` rounds after ``warmup`` rounds.

    The order rotates every round, so no variant always runs right after the
    same other one.  Returns per label the samples (s), their median, min, max
    and the process CPU time per step, plus the load average before and after.
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warm-up >= 0, got {repeats} and {warmup}")
    device = torch.device(device)
    labels = list(steps)
    for _ in range(warmup):
        for label in labels:
            steps[label]()
    _sync(device)
    wall: Dict[str, List[float]] = {k: [] for k in labels}
    cpu: Dict[str, List[float]] = {k: [] for k in labels}
    load_before = load_average()
    for r in range(repeats):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            c0, t0 = time.process_time(), time.perf_counter()
            steps[label]()
            _sync(device)
            wall[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
            if log:
                log(f"round {r + 1}/{repeats} {label}: {wall[label][-1]:.3f} s")
    out = {label: {"samples_s": [round(s, 4) for s in wall[label]], "median_s": statistics.median(wall[label]),
                   "min_s": min(wall[label]), "max_s": max(wall[label]),
                   "cpu_s": statistics.fmean(cpu[label])} for label in labels}
    return {"variants": out, "load_average_before": load_before, "load_average_after": load_average(),
            "warmup": warmup, "repeats": repeats}


def measure_step_memory(spec: StepSpec, options=None) -> dict:
    """Peak memory of one step of ``spec``, in this process, after one warm-up step.

    CPU: the RSS high-water mark of the step (reset after the warm-up); CUDA:
    ``torch.cuda.max_memory_allocated`` of the step.  Both include what lives
    through the step (weights, gradients, optimiser state); ``delta_bytes`` is
    what the step adds to the memory held before it.  On a CPU the memory the
    warm-up step freed is given back to the OS first (``malloc_trim``): where
    malloc keeps freed memory (``keep_memory``, the trainer's default) it would
    otherwise still hold the warm-up's activations, and the delta would hide the
    step's own memory.
    """
    if spec.threads:
        torch.set_num_threads(spec.threads)
    ts = TrainStep(spec, options)
    ts.step()
    released = release_freed_memory() if ts.device.type == "cpu" else False
    meter = PeakMemory(ts.device)
    meter.reset()
    terms = ts.step()
    mem = meter.read()
    mem["freed_memory_released"] = released
    return {"label": spec.label, "memory": mem, "loss": terms["total"], "checkpointed": ts.checkpointed,
            "precision": ts.precision, "checkpoint_levels": ts.checkpoint_levels}


def memory_in_subprocess(spec: StepSpec, *, timeout: Optional[float] = None) -> dict:
    """:func:`measure_step_memory` in a fresh process (nothing else ever allocated there)."""
    return run_worker("hidiff.profiling.train_step", [spec.to_json()], threads=spec.threads, timeout=timeout,
                      mark=RESULT_MARK)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m hidiff.profiling.train_step SPEC_JSON``: the memory of one variant, as one marked line."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m hidiff.profiling.train_step SPEC_JSON", file=sys.stderr)
        return 2
    spec = StepSpec.from_json(args[0])
    options = spec_options(spec)
    kept = keeps_memory(spec, options) and keep_freed_memory()  # before the model, as the trainer
    try:
        result = {**measure_step_memory(spec, options), "freed_memory_kept": bool(kept)}
    except UnsupportedVariant as exc:
        result = {"unsupported": str(exc)}
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
