"""The generic training loop: one stage model, any device, any world size.

The trainer knows *how* to train (devices, AMP, DDP, gradient accumulation,
clipping, EMA, progressive batches, checkpoints, resume, logging, validation);
the stage model (``hidiff.models``) knows *what* is trained.  One iteration =
``grad_accum_steps`` loader batches per process, one optimiser step.  The
learning rate, the progressive schedule and the checkpoint/validation cadence
are functions of the iteration number only, so they are the same for any world
size; the YAML batch is per process (BasicSR), and the log states the global
batch = batch x world size x accumulation.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from hidiff.data.build import build_dataset
from hidiff.engine import distributed as D
from hidiff.engine.amp import Amp
from hidiff.engine.checkpoint import cpu_state_dict, load_network, load_state_into
from hidiff.engine.checkpoint_store import CheckpointStore, VerifiedState
from hidiff.engine.ema import ModelEMA
from hidiff.engine.logging import ProgressBar, TensorBoard, close_logger, setup_logger, train_line
from hidiff.engine.lr_scheduler import build_scheduler
from hidiff.engine.nonfinite import NonFiniteGuard
from hidiff.engine.optim import build_optimizer
from hidiff.engine.progressive import ProgressiveSchedule
from hidiff.engine.seeding import capture_rng_state, restore_rng_state, seed_everything
from hidiff.errors import CheckpointError, ConfigError

#: how many validation images per set go to TensorBoard
TB_IMAGES_PER_SET = 2


@dataclass
class TrainResult:
    """What a finished run reports back (also handy in tests)."""

    experiment_dir: Path
    start_iter: int
    last_iter: int
    skipped_steps: int
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_validation: dict[str, dict[str, float]] = field(default_factory=dict)


def _inner_loader(loader):
    return loader.loader if hasattr(loader, "loader") else loader


class Trainer:
    """Train ``options`` (a validated :class:`hidiff.config.Options`).

    Args:
        launcher: 'auto' (torchrun env vars if present), 'none' or 'pytorch'.
        resume: None/'none' (fresh start; an existing run folder is archived),
            'auto' (the newest complete checkpoint of this experiment, else fresh)
            or a path to a ``training_states/<iter>.state`` file.  Default:
            ``path.resume_state`` of the options.
        allow_config_change: resume even if the resolved options differ from the
            checkpoint's (the difference is logged).
        stop_after: train at most this many iterations in this session, save a
            checkpoint and return (time-limited jobs: run again with resume='auto').
    """

    def __init__(self, options, *, launcher: str = "auto", resume: Optional[str] = None,
                 allow_config_change: bool = False, stop_after: Optional[int] = None) -> None:
        if options.train is None:
            raise ConfigError(f"{options.source or 'options'}: no 'train' block; this is not a training file")
        self.opt = options
        self.topt = options.train
        self.launcher = launcher
        self.resume_arg = resume if resume is not None else (options.path.resume_state or "none")
        self.allow_config_change = allow_config_change
        if stop_after is not None and stop_after < 1:
            raise ConfigError(f"--stop-after: expected a positive number of iterations, got {stop_after}")
        self.stop_after = stop_after
        self.log = logging.getLogger("hidiff")
        self._own_group = False
        self.tb = TensorBoard(None)
        self.pbar: Optional[ProgressBar] = None
        self._archived: Optional[Path] = None

    # ================================================================== public
    def fit(self) -> TrainResult:
        """Set everything up, train to ``total_iter``, save and validate at the end."""
        try:
            self._setup()
            self._loop()
            return self._finish()
        finally:
            self._teardown()

    # =================================================================== setup
    def _setup(self) -> None:
        o = self.opt
        if self.topt.deterministic:  # before any CUDA context exists
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not self.topt.deterministic
        self._own_group = not D.is_dist()
        backend = None if o.dist_params.backend == "auto" else o.dist_params.backend
        self.dist = D.init_distributed(self.launcher, o.num_gpu, backend)
        self._own_group = self._own_group and D.is_dist()
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        self.exp_dir = Path(o.path.experiments_root) / o.name
        self.store = CheckpointStore(self.exp_dir, self.log)
        setup_logger(None, self.dist.rank)

        verified = self._resolve_resume()
        stamp = time.strftime("%Y%m%d_%H%M%S")
        if self.is_main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            self.store.remove_stale_temp_files()
        setup_logger(self.exp_dir / f"train_{o.name}_{stamp}.log" if self.is_main else None, self.dist.rank)
        if self.is_main:
            from hidiff.config import save_resolved
            save_resolved(o, self.exp_dir / "config.yml")
            if o.logger.use_tb_logger:
                self.tb = TensorBoard(self.exp_dir / "tb_logger")

        seed_everything(o.manual_seed + self.dist.rank)

        self._build_model(verified)
        self._build_data()
        self.guard = NonFiniteGuard(self.topt.max_consecutive_nonfinite)
        self.start_iter, self.best = 0, {}
        self._rank_state = None
        if verified is not None:
            self._load_training_state(verified)
        self._log_setup(verified)

    def _resolve_resume(self) -> Optional[VerifiedState]:
        """Rank 0 picks the state (or archives an old run on a fresh start); every rank verifies it."""
        arg = str(self.resume_arg)
        choice: Optional[str] = None
        error: Optional[str] = None
        if self.is_main:
            try:
                if arg == "auto":
                    self.store.remove_stale_temp_files()
                    v = self.store.latest_valid()
                    choice = str(v.path) if v is not None else None
                    if v is None:
                        self.log.info("--resume auto: no complete checkpoint in %s; starting from scratch",
                                      self.store.states)
                elif arg not in ("none", "None", ""):
                    choice = arg
                if choice is None and self.exp_dir.is_dir() and any(self.exp_dir.iterdir()):
                    stem = f"{self.exp_dir.name}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
                    archived, n = self.exp_dir.with_name(stem), 1
                    while archived.exists():
                        archived, n = self.exp_dir.with_name(f"{stem}_{n}"), n + 1
                    self.exp_dir.rename(archived)
                    self._archived = archived
            except Exception as exc:  # shared with the other ranks below, then raised everywhere
                error = f"{type(exc).__name__}: {exc}"
        error, choice = D.broadcast_object((error, choice))
        if error is not None:
            raise CheckpointError(f"resolving --resume {arg}: {error}")
        if choice is None:
            return None
        path = Path(choice)
        if not path.is_file():
            raise CheckpointError(f"--resume: state file not found: {path}")
        return CheckpointStore(path.parent.parent, self.log).verify(path)

    def _build_model(self, verified: Optional[VerifiedState]) -> None:
        from hidiff.models import build_model
        from hidiff.models.stage_link import resolve_pretrained

        o, log = self.opt, self.log
        model = build_model(o)
        for net, spec in resolve_pretrained(o).items():
            missing, unexpected, shapes = load_network(model.net(net), spec.path, param_key=spec.param_key,
                                                       strict=spec.strict)
            log.info("net_%s initialised from %s (param_key %s)%s", net, spec.path, spec.param_key,
                     "" if spec.strict else f"; missing {len(missing)}, unexpected {len(unexpected)}, "
                                            f"shape-mismatched {len(shapes)} keys skipped")
        if verified is not None:
            ignore = {n.removeprefix("network_") for n in o.path.ignore_resume_networks}
            for name, payload in verified.networks.items():
                if name in ignore:
                    log.info("net_%s not restored from the checkpoint (path.ignore_resume_networks)", name)
                    continue
                load_state_into(model.net(name), payload["params"], strict=True,
                                source=f"{verified.path} -> net_{name}")
        model.to(self.device)
        if self.topt.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.params = [p for p in model.trainable.parameters() if p.requires_grad]
        self.ddp: Optional[nn.parallel.DistributedDataParallel] = None
        self.step_module: nn.Module = model
        if self.dist.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=o.dist_params.find_unused_parameters)
            self.step_module = self.ddp
        if self.topt.compile:
            self.step_module = torch.compile(self.step_module)
        self.ema: dict[str, ModelEMA] = {}
        if self.topt.ema_decay > 0:
            self.ema = {n: ModelEMA(net, self.topt.ema_decay) for n, net in model.trainable.items()}
            if verified is not None:
                for n, e in self.ema.items():
                    payload = verified.networks.get(n, {})
                    if "params_ema" in payload:
                        e.load_state_dict(payload["params_ema"])
                    else:
                        log.warning("net_%s: the checkpoint has no params_ema; EMA restarts from the weights", n)
        self.optimizer = build_optimizer(self.params, self.topt.optim_total)
        sched = self.topt.scheduler.to_block() if self.topt.scheduler is not None else None
        self.scheduler = build_scheduler(self.optimizer, sched, self.topt.warmup_iter, self.topt.total_iter)
        self.amp = Amp(self.topt.amp.enabled, self.topt.amp.dtype, self.device, log)

    def _build_data(self) -> None:
        from hidiff.data.loader import build_dataloader
        from hidiff.data.sampler import ResumableSampler

        o, d = self.opt, self.dist
        tr = o.datasets["train"]
        self.train_set = build_dataset(tr, o.manual_seed)
        self.sampler = ResumableSampler(len(self.train_set), seed=o.manual_seed, world_size=d.world_size,
                                        rank=d.rank, shuffle=tr.use_shuffle, enlarge_ratio=tr.dataset_enlarge_ratio)
        self.loader = build_dataloader(
            self.train_set, phase="train", batch_size=tr.batch_size_per_gpu, num_workers=tr.num_worker_per_gpu,
            seed=o.manual_seed, rank=d.rank, world_size=d.world_size, pin_memory=tr.pin_memory,
            persistent_workers=tr.persistent_workers, prefetch=tr.prefetch_mode, drop_last=tr.drop_last,
            sampler=self.sampler)
        # A private generator for the loader's worker base seed: creating an iterator
        # must not consume the global torch RNG that the model uses (exact resume).
        _inner_loader(self.loader).generator = torch.Generator().manual_seed(o.manual_seed + d.rank)
        self.batch_size = tr.batch_size_per_gpu
        self.progressive = None
        if tr.iters is not None:
            self.progressive = ProgressiveSchedule(tr.iters, tr.gt_sizes, tr.mini_batch_sizes, seed=o.manual_seed,
                                                   rank=d.rank)
        self.val_sets: dict[str, Any] = {}
        for key, ds in sorted(o.datasets.items()):
            if ds.phase != "val":
                continue
            dataset = build_dataset(ds, o.manual_seed)
            self.val_sets[ds.name] = build_dataloader(dataset, phase="val", batch_size=1,
                                                      num_workers=ds.num_worker_per_gpu, seed=o.manual_seed,
                                                      rank=d.rank, world_size=d.world_size)
        self.metric_fns = {}
        if self.val_sets:
            from hidiff.engine.validation import build_metric_fns
            self.metric_fns = build_metric_fns(o.val.metrics)
            if not self.metric_fns:
                self.log.warning("val: validation sets are configured but val.metrics is empty")

    def _load_training_state(self, v: VerifiedState) -> None:
        from hidiff.config import config_diff, config_hash

        st, o, log = v.state, self.opt, self.log
        if st.get("config_hash") != config_hash(o):
            diff = "\n".join(config_diff(st.get("config", {}), o.to_dict())) or "(no difference in the saved dump)"
            if not self.allow_config_change:
                raise ConfigError(f"--resume {v.path}: the options differ from those the checkpoint was trained "
                                  f"with:\n{diff}\nrun with --allow-config-change to resume anyway")
            log.warning("resuming with changed options (--allow-config-change):\n%s", diff)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.amp.load_state_dict(st.get("scaler") or {})
        self.guard.load_state_dict(st.get("nonfinite", {}))
        self.start_iter = int(st["iter"])
        self.best = dict(st.get("best") or {})
        sampler_state = dict(st["sampler"])
        old_world = int(sampler_state.get("world_size", self.dist.world_size))
        exact = old_world == self.dist.world_size
        if not exact:
            consumed = int(sampler_state["consumed"]) * old_world // self.dist.world_size
            sampler_state.update(world_size=self.dist.world_size, consumed=min(consumed, self.sampler.num_samples))
            log.warning("resume with %d processes instead of %d: the data order and random streams continue "
                        "approximately, not bitwise", self.dist.world_size, old_world)
        self.sampler.load_state_dict(sampler_state)
        ranks = st.get("ranks") or []
        self._rank_state = ranks[self.dist.rank] if exact and self.dist.rank < len(ranks) else None
        if self._rank_state is None:
            seed_everything(o.manual_seed + self.dist.rank + 7919 * self.start_iter)
        elif self.progressive is not None and self._rank_state.get("progressive") is not None:
            self.progressive.load_state_dict(self._rank_state["progressive"])

    def _log_setup(self, verified: Optional[VerifiedState]) -> None:
        o, d, log = self.opt, self.dist, self.log
        tr = o.datasets["train"]
        accum = self.topt.grad_accum_steps
        log.info("hidiff %s, torch %s, device %s%s", _version(), torch.__version__, self.device,
                 f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "")
        log.info("experiment %s in %s; model %s; config hash %s", o.name, self.exp_dir, o.model_type,
                 _hash(o)[:12])
        for name, net in self.model.networks().items():
            n = sum(p.numel() for p in net.parameters())
            state = "trainable" if name in self.model.trainable else "frozen"
            log.info("net_%s: %s, %s parameters (%s)", name, type(net).__name__, f"{n:,}", state)
        log.info("world size %d (backend %s); batch per process %d x %d processes x %d accumulation = global "
                 "batch %d", d.world_size, d.backend or "none", tr.batch_size_per_gpu, d.world_size, accum,
                 tr.batch_size_per_gpu * d.world_size * accum)
        if self.progressive is not None:
            for row in self.progressive.describe():
                log.info("progressive: iterations %d-%d: patch %d, batch %d per process (global %d)", row["from"],
                         row["to"], row["patch"], row["batch"], row["batch"] * d.world_size * accum)
        log.info("training set %s: %d items, %d samples per process per epoch; total_iter %d", tr.name,
                 len(self.train_set), self.sampler.num_samples, self.topt.total_iter)
        log.info("precision %s; EMA %s; grad clip %s; channels_last %s; compile %s", self.amp.name,
                 self.topt.ema_decay or "off", self.topt.grad_clip_norm if self.topt.use_grad_clip else "off",
                 self.topt.channels_last, self.topt.compile)
        if self._archived is not None:
            log.warning("fresh start: the previous run folder was moved to %s", self._archived)
        if verified is not None:
            log.info("Resuming training from epoch: %d, iter: %d (%s).", self.sampler.epoch, self.start_iter,
                     verified.path)

    # ==================================================================== loop
    def _loop(self) -> None:
        o, total = self.opt, self.topt.total_iter
        self.epoch = self.sampler.epoch
        self.sampler.set_epoch(self.epoch)
        self.data_iter = iter(self.loader)
        self.batches_this_pass = 0
        if self._rank_state is not None:  # after the iterator exists: nothing may draw in between
            restore_rng_state(self._rank_state["rng"])
        self.last_validation: dict[str, dict[str, float]] = {}
        window = _Window()
        self.pbar = ProgressBar(total, self.start_iter, o.logger.pbar and self.is_main)
        it = self.start_iter
        end = total if self.stop_after is None else min(total, it + self.stop_after)
        if it >= total:
            self.log.info("the checkpoint is at iteration %d >= total_iter %d: nothing to train", it, total)
        while it < end:
            it += 1
            lrs = self.scheduler.step_to(it)
            t0 = time.perf_counter()
            terms, gnorm, data_s, skipped = self._train_step(it)
            if self.device.type == "cuda" and (it % o.logger.print_freq == 0 or it == total):
                torch.cuda.synchronize(self.device)
            window.add(terms, gnorm, time.perf_counter() - t0, data_s, skipped, self._global_batch(it))
            self.pbar.update(1)
            if it % o.logger.print_freq == 0 or it == total:
                self._log_window(window, it, lrs)
                window = _Window()
            # validate first, so that the checkpoint of this iteration holds its scores
            if self.val_sets and (it % o.val.val_freq == 0 or it == total):
                self._validate(it)
            if it % o.logger.save_checkpoint_freq == 0 or it == total:
                self._save(it)
        if it < total and it > self.start_iter:
            if it % o.logger.save_checkpoint_freq:
                self._save(it)
            self.log.info("stopping at iteration %d of %d (stop_after=%d); continue with --resume auto", it, total,
                          self.stop_after)
        self.last_iter = it

    def _next_batch(self) -> dict[str, Any]:
        empty_passes = 0
        while True:
            try:
                batch = next(self.data_iter)
                self.batches_this_pass += 1
                return batch
            except StopIteration:
                empty_passes = empty_passes + 1 if self.batches_this_pass == 0 else 0
                if empty_passes > 1:
                    raise ConfigError("the training loader yields no batches (dataset smaller than one batch?)")
                self.epoch += 1
                self.sampler.set_epoch(self.epoch)
                self.data_iter = iter(self.loader)
                self.batches_this_pass = 0

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=True)
                if self.topt.channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
                out[k] = v
        return out

    def _train_step(self, it: int) -> tuple[dict[str, Tensor], Tensor, float, bool]:
        accum = self.topt.grad_accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, Tensor] = {}
        data_s = 0.0
        for m in range(accum):
            t = time.perf_counter()
            batch = self._next_batch()
            if self.progressive is not None:
                batch = self.progressive.apply(batch, it)
            batch = self._to_device(batch)
            data_s += time.perf_counter() - t
            sync = self.ddp.no_sync() if (self.ddp is not None and m < accum - 1) else contextlib.nullcontext()
            with sync:
                with self.amp.autocast():
                    terms = self.step_module(batch)
                if "total" not in terms:
                    raise RuntimeError(f"{type(self.model).__name__}.forward must return a 'total' loss term")
                self.amp.backward(terms["total"].float() / accum)
            for k, v in terms.items():
                v = v.detach().float() / accum
                sums[k] = sums[k] + v if k in sums else v
        self.amp.unscale_(self.optimizer)
        gnorm = self._clip()
        # one host sync per step: every rank must agree on skipping (DDP grads are already all-reduced)
        flag = torch.stack([gnorm.float().reshape(())] + [v.reshape(()) for v in sums.values()])
        nonfinite = D.all_reduce_max(~flag.isfinite().all(), self.device) > 0
        detail = "" if not nonfinite else ", ".join(f"{k}={float(v):.4g}" for k, v in sums.items()) + \
            f", grad_norm={float(gnorm):.4g}"
        skip = self.guard.record(not nonfinite, it, detail=detail)
        self.amp.step(self.optimizer, skip)
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            self.log.warning("iteration %d: non-finite loss or gradient, step skipped (%d skipped so far)", it,
                             self.guard.total)
        else:
            for n, e in self.ema.items():
                e.update(self.model.trainable[n])
        return sums, gnorm, data_s, skip

    def _clip(self) -> Tensor:
        if self.topt.use_grad_clip:
            return torch.nn.utils.clip_grad_norm_(self.params, self.topt.grad_clip_norm)
        grads = [p.grad for p in self.params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)

    def _global_batch(self, it: int) -> int:
        per = self.progressive.sizes(it)[1] if self.progressive is not None else self.batch_size
        return per * self.dist.world_size * self.topt.grad_accum_steps

    def _log_window(self, w: "_Window", it: int, lrs: list[float]) -> None:
        stats = D.reduce_mean_dict(w.mean_terms(), self.device) if w.steps else {}
        if not self.is_main:
            return
        iter_s = w.time / max(w.n, 1)
        extra = {"grad_norm": w.mean_gnorm(), "it/s": w.n / max(w.time, 1e-9),
                 "samples/s": w.samples / max(w.time, 1e-9), "data_s": w.data / max(w.n, 1),
                 "skipped": float(self.guard.total)}
        if self.device.type == "cuda":
            extra["gpu_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
            torch.cuda.reset_peak_memory_stats(self.device)
        eta = iter_s * (self.topt.total_iter - it)
        if "total" in stats and self.pbar is not None:
            self.pbar.update(0, loss=f"{stats['total']:.4g}")
        self.log.info(train_line(self.opt.name, self.epoch, it, lrs, eta, iter_s, extra["data_s"],
                                 {**stats, **extra}))
        self.tb.scalars({k: v for k, v in stats.items()}, it, prefix="losses/")
        self.tb.scalars({"lr": lrs[0], **extra}, it, prefix="train/")

    # ============================================================ checkpoints
    def _network_payloads(self) -> dict[str, tuple[dict[str, Tensor], Optional[dict[str, Tensor]]]]:
        nets = self.model.networks()
        return {n: (cpu_state_dict(nets[n]), self.ema[n].state_dict() if n in self.ema else None)
                for n in self.model.save_names}

    def _save(self, it: int) -> None:
        """Write a complete checkpoint set (rank 0); every rank learns whether it worked."""
        from hidiff.config import config_hash

        mine = {"rng": capture_rng_state(),
                "progressive": self.progressive.state_dict() if self.progressive is not None else None}
        ranks = D.all_gather_objects(mine)
        error: Optional[str] = None
        failure: Optional[BaseException] = None
        if self.is_main:
            try:
                nets = self._network_payloads()
                state = {
                    "epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "scaler": self.amp.state_dict(),
                    "sampler": self.sampler.state_dict(consumed=self.batches_this_pass * self.batch_size),
                    "ranks": ranks, "best": self.best, "nonfinite": self.guard.state_dict(),
                    "config_hash": config_hash(self.opt), "config": self.opt.to_dict(),
                    "world_size": self.dist.world_size, "hidiff_version": _version(),
                    "torch_version": str(torch.__version__),
                }
                path = self.store.save(it, nets, state)
                pruned = self.store.prune(self.opt.logger.keep_last)
                if it == self.topt.total_iter:
                    self.store.save_tagged("latest", nets)
                self.log.info("Saving models and training states at iteration %d (%s)%s", it, path,
                              f"; removed sets {pruned}" if pruned else "")
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                failure = exc
        error = D.broadcast_object(error)
        if error is not None:
            msg = f"saving the checkpoint of iteration {it} in {self.exp_dir} failed: {error}"
            if self.is_main:
                raise CheckpointError(msg) from failure
            raise CheckpointError(msg)

    # ============================================================= validation
    def _validate(self, it: int) -> None:
        from hidiff.engine.validation import log_results, validate

        o = self.opt
        rng = capture_rng_state()  # validation must not shift the training random streams
        shown: dict[str, int] = {}

        def on_image(set_name: str, key: str, lq: Tensor, out: Tensor, gt: Tensor) -> None:
            if self.is_main and shown.get(set_name, 0) < TB_IMAGES_PER_SET:
                shown[set_name] = shown.get(set_name, 0) + 1
                self.tb.image(f"val/{set_name}/{key}", torch.cat([lq[0, :3], out[0], gt[0]], dim=-1), it)

        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if o.val.use_ema:
                for n, e in self.ema.items():
                    stack.enter_context(e.applied_to(self.model.trainable[n]))
            results = validate(self.model, self.val_sets, metric_fns=self.metric_fns, manual_seed=o.manual_seed,
                               device=self.device, tile=o.val.tile_options(), max_images=o.val.max_images,
                               on_image=on_image)
        restore_rng_state(rng)
        self.last_validation = results
        improved = self._update_best(results, it)
        if self.is_main:
            log_results(self.log, results, self.best)
            self.log.info("validation took %.1f s%s", time.perf_counter() - t0, " (EMA weights)"
                          if self.ema and o.val.use_ema else "")
            for set_name, vals in results.items():
                self.tb.scalars({m: v for m, v in vals.items() if m != "images"}, it, prefix=f"metrics/{set_name}/")
        if improved and o.logger.keep_best:
            self._save_best(it)

    def _update_best(self, results: dict[str, dict[str, float]], it: int) -> bool:
        """Track the best value of every metric; True if the key metric improved."""
        o = self.opt
        key_metric = o.val.key_metric or next(iter(o.val.metrics), None)
        key_set = next(iter(results), None)
        improved = False
        for set_name, vals in results.items():
            for m, v in vals.items():
                if m == "images" or m not in o.val.metrics or math.isnan(v):
                    continue
                higher = o.val.metrics[m].better == "higher"
                tag = f"{set_name}/{m}"
                old = self.best.get(tag)
                if old is None or (v > old["value"] if higher else v < old["value"]):
                    self.best[tag] = {"value": float(v), "iter": int(it)}
                    improved |= (set_name == key_set and m == key_metric)
        return improved

    def _save_best(self, it: int) -> None:
        error = None
        if self.is_main:
            try:
                o = self.opt
                key_metric = o.val.key_metric or next(iter(o.val.metrics))
                key_set = next(iter(self.val_sets))
                info = {"iter": it, "set": key_set, "metric": key_metric,
                        "value": self.best[f"{key_set}/{key_metric}"]["value"]}
                self.store.save_tagged("best", self._network_payloads(), info)
                self.log.info("new best %s on %s: %.4f; saved net_<x>_best.pth", key_metric, key_set, info["value"])
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        error = D.broadcast_object(error)
        if error is not None:
            raise CheckpointError(f"saving the best checkpoint at iteration {it} failed: {error}")

    # ================================================================= finish
    def _finish(self) -> TrainResult:
        self.log.info("End of training at iteration %d; %d step(s) skipped for non-finite values.",
                      self.last_iter, self.guard.total)
        return TrainResult(self.exp_dir, self.start_iter, self.last_iter, self.guard.total, dict(self.best),
                           dict(self.last_validation))

    def _teardown(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        self.tb.close()
        close_logger()
        if self._own_group:
            D.cleanup()


class _Window:
    """Running sums between two log lines (tensors stay on the device until printed)."""

    def __init__(self) -> None:
        self.terms: dict[str, Tensor] = {}
        self.gnorm: Optional[Tensor] = None
        self.n = self.steps = 0
        self.time = self.data = 0.0
        self.samples = 0

    def add(self, terms: dict[str, Tensor], gnorm: Tensor, dt: float, data_s: float, skipped: bool,
            global_batch: int) -> None:
        self.n += 1
        self.time += dt
        self.data += data_s
        self.samples += global_batch
        if skipped:
            return
        self.steps += 1
        for k, v in terms.items():
            self.terms[k] = self.terms[k] + v if k in self.terms else v.clone()
        g = gnorm.detach().float()
        self.gnorm = g if self.gnorm is None else self.gnorm + g

    def mean_terms(self) -> dict[str, Tensor]:
        return {k: v / self.steps for k, v in self.terms.items()}

    def mean_gnorm(self) -> float:
        return float(self.gnorm) / self.steps if self.gnorm is not None and self.steps else float("nan")


def _version() -> str:
    import hidiff
    return getattr(hidiff, "__version__", "?")


def _hash(options) -> str:
    from hidiff.config import config_hash
    return config_hash(options)
