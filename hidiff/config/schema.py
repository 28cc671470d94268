"""Typed option objects: the whole YAML is validated once, here.

Downstream code reads attributes of these dataclasses, never raw dicts.  Key
names follow BasicSR / the official HI-Diff files (``network_g``, ``path``,
``train``, ``val``, ``datasets``, ``diffusion_schedule``) so official option
files port with small edits; keys that the official code silently ignores are
rejected with an explanation instead of looking functional.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

from hidiff.config.typed import convert, from_dict, to_dict, type_hints
from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean


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


# ------------------------------------------------------------------------- datasets
LOADER_KEYS = {
    "name", "type", "batch_size_per_gpu", "num_worker_per_gpu", "dataset_enlarge_ratio", "prefetch_mode",
    "pin_memory", "persistent_workers", "use_shuffle", "mini_batch_sizes", "iters", "gt_sizes", "protocol",
    "drop_last", "weights",
}


@dataclass
class DatasetOptions:
    """One ``datasets.<phase>`` block: loader settings plus the dataset's own keyword arguments.

    The dataset keywords (``params``) are checked against the registered dataset
    class's signature, so a misspelled ``dataroot_gt`` fails at load time.
    """

    name: str
    type: str
    phase: str = "train"
    batch_size_per_gpu: int = 1
    num_worker_per_gpu: int = 0
    dataset_enlarge_ratio: int = 1
    prefetch_mode: Optional[Literal["cpu", "cuda"]] = None
    pin_memory: bool = False
    persistent_workers: bool = False
    use_shuffle: bool = True
    drop_last: bool = True
    # progressive patch/batch schedule (docs/architecture.md 3.2); all three or none
    mini_batch_sizes: Optional[List[int]] = None
    iters: Optional[List[int]] = None
    gt_sizes: Optional[List[int]] = None
    # evaluation protocol for val/test sets: gopro | realblur | basic | dpdd (default from the name)
    protocol: Optional[str] = None
    # test sets only: per-set weights (network suffix -> file) overriding path.pretrain_network_<x>
    weights: Optional[Dict[str, str]] = None
    params: Dict[str, Any] = field(default_factory=dict)

    # BasicSR dataset keys the official HI-Diff code ignores (docs/quirks.md, quirk 17: its 8 dihedral transforms are always on)
    _retired = {
        "use_hflip": "flips are part of the dataset's geometric_augs option (one of 8 dihedral transforms)",
        "use_rot": "rotations are part of the dataset's geometric_augs option (one of 8 dihedral transforms)",
    }

    @classmethod
    def from_yaml(cls, value: Any, path: str) -> "DatasetOptions":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        phase = path.rsplit(".", 1)[-1].split("_")[0]
        if phase not in ("train", "val", "test"):
            raise ConfigError(f"{path}: dataset keys must start with train, val or test (e.g. val_1, test_2)")
        for key, why in cls._retired.items():
            if key in value:
                raise ConfigError(f"{path}.{key}: {why}")
        loader = {k: v for k, v in value.items() if k in LOADER_KEYS}
        params = {str(k): v for k, v in value.items() if k not in LOADER_KEYS}
        if "phase" in params:
            raise ConfigError(f"{path}.phase: the phase comes from the block's key ('{phase}'); remove it")
        io = params.get("io_backend")
        if isinstance(io, Mapping):  # BasicSR style ``io_backend: {type: disk}``
            params["io_backend"] = io.get("type", "disk")
        hints = type_hints(cls)
        typed = {k: convert(v, hints[k], f"{path}.{k}") for k, v in loader.items() if k in hints}
        for req in ("name", "type"):
            if req not in typed:
                raise ConfigError(f"{path}: missing required key '{req}'")
        obj = cls(phase=phase, params=params, **typed)
        obj.validate(path)
        return obj

    def validate(self, path: str) -> None:
        from hidiff.registry import DATASET_REGISTRY
        from hidiff.utils.kwargs import check_kwargs
        import hidiff.data  # noqa: F401  (registers the dataset classes)

        try:
            cls = DATASET_REGISTRY.get(self.type)
        except Exception as exc:
            raise ConfigError(f"{path}.type: {exc}") from None
        check_kwargs(cls, {**self.params, "phase": self.phase}, path)
        prog = [self.mini_batch_sizes, self.iters, self.gt_sizes]
        if any(p is not None for p in prog):
            if any(p is None for p in prog):
                raise ConfigError(f"{path}: mini_batch_sizes, iters and gt_sizes must be given together")
            if not (len(self.mini_batch_sizes) == len(self.iters) == len(self.gt_sizes)):
                raise ConfigError(f"{path}: mini_batch_sizes, iters and gt_sizes must have equal lengths, got "
                                  f"{len(self.mini_batch_sizes)}, {len(self.iters)}, {len(self.gt_sizes)}")
            gt_size = self.params.get("gt_size")
            if gt_size is not None and max(self.gt_sizes) > gt_size:
                raise ConfigError(f"{path}.gt_sizes: {max(self.gt_sizes)} exceeds gt_size {gt_size}")
            if max(self.mini_batch_sizes) > self.batch_size_per_gpu:
                raise ConfigError(f"{path}.mini_batch_sizes: {max(self.mini_batch_sizes)} exceeds "
                                  f"batch_size_per_gpu {self.batch_size_per_gpu}")
        if self.weights and self.phase == "train":
            raise ConfigError(f"{path}.weights: per-set weights are for val/test sets only")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ConfigError(f"{path}.protocol: expected one of {', '.join(PROTOCOLS)}, got "
                              f"'{self.protocol}'{did_you_mean(self.protocol, PROTOCOLS)}")

    def to_plain(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("params", "phase")}
        out.update(self.params)
        return out


PROTOCOLS = ("gopro", "realblur", "basic", "dpdd")


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

    apply_ldm: bool = False
    schedule: str = "linear"
    timesteps: Optional[int] = None
    linear_start: float = 0.1
    linear_end: float = 0.99
    parameterization: Optional[Literal["eps", "x0"]] = None
    clip_denoised: Optional[bool] = None
    time_encoding: Optional[Literal["plus_one_full", "index_tokens"]] = None
    q_sample_uses_alpha_bar: Optional[bool] = None

    @property
    def implementation(self) -> str:
        return "ldm" if self.apply_ldm else "hidiff_local"

    @property
    def resolved_schedule(self) -> str:
        return "sqrt_linear" if (self.apply_ldm and self.schedule == "linear") else self.schedule

    def validate(self, path: str) -> None:
        from hidiff.diffusion.schedules import SCHEDULES
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{path}.schedule: expected one of {', '.join(SCHEDULES)}, got '{self.schedule}'"
                              f"{did_you_mean(self.schedule, SCHEDULES)}")
        if self.timesteps is not None and self.timesteps < 1:
            raise ConfigError(f"{path}.timesteps: must be >= 1, got {self.timesteps}")

    def build(self):
        """The LatentDDPM these options describe."""
        from hidiff.diffusion import build_diffusion
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
    """

    pretrain: Dict[str, Optional[str]] = field(default_factory=dict)
    strict_load: Dict[str, bool] = field(default_factory=dict)
    param_key: Dict[str, str] = field(default_factory=dict)
    resume_state: Optional[str] = None
    experiments_root: str = "experiments"
    results_root: str = "results"
    stage1: Optional[str] = None
    stage1_iter: Union[int, str] = "latest"
    ignore_resume_networks: List[str] = field(default_factory=list)

    _PER_NET = re.compile(r"^(pretrain_network|strict_load|param_key)_(\w+)$")
    _PLAIN = ("resume_state", "experiments_root", "results_root", "stage1", "stage1_iter", "ignore_resume_networks")

    @classmethod
    def from_yaml(cls, value: Any, path: str) -> "PathOptions":
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        obj = cls()
        for key, v in value.items():
            where = f"{path}.{key}"
            m = cls._PER_NET.match(str(key))
            if m:
                kind, net = m.groups()
                if kind == "pretrain_network":
                    obj.pretrain[net] = convert(v, Optional[str], where)
                elif kind == "strict_load":
                    obj.strict_load[net] = convert(v, bool, where)
                else:
                    obj.param_key[net] = convert(v, str, where)
            elif key in cls._PLAIN:
                hint = {"resume_state": Optional[str], "experiments_root": str, "results_root": str,
                        "stage1": Optional[str], "stage1_iter": Union[int, str],
                        "ignore_resume_networks": List[str]}[key]
                setattr(obj, key, convert(v, hint, where))
            else:
                known = list(cls._PLAIN) + ["pretrain_network_<x>", "strict_load_<x>", "param_key_<x>"]
                raise ConfigError(f"{where}: unknown key{did_you_mean(str(key), known)}; valid keys: "
                                  f"{', '.join(known)}")
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

    enabled: bool = False
    dtype: Literal["bf16", "fp16"] = "bf16"


@dataclass
class TrainOptions:
    """``train``: optimisation of one stage (docs/architecture.md 3.2)."""

    total_iter: int
    optim_total: Optional[Block] = None
    scheduler: Optional[Block] = None
    warmup_iter: int = -1
    pixel_opt: Optional[LossBlock] = None
    pixel_diff_opt: Optional[LossBlock] = None
    perceptual_opt: Optional[LossBlock] = None
    use_grad_clip: bool = True
    # Official value, hard-coded there (Restormer heritage): one global norm over all optimised nets.
    grad_clip_norm: float = 0.01
    ema_decay: float = 0.0
    amp: AmpOptions = field(default_factory=AmpOptions)
    channels_last: bool = False
    compile: bool = False
    grad_accum_steps: int = 1
    max_consecutive_nonfinite: int = 20
    deterministic: bool = False

    _aliases = {"optim_g": "optim_total"}
    _retired = {
        "mixing_augs": "mixup is not implemented by HI-Diff (the official models ignore this block); remove it",
    }

    def validate(self, path: str) -> None:
        if self.total_iter < 1:
            raise ConfigError(f"{path}.total_iter: must be >= 1, got {self.total_iter}")
        if self.grad_accum_steps < 1:
            raise ConfigError(f"{path}.grad_accum_steps: must be >= 1, got {self.grad_accum_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{path}.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.optim_total is not None:
            import torch.optim
            from hidiff.utils.kwargs import check_kwargs
            cls = getattr(torch.optim, self.optim_total.type, None)
            if not isinstance(cls, type):
                names = [n for n in dir(torch.optim) if n[0].isupper() and n != "Optimizer"]
                raise ConfigError(f"{path}.optim_total.type: unknown optimizer '{self.optim_total.type}'"
                                  f"{did_you_mean(self.optim_total.type, names)}")
            check_kwargs(cls, {"params": None, **self.optim_total.kwargs}, f"{path}.optim_total")
        for name in ("pixel_opt", "pixel_diff_opt", "perceptual_opt"):
            blk = getattr(self, name)
            if blk is not None:
                from hidiff.losses import check_loss_block
                check_loss_block(blk, f"{path}.{name}")


# ----------------------------------------------------------------------------- val
@dataclass
class MetricOptions:
    """One ``val.metrics.<name>`` block (validation during training)."""

    type: str
    crop_border: int = 0
    test_y_channel: bool = False
    better: Literal["higher", "lower"] = "higher"


@dataclass
class ValOptions:
    """``val``: validation during training and options of ``test.py``."""

    val_freq: int = 5000
    save_img: bool = False
    suffix: Optional[str] = None
    pbar: bool = False
    window_size: int = 8
    metrics: Dict[str, MetricOptions] = field(default_factory=dict)
    tile: Optional[Dict[str, Any]] = None
    self_ensemble: bool = False
    comparison_grid: bool = False
    max_images: Optional[int] = None
    use_ema: bool = True
    key_metric: Optional[str] = None
    score_input: bool = False      # test.py: also score the blurry input (a baseline row in the reports)

    _retired = {
        # docs/quirks.md, quirk 17: the official code reads this key nowhere, so an official file saying ``true`` never
        # self-ensembled; mapping it onto ours would silently change such a run's numbers
        "selfensemble_testing": "the official code ignores this key; hidiff's x8 self-ensemble is val.self_ensemble",
        "rgb2bgr": "images are always handled as RGB; remove it",
        "use_image": "metrics are always computed on 8-bit images; remove it",
    }

    def validate(self, path: str) -> None:
        if self.val_freq < 1:
            raise ConfigError(f"{path}.val_freq: must be >= 1, got {self.val_freq}")
        if self.window_size < 1:
            raise ConfigError(f"{path}.window_size: must be >= 1, got {self.window_size}")
        if self.tile is not None:
            self.tile_options(path)
        if self.key_metric is not None and self.key_metric not in self.metrics:
            raise ConfigError(f"{path}.key_metric: '{self.key_metric}' is not one of the metrics "
                              f"({', '.join(self.metrics) or 'none'})")

    def tile_options(self, path: str = "val"):
        """The validated TileOptions, or None for whole-image inference."""
        if self.tile is None:
            return None
        from hidiff.inference.tiler import TileOptions
        return TileOptions.from_dict(self.tile, where=f"{path}.tile")


# ------------------------------------------------------------------ logger / dist
@dataclass
class LoggerOptions:
    """``logger``: how often to print, save and how many checkpoints to keep."""

    print_freq: int = 100
    save_checkpoint_freq: int = 5000
    use_tb_logger: bool = True
    keep_last: int = 3
    keep_best: bool = True
    pbar: bool = True

    _retired = {"wandb": "wandb is not supported; use TensorBoard (logger.use_tb_logger)"}


@dataclass
class DistOptions:
    """``dist_params``: process-group settings (the launcher itself is torchrun)."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    port: int = 29500
    find_unused_parameters: bool = False


# -------------------------------------------------------------------------- top
@dataclass
class Options:
    """A whole validated option file."""

    name: str
    model_type: str
    is_train: bool = True
    scale: int = 1
    num_gpu: Union[int, str] = "auto"
    manual_seed: int = 100
    datasets: Dict[str, DatasetOptions] = field(default_factory=dict)
    networks: Dict[str, Block] = field(default_factory=dict)
    diffusion_schedule: Optional[DiffusionOptions] = None
    path: PathOptions = field(default_factory=PathOptions)
    train: Optional[TrainOptions] = None
    val: ValOptions = field(default_factory=ValOptions)
    logger: LoggerOptions = field(default_factory=LoggerOptions)
    dist_params: DistOptions = field(default_factory=DistOptions)
    source: Optional[str] = None

    _TOP = ("name", "model_type", "scale", "num_gpu", "manual_seed", "datasets", "diffusion_schedule", "path",
            "train", "val", "logger", "dist_params", "is_train")
    _NET = re.compile(r"^network_(\w+)$")

    @classmethod
    def from_yaml(cls, data: Any, path: str = "", is_train: bool = True, source: Optional[str] = None) -> "Options":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source or 'options'}: the top level must be a mapping, got {type(data).__name__}")
        plain = {}
        networks: Dict[str, Block] = {}
        for key, value in data.items():
            key = str(key)
            m = cls._NET.match(key)
            if m:
                networks[m.group(1)] = Block.from_yaml(value, key)
            elif key in cls._TOP:
                plain[key] = value
            else:
                raise ConfigError(f"{key}: unknown top-level key{did_you_mean(key, list(cls._TOP) + ['network_g'])}; "
                                  f"valid: {', '.join(cls._TOP)}, network_<x>")
        datasets_raw = plain.pop("datasets", None) or {}
        if not isinstance(datasets_raw, Mapping):
            raise ConfigError(f"datasets: expected a mapping of phase -> dataset block, got {datasets_raw!r}")
        datasets = {str(k): DatasetOptions.from_yaml(v, f"datasets.{k}") for k, v in datasets_raw.items()}
        plain.setdefault("is_train", is_train)
        obj = from_dict(cls, plain, "")
        obj.datasets = datasets
        obj.networks = networks
        obj.source = source
        obj.cross_check()
        return obj

    def cross_check(self) -> None:
        """Checks that involve several sections."""
        from hidiff.archs import ARCH_REGISTRY
        from hidiff.registry import MODEL_REGISTRY
        from hidiff.utils.kwargs import check_kwargs
        import hidiff.models  # noqa: F401  (registers the model classes)

        if not self.networks:
            raise ConfigError("options: no network_<x> block; at least network_g is required")
        for suffix, blk in self.networks.items():
            try:
                cls = ARCH_REGISTRY.get(blk.type)
            except Exception as exc:
                raise ConfigError(f"network_{suffix}.type: {exc}") from None
            check_kwargs(cls, blk.kwargs, f"network_{suffix}")
        try:
            model_cls = MODEL_REGISTRY.get(self.model_type)
        except Exception as exc:
            raise ConfigError(f"model_type: {exc}") from None
        for kind, table in (("pretrain_network", self.path.pretrain), ("strict_load", self.path.strict_load),
                            ("param_key", self.path.param_key)):
            for net in table:
                if net not in self.networks:
                    raise ConfigError(f"path.{kind}_{net}: there is no network_{net} block"
                                      f"{did_you_mean(net, self.networks)}")
        check = getattr(model_cls, "check_options", None)
        if callable(check):
            check(self)
        if self.is_train:
            if self.train is None:
                raise ConfigError("train: a training option file needs a 'train' block")
            if "train" not in self.datasets:
                raise ConfigError("datasets.train: a training option file needs a 'train' dataset")
            tr = self.datasets["train"]
            if tr.iters is not None and sum(tr.iters) != self.train.total_iter:
                raise ConfigError(f"datasets.train.iters: the progressive schedule sums to {sum(tr.iters)} but "
                                  f"train.total_iter is {self.train.total_iter}; they must be equal")
        if isinstance(self.num_gpu, str) and self.num_gpu != "auto":
            raise ConfigError(f"num_gpu: expected an integer or 'auto', got '{self.num_gpu}'")

    def network_suffixes(self) -> List[str]:
        return list(self.networks)

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
