"""What a training run is made of, built in memory: model, optimiser, AMP, EMA, data, metrics.

Nothing here writes to disk, so a start that fails on its inputs (a missing
folder, an unknown metric, weights that do not fit) leaves every file as it was.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

import hidiff
from hidiff.config import config_hash
from hidiff.data.build import build_dataset
from hidiff.data.loader import build_dataloader
from hidiff.data.sampler import ResumableSampler
from hidiff.engine import distributed as D
from hidiff.engine.amp import Amp
from hidiff.engine.checkpoint_store import VerifiedState
from hidiff.engine.ema import ModelEMA
from hidiff.engine.formulation import compiled, prepare_networks
from hidiff.engine.optim import build_optimizer
from hidiff.engine.progressive import ProgressiveSchedule
from hidiff.engine.stage_link import resolve_pretrained
from hidiff.engine.training_state import check_pretrained_kept, pretrained_record
from hidiff.engine.validation import build_metric_fns
from hidiff.errors import ConfigError, DataError, HidiffError
from hidiff.models import build_model
from hidiff.models.base import LOSS_BLOCKS
from hidiff.models.lr_scheduler import build_scheduler
from hidiff.utils.checkpoint import load_network, load_state_into


def agreed(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on every rank; if it failed anywhere, raise everywhere (no rank is left waiting)."""
    result, failure = None, None
    try:
        result = fn()
    except Exception as exc:
        failure = exc
    errors = D.all_gather_objects(None if failure is None else
                                  (isinstance(failure, HidiffError), f"{type(failure).__name__}: {failure}"))
    if failure is not None:
        raise failure
    for rank, err in enumerate(errors):
        if err is not None:
            raise (ConfigError if err[0] else RuntimeError)(f"rank {rank} failed to start: {err[1]}")
    return result


def ignored_on_resume(o) -> set:
    """Networks (``g``, ``le``, ...) that ``path.ignore_resume_networks`` keeps from the checkpoint, EMA included."""
    return {n.removeprefix("network_") for n in o.path.ignore_resume_networks}


def build_model_parts(t, verified: Optional[VerifiedState]) -> None:
    """The stage model on its device (pretrained / resumed weights), optimiser, scheduler, AMP."""
    o, log, topt = t.opt, t.log, t.topt
    model = build_model(o)
    specs = resolve_pretrained(o)
    t.pretrained = pretrained_record(specs)
    if verified is not None:
        check_pretrained_kept(verified, t.pretrained, t.allow_config_change, log)
    for net, spec in specs.items():
        missing, unexpected, shapes = load_network(model.net(net), spec.path, param_key=spec.param_key,
                                                   strict=spec.strict)
        log.info("net_%s initialised from %s (param_key %s)%s", net, spec.path, spec.param_key,
                 "" if spec.strict else f"; missing {len(missing)}, unexpected {len(unexpected)}, "
                                        f"shape-mismatched {len(shapes)} keys skipped")
    if verified is not None:
        ignore = ignored_on_resume(o)
        for name, payload in verified.networks.items():
            if name in ignore:
                log.info("net_%s not restored from the checkpoint (path.ignore_resume_networks)", name)
                continue
            load_state_into(model.net(name), payload["params"], strict=True, source=f"{verified.path} -> net_{name}")
    model.to(t.device)
    prepare_networks(model, topt, log=log)
    t.model = model
    t.params = [p for p in model.trainable.parameters() if p.requires_grad]
    t.optimizer = build_optimizer(t.params, topt.optim_total)
    sched = topt.scheduler.to_block() if topt.scheduler is not None else None
    t.scheduler = build_scheduler(t.optimizer, sched, topt.warmup_iter, topt.total_iter)
    t.amp = Amp(topt.amp.enabled, topt.amp.dtype, t.device, log)


def wrap_model(t, verified: Optional[VerifiedState]) -> None:
    """DDP, ``torch.compile`` and EMA.

    DDP construction is a collective that gives every rank rank 0's weights, so it
    comes only after every rank built its model, and EMA copies the weights after it.
    """
    t.ddp = None
    t.step_module = t.model
    if t.dist.distributed:
        t.ddp = nn.parallel.DistributedDataParallel(
            t.model, device_ids=[t.device.index] if t.device.type == "cuda" else None,
            find_unused_parameters=t.opt.dist_params.find_unused_parameters)
        t.step_module = t.ddp
    t.step_module = compiled(t.step_module, t.topt)
    t.ema = {}
    if t.topt.ema_decay > 0:
        t.ema = {n: ModelEMA(net, t.topt.ema_decay) for n, net in t.model.trainable.items()}
        if verified is not None:
            ignore = ignored_on_resume(t.opt)
            for n, e in t.ema.items():
                payload = verified.networks.get(n, {})
                if n in ignore:
                    t.log.info("net_%s: its EMA restarts from the weights (path.ignore_resume_networks)", n)
                elif "params_ema" in payload:
                    e.load_state_dict(payload["params_ema"])
                else:
                    t.log.warning("net_%s: the checkpoint has no params_ema; EMA restarts from the weights", n)


def batch_length(batch: dict[str, Any]) -> int:
    """How many samples a collated batch holds (its first tensor's leading size)."""
    return next(len(v) for v in batch.values() if torch.is_tensor(v))


class BatchStream:
    """Endless training batches over epochs; knows how far into the current pass it is (for resume)."""

    def __init__(self, loader, sampler, device: torch.device, channels_last: bool) -> None:
        self.loader, self.sampler, self.device, self.channels_last = loader, sampler, device, channels_last
        self.epoch = 0
        self.batches_this_pass = 0
        # samples received, not batches x batch size: a pass's last batch is short with drop_last false
        self.samples_this_pass = 0
        self._iter = None

    def start(self) -> None:
        self.epoch = self.sampler.epoch
        self.sampler.set_epoch(self.epoch)
        self._iter = iter(self.loader)
        self.batches_this_pass = self.samples_this_pass = 0

    def next(self) -> dict[str, Any]:
        empty_passes = 0
        while True:
            try:
                batch = next(self._iter)
                self.batches_this_pass += 1
                self.samples_this_pass += batch_length(batch)
                return batch
            except StopIteration:
                empty_passes = empty_passes + 1 if self.batches_this_pass == 0 else 0
                if empty_passes > 1:
                    raise ConfigError("the training loader yields no batches (dataset smaller than one batch?)")
                self.epoch += 1
                self.sampler.set_epoch(self.epoch)
                self._iter = iter(self.loader)
                self.batches_this_pass = self.samples_this_pass = 0

    def to_device(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=True)
                if self.channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
                out[k] = v
        return out


def build_data(t) -> None:
    """Training loader (resumable sampler, progressive schedule), validation loaders, metric functions."""
    o, d = t.opt, t.dist
    tr = o.datasets["train"]
    t.train_set = build_dataset(tr, o.manual_seed)
    t.sampler = ResumableSampler(len(t.train_set), seed=o.manual_seed, world_size=d.world_size,
                                 rank=d.rank, shuffle=tr.use_shuffle, enlarge_ratio=tr.dataset_enlarge_ratio)
    t.loader = build_dataloader(
        t.train_set, phase="train", batch_size=tr.batch_size_per_gpu, num_workers=tr.num_worker_per_gpu,
        seed=o.manual_seed, rank=d.rank, world_size=d.world_size, pin_memory=tr.pin_memory,
        persistent_workers=tr.persistent_workers, prefetch=tr.prefetch_mode, drop_last=tr.drop_last,
        sampler=t.sampler)
    # A private generator for the loader's worker base seed: creating an iterator
    # must not consume the global torch RNG that the model uses (exact resume).
    inner = t.loader.loader if hasattr(t.loader, "loader") else t.loader
    inner.generator = torch.Generator().manual_seed(o.manual_seed + d.rank)
    t.batches = BatchStream(t.loader, t.sampler, t.device, t.topt.channels_last)
    t.batch_size = tr.batch_size_per_gpu
    t.progressive = None
    if tr.iters is not None:
        t.progressive = ProgressiveSchedule(tr.iters, tr.gt_sizes, tr.mini_batch_sizes, seed=o.manual_seed,
                                            rank=d.rank)
    t.val_sets = {}
    for key, ds in sorted(o.datasets.items()):
        if ds.phase != "val":
            continue
        dataset = build_dataset(ds, o.manual_seed)
        t.val_sets[ds.name] = build_dataloader(dataset, phase="val", batch_size=1,
                                               num_workers=ds.num_worker_per_gpu, seed=o.manual_seed,
                                               rank=d.rank, world_size=d.world_size, limit=o.val.max_images)
    t.metric_fns = {}
    if t.val_sets:
        t.metric_fns = build_metric_fns(o.val.metrics)
        if not t.metric_fns:
            t.log.warning("val: validation sets are configured but val.metrics is empty")


def check_training_images(train_set, name: str, shown: int = 5) -> None:
    """Every training image that cannot give a sample (two sizes in a pair, smaller than the crop), from the
    headers, before the run folder is written: such an image used to stop the run when first drawn, hours in,
    even with ``skip_corrupt`` (which replaces unreadable files only)."""
    scan = getattr(train_set, "size_problems", None)
    problems = scan() if callable(scan) else []
    if problems:
        more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
        raise DataError(f"training set '{name}': {len(problems)} image(s) cannot give a training sample:\n  "
                        + "\n  ".join(problems[:shown]) + more)


def check_first_sample(t) -> None:
    """One forward of the stage model on the first training sample (batch 1, no gradients, every random state
    restored afterwards, so the run is the same with or without it): network blocks that do not fit together,
    or a crop the images cannot give, fail here, before the run folder is written or a previous run archived."""
    check_training_images(t.train_set, t.opt.datasets["train"].name)
    item = t.train_set[0]
    batch = t.batches.to_device({k: v.unsqueeze(0) for k, v in item.items() if torch.is_tensor(v)})
    devices = [t.device.index or 0] if t.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        try:
            terms = t.model(batch)
        except torch.OutOfMemoryError:
            raise ConfigError(f"out of memory in one forward pass of a single training sample "
                              f"(lq {tuple(batch['lq'].shape)}) on {t.device}: use a smaller "
                              f"datasets.train.gt_size or smaller networks") from None
        except (RuntimeError, ValueError) as exc:
            nets = ", ".join(f"network_{n}" for n in t.opt.networks)
            raise ConfigError(f"the networks do not fit together or do not fit the data: a forward pass of the "
                              f"first training sample (lq {tuple(batch['lq'].shape)}, gt "
                              f"{tuple(batch['gt'].shape)}) failed with {type(exc).__name__}: {exc}; check the "
                              f"channel and width keys of {nets}") from None
    check_loss_total(t, terms.get("total") if isinstance(terms, dict) else None)


def check_loss_total(t, total: Any) -> None:
    """The first sample's total loss must be one floating-point number, or the first backward fails (after
    the run folder was written).  A non-finite value is left to the trainer, which skips such steps
    (``train.max_consecutive_nonfinite``), but said at once: it may be the data, the weights or the losses."""
    if not torch.is_tensor(total) or total.numel() != 1 or not total.is_floating_point():
        got = f"a tensor of shape {tuple(total.shape)} ({total.dtype})" if torch.is_tensor(total) \
            else type(total).__name__
        blocks = [f"train.{n}" for n in LOSS_BLOCKS if getattr(t.topt, n, None) is not None]
        raise ConfigError(f"the total training loss of the first training sample is {got}, not one number: "
                          f"every loss block ({', '.join(blocks) or 'the default L1 losses'}) must reduce to "
                          f"a scalar (reduction: mean or sum); nothing was written")
    if not bool(torch.isfinite(total.detach()).all()):
        t.log.warning("the total training loss of the first training sample is %s: such steps are skipped "
                      "(train.max_consecutive_nonfinite); check the data, the pretrained weights and the loss "
                      "blocks", float(total))


def log_setup(t, verified: Optional[VerifiedState], archived, log: logging.Logger) -> None:
    """The run's header in the log: versions, networks, batch arithmetic, data, precision, resume."""
    o, d = t.opt, t.dist
    tr = o.datasets["train"]
    accum = t.topt.grad_accum_steps
    log.info("hidiff %s, torch %s, device %s%s", hidiff.__version__, torch.__version__, t.device,
             f" ({torch.cuda.get_device_name(t.device)})" if t.device.type == "cuda" else "")
    log.info("experiment %s in %s; model %s; config hash %s", o.name, t.exp_dir, o.model_type, config_hash(o)[:12])
    for name, net in t.model.networks().items():
        n = sum(p.numel() for p in net.parameters())
        state = "trainable" if name in t.model.trainable else "frozen"
        log.info("net_%s: %s, %s parameters (%s)", name, type(net).__name__, f"{n:,}", state)
    log.info("world size %d (backend %s); batch per process %d x %d processes x %d accumulation = global "
             "batch %d", d.world_size, d.backend or "none", tr.batch_size_per_gpu, d.world_size, accum,
             tr.batch_size_per_gpu * d.world_size * accum)
    if t.progressive is not None:
        for row in t.progressive.describe():
            log.info("progressive: iterations %d-%d: patch %d, batch %d per process (global %d)", row["from"],
                     row["to"], row["patch"], row["batch"], row["batch"] * d.world_size * accum)
    log.info("training set %s: %d items, %d samples per process per epoch; total_iter %d", tr.name,
             len(t.train_set), t.sampler.num_samples, t.topt.total_iter)
    log.info("precision %s; EMA %s; grad clip %s; channels_last %s; compile %s; CPU threads %d; freed CPU memory "
             "kept for reuse %s", t.amp.name, t.topt.ema_decay or "off",
             t.topt.grad_clip_norm if t.topt.use_grad_clip else "off", t.topt.channels_last, t.topt.compile,
             torch.get_num_threads(), "yes" if t.cpu_memory_kept else "no")
    if archived is not None:
        log.warning("fresh start: the previous run folder was moved to %s", archived)
    if verified is not None:
        log.info("Resuming training from epoch: %d, iter: %d (%s).", t.sampler.epoch, t.start_iter, verified.path)


def stamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S")
