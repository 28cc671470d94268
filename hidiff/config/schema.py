"""Typed option objects: the whole YAML is validated once, here.

Downstream code reads attributes of these dataclasses, never raw dicts.  Key
names follow BasicSR / the official HI-Diff files (``network_g``, ``path``,
``train``, ``val``, ``datasets``, ``diffusion_schedule``) so official option
files port with small edits; keys that the official code silently ignores are
rejected with an explanation instead of looking functional.

Every value is checked for type and range (fields declared with ``spec``), every
component name against its registry, and every problem of a file is reported in
one ConfigError, one line per problem with its key path.  The same declarations
generate the JSON Schema of option files (``hidiff.config.json_schema``).
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Set, Union, get_args

from hidiff.archs.hidiff_unet_arch import Transformer
from hidiff.archs.latent_encoder_arch import LatentEncoder
from hidiff.archs.unet_levels import checkpoint_stages
from hidiff.config import registries
from hidiff.config.typed import MAX_SEED, Problems, check_field, convert, spec, to_dict, type_hints
from hidiff.diffusion import build_diffusion
from hidiff.errors import ConfigError
from hidiff.inference.tiler import TileOptions
from hidiff.utils.suggest import did_you_mean

#: one folder inside a root: not blank, not '.' or '..', no drive, no path separator
FOLDER_NAME_PATTERN = r"^(?=.*\S)(?!\s*\.{1,2}\s*$)(?![A-Za-z]:)[^/\\\x00]+$"


def check_folder_name(value: Any, where: str) -> None:
    """``value`` must name one folder inside a root (see ``FOLDER_NAME_PATTERN``)."""
    if isinstance(value, str) and not re.match(FOLDER_NAME_PATTERN, value):
        raise ConfigError(f"{where}: expected a plain folder name (no '/' or '\\', no drive, not '.' or '..'; "
                          f"it names a folder inside the experiments/results root), got {value!r}")


# --------------------------------------------------------------------------- blocks
@dataclass
class Block:
    """A ``{type: Name, **kwargs}`` block: a network, loss, optimizer, scheduler or metric."""

    type: str
    kwargs: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, value: Any, path: str) -> "Block":
        if not isinstance(value, Mapping) or "type" not in value:
            raise ConfigError(f"{path}: expected a mapping with a 'type' key, got {value!r}")
        if not isinstance(value["type"], str):
            raise ConfigError(f"{path}.type: expected a string, got {value['type']!r}")
        return cls(type=value["type"], kwargs={str(k): v for k, v in value.items() if k != "type"})

    def to_block(self) -> Dict[str, Any]:
        return {"type": self.type, **self.kwargs}

    def to_plain(self) -> Dict[str, Any]:
        return self.to_block()


@dataclass
class LossBlock(Block):
    """A loss: ``{type: L1Loss, loss_weight: 1.0, reduction: mean}``."""


@dataclass
class OptimizerBlock(Block):
    """``train.optim_total``: a ``torch.optim`` class and its options (``{type: AdamW, lr: 2e-4}``)."""


@dataclass
class SchedulerBlock(Block):
    """``train.scheduler``: an iteration-based learning-rate schedule and its options."""


# ------------------------------------------------------------------------- datasets
LOADER_KEYS = {
    "name", "type", "batch_size_per_gpu", "num_worker_per_gpu", "dataset_enlarge_ratio", "prefetch_mode",
    "pin_memory", "persistent_workers", "use_shuffle", "mini_batch_sizes", "iters", "gt_sizes", "protocol",
    "drop_last", "weights",
}
#: loader keys only the training loader reads (a val/test set is read one image at a time, in order): a val/test
#: set may not set them to anything but their defaults
TRAIN_LOADER_KEYS = ("batch_size_per_gpu", "dataset_enlarge_ratio", "prefetch_mode", "pin_memory",
                     "persistent_workers", "use_shuffle", "drop_last", "mini_batch_sizes", "iters", "gt_sizes")


@dataclass
class DatasetOptions:
    """One ``datasets.<phase>`` block: loader settings plus the dataset's own keyword arguments.

    The dataset keywords (``params``) are checked against the registered dataset
    class's signature (names, types, ranges), so a misspelled ``dataroot_gt`` fails
    at load time.  Only ``datasets.train`` is read by the training loader: a
    val/test set may not set its keys (``TRAIN_LOADER_KEYS``) to other values than
    their defaults.
    """

    name: str = spec(doc="name of the set in logs and reports; also its results sub-folder")
    type: str = spec(doc="dataset class", registry="dataset")
    phase: str = "train"
    batch_size_per_gpu: int = spec(1, "samples per process and iteration", ge=1)
    num_worker_per_gpu: int = spec(0, "DataLoader worker processes per process", ge=0)
    dataset_enlarge_ratio: int = spec(1, "repeat the training set this many times per epoch", ge=1)
    prefetch_mode: Optional[Literal["cpu", "cuda"]] = spec(None, "prefetch batches on a thread (cpu) or stream (cuda)")
    pin_memory: bool = spec(False, "pin loader memory")
    persistent_workers: bool = spec(False, "keep loader workers alive between epochs")
    use_shuffle: bool = spec(True, "shuffle the training set")
    drop_last: bool = spec(True, "drop the last incomplete batch")
    mini_batch_sizes: Optional[List[int]] = spec(None, "progressive schedule: batch size per phase", ge=1)
    iters: Optional[List[int]] = spec(None, "progressive schedule: iterations per phase (sum = train.total_iter)",
                                      ge=1)
    gt_sizes: Optional[List[int]] = spec(None, "progressive schedule: crop size per phase", ge=1)
    protocol: Optional[str] = spec(None, "evaluation protocol of a val/test set (default from the name)",
                                   registry="protocol")
    weights: Optional[Dict[str, str]] = spec(None, "test sets only: network suffix -> weight file, overriding "
                                                   "path.pretrain_network_<x>")
    params: Dict[str, Any] = field(default_factory=dict)

    # BasicSR dataset keys the official HI-Diff code ignores (docs/quirks.md, quirk 17: its 8 dihedral transforms are always on)
    _retired = {
        "use_hflip": "flips are part of the dataset's geometric_augs option (one of 8 dihedral transforms)",
        "use_rot": "rotations are part of the dataset's geometric_augs option (one of 8 dihedral transforms)",
    }

    @classmethod
    def from_yaml(cls, value: Any, path: str) -> "DatasetOptions":
        problems = Problems()
        obj = cls.parse(value, path, problems)
        problems.raise_if_any()
        return obj

    @classmethod
    def parse(cls, value: Any, path: str, problems: Problems) -> Optional["DatasetOptions"]:
        """Add every problem of the block to ``problems``; the object, if its loader keys are valid."""
        if not isinstance(value, Mapping):
            problems.add(f"{path}: expected a mapping, got {value!r}")
            return None
        set_key = path.rsplit(".", 1)[-1]
        phase = set_key.split("_")[0]
        if phase not in ("train", "val", "test"):
            problems.add(f"{path}: dataset keys must start with train, val or test (e.g. val_1, test_2)")
            return None
        if phase == "train" and set_key != "train":
            problems.add(f"{path}: training reads one training set, datasets.train; this one would be ignored "
                         f"(val_<x> and test_<x> keys name further evaluation sets)")
            return None
        if phase != "train":  # a saved config.yml lists every key, at its default: those pass
            defaults = {f.name: f.default for f in dataclasses.fields(cls)}
            for k in TRAIN_LOADER_KEYS:
                if k in value and value[k] != defaults[k]:
                    problems.add(f"{path}.{k}: only the training loader reads it (a {phase} set is read one image "
                                 f"at a time, in order), so {value[k]!r} would be ignored; remove it")
        for key, why in cls._retired.items():
            if key in value:
                problems.add(f"{path}.{key}: {why}")
        loader = {k: v for k, v in value.items() if k in LOADER_KEYS}
        params = {str(k): v for k, v in value.items() if k not in LOADER_KEYS and k not in cls._retired}
        if "phase" in params:
            problems.add(f"{path}.phase: the phase comes from the block's key ('{phase}'); remove it")
            del params["phase"]
        io = params.get("io_backend")
        if isinstance(io, Mapping):  # BasicSR style ``io_backend: {type: disk}``
            params["io_backend"] = io.get("type", "disk")
        hints = type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        typed, valid = {}, set()
        for k, v in loader.items():
            with problems.guard():
                typed[k] = convert(v, hints[k], f"{path}.{k}")
                check_field(fields[k], typed[k], f"{path}.{k}")
                if k == "name":
                    check_folder_name(typed[k], f"{path}.name")
                valid.add(k)
        missing = [req for req in ("name", "type") if req not in loader]
        if missing:
            problems.add(f"{path}: missing required key(s) {', '.join(repr(m) for m in missing)}")
        if missing or valid != set(loader):
            return None
        obj = cls(phase=phase, params=params, **typed)
        with problems.guard():
            obj.validate(path)
        return obj

    def validate(self, path: str) -> None:
        problems = Problems()
        with problems.guard():
            self.params = registries.check_kwargs("dataset", registries.lookup("dataset", self.type, f"{path}.type"),
                                                  self.params, path, also=LOADER_KEYS)
        prog = [self.mini_batch_sizes, self.iters, self.gt_sizes]
        if any(p is not None for p in prog):
            if any(p is None for p in prog):
                problems.add(f"{path}: mini_batch_sizes, iters and gt_sizes must be given together")
            elif not (len(self.mini_batch_sizes) == len(self.iters) == len(self.gt_sizes)):
                problems.add(f"{path}: mini_batch_sizes, iters and gt_sizes must have equal lengths, got "
                             f"{len(self.mini_batch_sizes)}, {len(self.iters)}, {len(self.gt_sizes)}")
            else:
                gt_size = self.params.get("gt_size")
                if isinstance(gt_size, int) and self.gt_sizes and max(self.gt_sizes) > gt_size:
                    problems.add(f"{path}.gt_sizes: {max(self.gt_sizes)} exceeds gt_size {gt_size}")
                if self.mini_batch_sizes and max(self.mini_batch_sizes) > self.batch_size_per_gpu:
                    problems.add(f"{path}.mini_batch_sizes: {max(self.mini_batch_sizes)} exceeds "
                                 f"batch_size_per_gpu {self.batch_size_per_gpu}")
        if self.weights and self.phase == "train":
            problems.add(f"{path}.weights: per-set weights are for val/test sets only")
        problems.raise_if_any()

    def to_plain(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("params", "phase")}
        out.update(self.params)
        return out


# ------------------------------------------------------------------------ diffusion
@dataclass
class DiffusionOptions:
    """``diffusion_schedule``: the latent DDPM of stage 2 (docs/architecture.md 1.5).

    ``apply_ldm`` picks the official implementation: false = the local GoPro path
    (eps-prediction, clamp, true-linear betas), true = the LDM x0-prediction path.
    The official files say ``schedule: linear`` for both, but the LDM path means a
    sqrt-space linear ramp (docs/quirks.md, quirk 9); ``schedule: linear`` with ``apply_ldm: true``
    is therefore read as ``sqrt_linear``.  The remaining keys override single
    quirks of the chosen implementation (null keeps the official value); so
    does ``timesteps``: left out, it is the implementation's official T (8 for
    the local path, 16 for the LDM path).
    """

    apply_ldm: bool = spec(False, "false: the local eps-prediction path; true: the LDM x0-prediction path")
    schedule: Literal["linear", "sqrt_linear", "cosine"] = spec(
        "linear", "beta schedule ('linear' with apply_ldm true means sqrt_linear)")
    timesteps: Optional[int] = spec(None, "diffusion steps T (null: the implementation's official T)", ge=1)
    linear_start: float = spec(0.1, "first beta of the linear schedules", gt=0, lt=1)
    linear_end: float = spec(0.99, "last beta of the linear schedules", gt=0, lt=1)
    parameterization: Optional[Literal["eps", "x0"]] = spec(None, "what the denoiser predicts (null: official)")
    clip_denoised: Optional[bool] = spec(None, "clamp the predicted x0 (null: official)")
    time_encoding: Optional[Literal["plus_one_full", "index_tokens"]] = spec(
        None, "how the step index reaches the denoiser (null: official)")
    q_sample_uses_alpha_bar: Optional[bool] = spec(None, "forward noising with alpha-bar (null: official)")

    def validate(self, path: str) -> None:
        if self.resolved_schedule != "cosine" and self.linear_start > self.linear_end:
            raise ConfigError(f"{path}.linear_start: {self.linear_start} is above linear_end {self.linear_end}; "
                              f"the betas (the noise added per step) would fall instead of rise")

    @property
    def implementation(self) -> str:
        return "ldm" if self.apply_ldm else "hidiff_local"

    @property
    def resolved_schedule(self) -> str:
        return "sqrt_linear" if (self.apply_ldm and self.schedule == "linear") else self.schedule

    def build(self):
        """The LatentDDPM these options describe."""
        return build_diffusion(self.implementation, timesteps=self.timesteps, schedule=self.resolved_schedule,
                               linear_start=self.linear_start, linear_end=self.linear_end,
                               parameterization=self.parameterization, clip_denoised=self.clip_denoised,
                               time_encoding=self.time_encoding,
                               q_sample_uses_alpha_bar=self.q_sample_uses_alpha_bar)


# ---------------------------------------------------------------------------- path
@dataclass
class PathOptions:
    """``path``: pretrained weights per network, resume, output roots, the stage-1 link.

    Per-network keys keep BasicSR's names: ``pretrain_network_<x>``,
    ``strict_load_<x>``, ``param_key_<x>``.  ``stage1`` names the stage-1 run a
    stage-2 run starts from: an experiment name (its ``models/`` folder is used)
    or a path to a run folder; ``stage1_iter`` picks ``latest`` or an iteration.
    Training refuses ``latest`` of a stage-1 run stopped before its ``total_iter``
    (hidiff/engine/stage_link.py): naming the iteration starts from it on purpose.
    A leading ``~`` of ``experiments_root``, ``results_root`` or ``resume_state`` is
    expanded at load time.
    """

    pretrain: Dict[str, Optional[str]] = spec(doc="pretrain_network_<x>: weight file network_<x> starts from",
                                              default_factory=dict)
    strict_load: Dict[str, bool] = spec(doc="strict_load_<x>: every state_dict key must match network_<x>",
                                        default_factory=dict)
    param_key: Dict[str, str] = spec(doc="param_key_<x>: the entry of the weight file holding the state_dict",
                                     default_factory=dict)
    resume_state: Optional[str] = spec(None, "training state file to resume from")
    experiments_root: str = spec("experiments", "folder holding one run folder per experiment name")
    results_root: str = spec("results", "folder holding the test results, one folder per name")
    stage1: Optional[str] = spec(None, "stage-2 runs: the stage-1 experiment name or run folder")
    stage1_iter: Union[int, Literal["latest"]] = spec("latest", "which stage-1 checkpoint: 'latest' (of a "
                                                                "finished run) or an iteration", ge=1)
    ignore_resume_networks: List[str] = spec(doc="network suffixes not restored on resume", default_factory=list)

    #: YAML key prefix -> field of the per-network keys
    PER_NETWORK = {"pretrain_network": "pretrain", "strict_load": "strict_load", "param_key": "param_key"}
    _PER_NET = re.compile(r"^(pretrain_network|strict_load|param_key)_(\w+)$")
    _PLAIN = ("resume_state", "experiments_root", "results_root", "stage1", "stage1_iter", "ignore_resume_networks")
    #: a leading ``~`` is expanded here, once, so every reader uses the same place (weight files are expanded
    #: by their readers and kept as written, so the resolved options of existing runs do not change)
    _FILES = ("resume_state", "experiments_root", "results_root")

    @classmethod
    def from_yaml(cls, value: Any, path: str) -> "PathOptions":
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        obj = cls()
        hints = type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        problems = Problems()
        for key, v in value.items():
            where = f"{path}.{key}"
            m = cls._PER_NET.match(str(key))
            with problems.guard():
                if m:
                    kind, net = m.groups()
                    name = cls.PER_NETWORK[kind]
                    getattr(obj, name)[net] = convert(v, get_args(hints[name])[1], where)
                elif key in cls._PLAIN:
                    converted = convert(v, hints[key], where)
                    check_field(fields[key], converted, where)
                    if key in ("experiments_root", "results_root") and not converted.strip():
                        raise ConfigError(f"{where}: expected a folder path, got an empty string")
                    if key in cls._FILES and isinstance(converted, str):
                        converted = os.path.expanduser(converted)
                    setattr(obj, key, converted)
                else:
                    known = list(cls._PLAIN) + ["pretrain_network_<x>", "strict_load_<x>", "param_key_<x>"]
                    raise ConfigError(f"{where}: unknown key{did_you_mean(str(key), known)}; valid keys: "
                                      f"{', '.join(known)}")
        problems.raise_if_any()
        return obj

    def to_plain(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for net, p in self.pretrain.items():
            out[f"pretrain_network_{net}"] = p
        for net, s in self.strict_load.items():
            out[f"strict_load_{net}"] = s
        for net, k in self.param_key.items():
            out[f"param_key_{net}"] = k
        for key in self._PLAIN:
            out[key] = to_dict(getattr(self, key))
        return out


# --------------------------------------------------------------------------- train
@dataclass
class AmpOptions:
    """``train.amp``: mixed precision on CUDA (bf16 needs no GradScaler; fp16 uses one)."""

    enabled: bool = spec(False, "train in mixed precision on CUDA")
    dtype: Literal["bf16", "fp16"] = spec("bf16", "the reduced precision (fp16 uses a GradScaler)")


@dataclass
class TrainOptions:
    """``train``: optimisation of one stage."""

    total_iter: int = spec(doc="iterations of the run", ge=1)
    optim_total: Optional[OptimizerBlock] = spec(None, "the one optimiser over every trained network",
                                                 registry="optimizer")
    scheduler: Optional[SchedulerBlock] = spec(None, "learning-rate schedule (null: constant)", registry="scheduler")
    warmup_iter: int = spec(-1, "linear warm-up iterations (-1: none)", ge=-1)
    pixel_opt: Optional[LossBlock] = spec(None, "loss between output and target", registry="loss")
    pixel_diff_opt: Optional[LossBlock] = spec(None, "stage 2: loss between the generated and the stage-1 prior",
                                               registry="loss")
    perceptual_opt: Optional[LossBlock] = spec(None, "perceptual loss", registry="loss")
    use_grad_clip: bool = spec(True, "clip the global gradient norm")
    # Official value, hard-coded there (Restormer heritage): one global norm over all optimised nets.
    grad_clip_norm: float = spec(0.01, "maximum global gradient norm when use_grad_clip", gt=0)
    ema_decay: float = spec(0.0, "EMA of the weights (0: off)", ge=0, lt=1)
    amp: AmpOptions = spec(doc="mixed precision", default_factory=AmpOptions)
    channels_last: bool = spec(False, "channels-last memory format")
    compile: bool = spec(False, "torch.compile the networks")
    grad_accum_steps: int = spec(1, "micro-batches per optimiser step", ge=1)
    max_consecutive_nonfinite: int = spec(20, "stop after this many skipped non-finite steps in a row (0: never)",
                                          ge=0)
    deterministic: bool = spec(False, "deterministic kernels")
    keep_cpu_memory: bool = spec(True, "on a CPU, malloc keeps freed memory for reuse instead of giving it back to "
                                       "the OS (no page faults at every step; memory stays near its peak)")
    checkpoint_levels: List[Union[int, str]] = spec(
        doc="U-Net levels (1-4, 4 = latent) or stage names whose activations are recomputed in backward "
            "instead of stored (activation checkpointing: less memory, more time; same gradients)",
        default_factory=list)
    recompute_ffn: bool = spec(True, "the fast formulation's feed-forward (GDFN) recomputes its depthwise conv "
                                     "and GELU gate in backward instead of storing them (less memory at about "
                                     "the same speed; the gradients are the same)")
    recompute_branches: bool = spec(False, "the fast formulation's Transformer blocks keep only their matrix "
                                           "products' outputs (1x1 convolutions, batched matmuls) for backward and "
                                           "recompute the rest (LayerNorm, depthwise convs, GELU gate, softmax): "
                                           "about a sixth less step memory for some 7 % more time on a CPU; "
                                           "on an H100 it was slower and larger than checkpointing every stage "
                                           "(use checkpoint_levels there; docs/speed.md); the gradients are the "
                                           "same")

    _aliases = {"optim_g": "optim_total"}
    _retired = {
        "mixing_augs": "mixup is not implemented by HI-Diff (the official models ignore this block); remove it",
    }

    def validate(self, path: str) -> None:
        checkpoint_stages(self.checkpoint_levels, f"{path}.checkpoint_levels")
        if self.scheduler is None:
            return
        cls = registries.lookup("scheduler", self.scheduler.type, f"{path}.scheduler.type")
        periods = self.scheduler.kwargs.get("periods")
        weights = self.scheduler.kwargs.get("restart_weights")
        if isinstance(periods, list) and isinstance(weights, list) and len(weights) != len(periods):
            raise ConfigError(f"{path}.scheduler.restart_weights: {len(weights)} weight(s) for {len(periods)} "
                              f"period(s); give one weight per period")
        registries.try_scheduler(cls, self.scheduler.kwargs, f"{path}.scheduler")
        if hasattr(cls, "total") and isinstance(periods, list) and sum(periods) < self.total_iter:
            raise ConfigError(f"{path}.scheduler.periods: the periods sum to {sum(periods)} but "
                              f"{path}.total_iter is {self.total_iter}; make the periods cover the whole run")


# ----------------------------------------------------------------------------- val
@dataclass
class MetricOptions:
    """One ``val.metrics.<name>`` block (validation during training)."""

    type: str = spec(doc="metric variant (BasicSR's calculate_psnr / calculate_ssim are accepted)",
                     registry="metric")
    crop_border: int = spec(0, "pixels cut off every edge before scoring", ge=0)
    test_y_channel: bool = spec(False, "score the Y channel only")
    better: Optional[Literal["higher", "lower"]] = spec(
        None, "which direction is better (default: the metric's own: lower for mae and lpips_*, higher otherwise)")

    def validate(self, path: str) -> None:
        self.type = registries.lookup_canonical("metric", self.type)
        if self.better is None:
            self.better = getattr(registries.lookup("metric", self.type, f"{path}.type"), "better", "higher")


class TileSetting(dict):
    """``val.tile``: the TileOptions keys as a mapping; ``false``, like null, means whole-image inference."""

    @classmethod
    def from_yaml(cls, value: Any, path: str) -> Optional[Dict[str, Any]]:
        if value is None or value is False:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping such as {{size: 256, overlap: 32}}, or null or false "
                              f"for whole-image inference, got {value!r}")
        return {str(k): v for k, v in value.items()}


@dataclass
class ValOptions:
    """``val``: validation during training and options of ``test.py``."""

    val_freq: int = spec(5000, "validate every this many iterations", ge=1)
    save_img: bool = spec(False, "write the restored images")
    suffix: Optional[str] = spec(None, "suffix of written image names")
    pbar: bool = spec(False, "show a progress bar")
    window_size: int = spec(8, "pad images to a multiple of this for whole-image inference", ge=1)
    metrics: Dict[str, MetricOptions] = spec(doc="metric name -> metric block", default_factory=dict)
    tile: Optional[TileSetting] = spec(None, "overlapping-window inference (null or false: whole image)")
    self_ensemble: bool = spec(False, "x8 dihedral self-ensemble (refused on dual-pixel sets)")
    comparison_grid: bool = spec(False, "write a blurry | restored | sharp picture")
    max_images: Optional[int] = spec(None, "validate on at most this many images per set", ge=1)
    use_ema: bool = spec(True, "validate/test the EMA weights when there are any")
    key_metric: Optional[str] = spec(None, "the metric that picks the best checkpoint (one of metrics)")
    score_input: bool = spec(False, "test.py: also score the blurry input (a baseline row in the reports)")

    _retired = {
        # the official code reads this key nowhere, so an official file saying ``true`` never
        # self-ensembled; mapping it onto ours would silently change such a run's numbers
        "selfensemble_testing": "the official code ignores this key; hidiff's x8 self-ensemble is val.self_ensemble",
        "rgb2bgr": "images are always handled as RGB; remove it",
        "use_image": "metrics are always computed on 8-bit images; remove it",
    }

    def validate(self, path: str) -> None:
        problems = Problems()
        if self.tile is not None:
            with problems.guard():
                self.tile_options(path)
        if self.key_metric is not None and self.key_metric not in self.metrics:
            problems.add(f"{path}.key_metric: '{self.key_metric}' is not one of the metrics "
                         f"({', '.join(self.metrics) or 'none'}){did_you_mean(self.key_metric, self.metrics)}")
        problems.raise_if_any()

    def tile_options(self, path: str = "val"):
        """The validated TileOptions, or None for whole-image inference."""
        if self.tile is None:
            return None
        return TileOptions.from_dict(self.tile, where=f"{path}.tile")


# ------------------------------------------------------------------ logger / dist
@dataclass
class LoggerOptions:
    """``logger``: how often to print, save and how many checkpoints to keep."""

    print_freq: int = spec(100, "log every this many iterations", ge=1)
    save_checkpoint_freq: int = spec(5000, "save a checkpoint every this many iterations", ge=1)
    use_tb_logger: bool = spec(True, "write TensorBoard events")
    keep_last: int = spec(3, "keep this many newest checkpoints (0: all)", ge=0)
    keep_best: bool = spec(True, "also keep the best checkpoint by val.key_metric")
    pbar: bool = spec(True, "show a progress bar")

    _retired = {"wandb": "wandb is not supported; use TensorBoard (logger.use_tb_logger)"}


@dataclass
class DistOptions:
    """``dist_params``: process-group settings (the launcher itself is torchrun)."""

    backend: Literal["auto", "nccl", "gloo"] = spec("auto", "process-group backend (auto: nccl on CUDA, else gloo)")
    port: int = spec(29500, "BasicSR's slurm rendezvous port; unused: torchrun sets the port (--master_port), "
                            "as under BasicSR's own pytorch launcher", ge=1, le=65535)
    find_unused_parameters: bool = spec(False, "DDP find_unused_parameters")


# -------------------------------------------------------------------------- top
@dataclass
class Options:
    """A whole validated option file."""

    name: str = spec(doc="experiment name: the run folder inside path.experiments_root (a plain folder name)")
    model_type: str = spec(doc="the stage model", registry="model")
    is_train: bool = True
    scale: int = spec(1, "upscaling factor: BasicSR's key; deblurring restores at the input's size, so 1", ge=1,
                      le=1)
    num_gpu: Union[int, Literal["auto"]] = spec("auto", "GPUs to use ('auto': all visible)", ge=0)
    manual_seed: int = spec(100, "seed of every random generator", ge=0, le=MAX_SEED)
    datasets: Dict[str, DatasetOptions] = field(default_factory=dict)
    networks: Dict[str, Block] = field(default_factory=dict)
    diffusion_schedule: Optional[DiffusionOptions] = spec(None, "stage 2: the latent DDPM")
    path: PathOptions = spec(doc="weights, resume, output roots and the stage-1 link", default_factory=PathOptions)
    train: Optional[TrainOptions] = spec(None, "optimisation (training files)")
    val: ValOptions = spec(doc="validation and test options", default_factory=ValOptions)
    logger: LoggerOptions = spec(doc="logging and checkpoints", default_factory=LoggerOptions)
    dist_params: DistOptions = spec(doc="distributed training", default_factory=DistOptions)
    source: Optional[str] = None

    _TOP = ("name", "model_type", "scale", "num_gpu", "manual_seed", "datasets", "diffusion_schedule", "path",
            "train", "val", "logger", "dist_params", "is_train")
    _NET = re.compile(r"^network_(\w+)$")
    #: dataset keys: train, or val/test optionally with ``_<suffix>``
    DATASET_KEY = r"^(train|(val|test)(_\w+)?)$"

    @classmethod
    def from_yaml(cls, data: Any, path: str = "", is_train: bool = True, source: Optional[str] = None) -> "Options":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source or 'options'}: the top level must be a mapping, got {type(data).__name__}")
        problems = Problems()
        failed: Set[str] = set()
        networks: Dict[str, Block] = {}
        plain: Dict[str, Any] = {}
        for key, value in data.items():
            key = str(key)
            m = cls._NET.match(key)
            if m:
                known = False
                with problems.guard():
                    blk = Block.from_yaml(value, key)
                    component = registries.lookup("arch", blk.type, f"{key}.type")
                    networks[m.group(1)] = blk
                    known = True
                    blk.kwargs = registries.check_kwargs("arch", component, blk.kwargs, key)
                if not known:
                    failed.add("networks")
            elif key in cls._TOP:
                plain[key] = value
            else:
                problems.add(f"{key}: unknown top-level key{did_you_mean(key, list(cls._TOP) + ['network_g'])}; "
                             f"valid: {', '.join(cls._TOP)}, network_<x>")
        datasets: Dict[str, DatasetOptions] = {}
        datasets_raw = plain.pop("datasets", None) or {}
        if not isinstance(datasets_raw, Mapping):
            problems.add(f"datasets: expected a mapping of phase -> dataset block, got {datasets_raw!r}")
            failed.add("datasets")
        else:
            for k, v in datasets_raw.items():
                ds = DatasetOptions.parse(v, f"datasets.{k}", problems)
                if ds is None:
                    failed.add("datasets")
                else:
                    datasets[str(k)] = ds
        if "is_train" in plain:     # BasicSR files may carry it; the command decides
            with problems.guard():
                given = convert(plain.pop("is_train"), bool, "is_train")
                if given != is_train:
                    problems.add(f"is_train: {given} contradicts the command, which "
                                 f"{'trains' if is_train else 'tests'}; the command sets it: remove the key")
        plain["is_train"] = is_train
        hints = type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        typed: Dict[str, Any] = {}
        for key, value in plain.items():
            with problems.guard():
                failed.add(key)
                typed[key] = convert(value, hints[key], key)
                check_field(fields[key], typed[key], key)
                if key == "name":
                    check_folder_name(typed[key], "name")
                failed.discard(key)
        missing = [k for k in ("name", "model_type") if k not in plain]
        if missing:
            problems.add(f"options: missing required key(s): {', '.join(missing)}")
        if "name" not in typed or "model_type" not in typed:
            problems.raise_if_any()
        typed = {k: v for k, v in typed.items() if k not in failed or k in ("name", "model_type")}
        obj = cls(**typed)
        obj.datasets = datasets
        obj.networks = networks
        obj.source = source
        with problems.guard():
            obj.cross_check(failed)
        problems.raise_if_any()
        obj._given = (copy.deepcopy(dict(data)), obj.to_dict())
        return obj

    def as_given(self) -> Dict[str, Any]:
        """The mapping these options were read from (file and overrides, before defaults were filled in): what a
        test of a run's weights merges with the run's recorded settings, as hidiff-test merges the file.  The
        resolved options (``to_dict``) where they were built otherwise or changed after loading."""
        given = getattr(self, "_given", None)
        current = self.to_dict()
        if given is None or given[1] != current:
            return current
        return copy.deepcopy(given[0])

    def cross_check(self, failed: Set[str] = frozenset()) -> None:
        """Checks that involve several sections (those whose sections failed to load are skipped)."""
        problems = Problems()

        def ok(*sections: str) -> bool:
            return not failed.intersection(sections)

        if ok("networks") and not self.networks:
            problems.add("options: no network_<x> block; at least network_g is required")
        model_cls = registries.lookup("model", self.model_type, "model_type") if ok("model_type") else None
        if ok("path", "networks"):
            for kind, table in (("pretrain_network", self.path.pretrain), ("strict_load", self.path.strict_load),
                                ("param_key", self.path.param_key)):
                for net in table:
                    if net not in self.networks:
                        problems.add(f"path.{kind}_{net}: there is no network_{net} block"
                                     f"{did_you_mean(net, self.networks)}")
            for net in (n.removeprefix("network_") for n in self.path.ignore_resume_networks):
                if net not in self.networks:
                    problems.add(f"path.ignore_resume_networks: there is no network_{net} block"
                                 f"{did_you_mean(net, self.networks)}")
        if ok("datasets"):
            named: Dict[str, str] = {}
            for key, ds in self.datasets.items():
                if ds.phase == "train":
                    continue
                other = named.setdefault(ds.name.casefold(), key)
                if other != key:
                    problems.add(f"datasets.{key}.name: '{ds.name}' is also the name of datasets.{other}; each "
                                 f"val/test set needs its own name (it names the set's results folder and its "
                                 f"row in reports, where one would replace the other)")
        if ok("datasets", "networks"):
            for key, ds in self.datasets.items():
                for net in ds.weights or {}:
                    if net not in self.networks:
                        problems.add(f"datasets.{key}.weights.{net}: there is no network_{net} block"
                                     f"{did_you_mean(net, self.networks)}")
        built = model_networks(model_cls)
        if built is not None and ok("networks"):
            for net in self.networks:
                if net not in built:
                    problems.add(f"network_{net}: model_type {self.model_type} builds no network_{net} (it builds "
                                 f"{', '.join('network_' + n for n in built)}), so this block would be ignored; "
                                 f"remove it")
        check = getattr(model_cls, "check_options", None)
        if callable(check) and ok("networks", "diffusion_schedule", "is_train"):
            with problems.guard():
                check(self)
        if self.is_train and ok("is_train"):
            if self.train is None and ok("train"):
                problems.add("train: a training option file needs a 'train' block")
            if "train" not in self.datasets and ok("datasets"):
                problems.add("datasets.train: a training option file needs a 'train' dataset")
            if self.train is not None and ok("train"):
                if self.train.optim_total is None:
                    problems.add("train.optim_total: a training file needs an optimiser (e.g. {type: AdamW, "
                                 "lr: 2.0e-4}; BasicSR's optim_g is read as optim_total)")
                if self.train.warmup_iter >= self.train.total_iter:
                    problems.add(f"train.warmup_iter: {self.train.warmup_iter} is not below train.total_iter "
                                 f"{self.train.total_iter}; the run would end while still warming up")
            tr = self.datasets.get("train")
            if tr is not None and tr.iters is not None and self.train is not None \
                    and sum(tr.iters) != self.train.total_iter:
                problems.add(f"datasets.train.iters: the progressive schedule sums to {sum(tr.iters)} but "
                             f"train.total_iter is {self.train.total_iter}; they must be equal")
        if ok("networks"):
            self._check_sizes(problems, datasets_ok=ok("datasets"), val_ok=ok("val"))
        problems.raise_if_any()

    def _check_sizes(self, problems: Problems, datasets_ok: bool, val_ok: bool) -> None:
        """Training crops and the validation padding must be sizes every network can downsample, and
        ``val.tile.size`` a multiple of ``val.window_size``, as the tiler requires at run time."""
        tile_size = (self.val.tile or {}).get("size") if val_ok else None
        window = self.val.window_size if val_ok else 1
        tile_ok = not (isinstance(tile_size, int) and not isinstance(tile_size, bool) and window > 1
                       and tile_size % window)
        if not tile_ok:
            below, above = tile_size // window * window, (tile_size // window + 1) * window
            problems.add(f"val.tile.size: {tile_size} is not a multiple of {window} (val.window_size, the size "
                         f"divisor of tiled inference); use {below or above} or {above}, or change "
                         f"val.window_size")
        multiple, why = size_multiple(self.networks)
        if multiple == 1:
            return
        if val_ok and self.val.window_size % multiple:
            problems.add(f"val.window_size: {self.val.window_size} is not a multiple of {multiple} ({why}); "
                         f"images are padded to it before entering the network")
        sizes = [("val.tile.size", tile_size)] if val_ok and tile_ok else []
        train = self.datasets.get("train") if datasets_ok else None
        if train is not None:
            sizes += [("datasets.train.gt_size", train.params.get("gt_size"))]
            sizes += [(f"datasets.train.gt_sizes[{i}]", s) for i, s in enumerate(train.gt_sizes or [])]
        for key, size in sizes:
            if isinstance(size, int) and not isinstance(size, bool) and size % multiple:
                below, above = size // multiple * multiple, (size // multiple + 1) * multiple
                problems.add(f"{key}: {size} is not a multiple of {multiple} ({why}); use {below or above} or "
                             f"{above}")

    def to_dict(self) -> Dict[str, Any]:
        """The resolved options as plain data (what is saved into the run folder)."""
        out: Dict[str, Any] = {"name": self.name, "model_type": self.model_type, "scale": self.scale,
                               "num_gpu": self.num_gpu, "manual_seed": self.manual_seed}
        for suffix, blk in self.networks.items():
            out[f"network_{suffix}"] = blk.to_block()
        if self.diffusion_schedule is not None:
            out["diffusion_schedule"] = to_dict(self.diffusion_schedule)
        out["datasets"] = {k: d.to_plain() for k, d in self.datasets.items()}
        out["path"] = self.path.to_plain()
        if self.train is not None:
            out["train"] = to_dict(self.train)
        out["val"] = to_dict(self.val)
        out["logger"] = to_dict(self.logger)
        out["dist_params"] = to_dict(self.dist_params)
        return out


def model_networks(model_cls: Any) -> Optional[List[str]]:
    """The network suffixes a stage model builds: its required ones and its constructor's ``net_<x>``
    arguments (stage 2's optional ``net_le``); None where that cannot be read."""
    if model_cls is None:
        return None
    try:
        params = inspect.signature(model_cls).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    names = list(getattr(model_cls, "required_networks", ()))
    names += [n[4:] for n in params if n.startswith("net_") and n[4:] not in names]
    return names or None


def size_multiple(networks: Mapping[str, Block]) -> tuple:
    """``(m, reason)``: image sides the networks take whole must be multiples of ``m`` (1: any size).

    The HI-Diff U-Net halves the resolution three times (multiples of 8); the
    latent encoders start with a 4x pixel-unshuffle (multiples of 4); Swintormer
    pads its input itself.
    """
    multiple, reasons = 1, []
    for suffix, blk in networks.items():
        cls = registries.lookup("arch", blk.type, f"network_{suffix}.type")
        need = 8 if issubclass(cls, Transformer) else 4 if issubclass(cls, LatentEncoder) else 1
        if need > 1:
            multiple = math.lcm(multiple, need)
            reasons.append(f"network_{suffix} {blk.type} needs multiples of {need}")
    return multiple, "; ".join(reasons)
