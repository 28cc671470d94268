"""The generic training loop: one stage model, any device, any world size.

The trainer knows *how* to train (devices, AMP, DDP, gradient accumulation,
clipping, EMA, progressive batches, checkpoints, resume, logging, validation);
the stage model (``hidiff.models``) knows *what* is trained.  One iteration =
``grad_accum_steps`` loader batches per process, one optimiser step.  The
learning rate, the progressive schedule and the checkpoint/validation cadence
are functions of the iteration number only, so they are the same for any world
size; the YAML batch is per process (BasicSR), and the log states the global
batch = batch x world size x accumulation.

Start-up checks and builds everything in memory first (``preflight``, model,
data, metrics, the resume state and its config check); only then does it touch
the run folder (``run_folder``).  Parts: ``setup`` (what a run is made of),
``training_state`` (resume, saving), ``best`` (best scores), ``checkpoint_store``
(files), ``validation``, ``stop`` (SIGINT/SIGTERM).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from hidiff.engine import distributed as D
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.engine.logging import LogWindow, TensorBoard, close_logger, log_window, setup_logger
from hidiff.engine.nonfinite import NonFiniteGuard, first_nonfinite
from hidiff.engine.preflight import check_training
from hidiff.engine.run_folder import EarlyLines, open_run_folder
from hidiff.engine.run_lock import RunLock
from hidiff.engine.seeding import restore_rng_state, seed_everything
from hidiff.engine.setup import (agreed, build_data, build_model_parts, check_first_sample, log_setup, stamp,
                                 wrap_model)
from hidiff.engine.stop import StopRequest
from hidiff.engine.training_state import (check_config_change, choose_resume, restore_state, save_checkpoint,
                                          verify_resume)
from hidiff.engine.validation import validate_during_training
from hidiff.errors import ConfigError, HidiffError
from hidiff.utils.malloc import keep_freed_memory
from hidiff.utils.progress import Progress


@dataclass
class TrainResult:
    """What a finished run reports back (also handy in tests)."""

    experiment_dir: Path
    start_iter: int
    last_iter: int
    skipped_steps: int
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_validation: dict[str, dict[str, float]] = field(default_factory=dict)
    stopped_by: Optional[str] = None  # the signal that stopped the run early (a checkpoint of last_iter exists)


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
        self.resume_arg = str(resume if resume is not None else (options.path.resume_state or "none"))
        self.allow_config_change = allow_config_change
        if stop_after is not None and stop_after < 1:
            raise ConfigError(f"--stop-after: expected a positive number of iterations, got {stop_after}")
        self.stop_after = stop_after
        self.folder_lock = RunLock()
        self.log = logging.getLogger("hidiff")
        self._own_group = False
        self.tb = TensorBoard(None)
        self.pbar: Optional[Progress] = None
        self.stop = StopRequest()
        self.stopping = False
        self.writing = False    # the run folder is being archived, created or written: no longer bad input
        self.run_open = False   # the run folder and its log file exist
        self.iter = 0           # the iteration being trained

    # ================================================================== public
    def fit(self) -> TrainResult:
        """Set everything up, train to ``total_iter``, save and validate at the end."""
        self.stop.install()
        try:
            self._setup()
            self._loop()
            return self._finish()
        except BaseException as exc:
            self._log_failure(exc)
            raise
        finally:
            self.stop.uninstall()
            self._teardown()

    def _log_failure(self, exc: BaseException) -> None:
        """Put an unexpected end into the run's log file: the console may be gone (a dead pipe, a closed
        terminal), and the log is where a reader looks for why a run stopped."""
        if not self.run_open or isinstance(exc, KeyboardInterrupt):
            return  # before the run folder, bad input is printed and nothing is written; Ctrl-C is a stop
        trace = None if isinstance(exc, HidiffError) else exc   # a bug gets its traceback, a known error its message
        self.log.error("training ended at iteration %d by %s: %s", self.iter, type(exc).__name__, exc, exc_info=trace)

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
        # before the model and the loader's workers (forked later, they inherit it)
        self.cpu_memory_kept = self.device.type == "cpu" and self.topt.keep_cpu_memory and keep_freed_memory()
        self.is_main = self.dist.is_main
        self.exp_dir = Path(o.path.experiments_root) / o.name
        self.store = CheckpointStore(self.exp_dir, self.log)
        setup_logger(None, self.dist.rank)
        started = stamp()
        early = EarlyLines()
        try:  # nothing on disk changes until every rank passed every check
            agreed(lambda: check_training(o))
            agreed(lambda: self.is_main and self.folder_lock.hold(self.exp_dir))
            path = choose_resume(self.resume_arg, self.store, self.log, self.is_main)
            verified = agreed(lambda: self._build(path))
            agreed(lambda: wrap_model(self, verified))
            # another start may have created this folder since the check above: refused here, nothing moved
            agreed(lambda: self.is_main and self.folder_lock.claim(self.exp_dir))
        except BaseException:
            self.folder_lock.release()
            early.discard()
            raise
        self.writing = True
        archived, self.tb = open_run_folder(o, self.exp_dir, fresh=verified is None, is_main=self.is_main,
                                            rank=self.dist.rank, stamp=started, early=early,
                                            lock=self.folder_lock,
                                            resumed=None if verified is None else Path(verified.path),
                                            resumed_iter=None if verified is None else verified.iteration)
        self.run_open = True
        log_setup(self, verified, archived, self.log)

    def _build(self, path: Optional[Path]):
        """Verify the resume state and its options, build model, data and metrics (all in memory)."""
        verified = None
        if path is not None:
            verified = verify_resume(path, self.log)
            check_config_change(verified, self.opt, self.allow_config_change, self.log)
        seed_everything(self.opt.manual_seed + self.dist.rank)
        build_model_parts(self, verified)
        build_data(self)
        check_first_sample(self)
        self.guard = NonFiniteGuard(self.topt.max_consecutive_nonfinite)
        self.start_iter, self.best, self.rank_state = 0, {}, None
        if verified is not None:
            restore_state(self, verified)
        return verified

    # ==================================================================== loop
    def _loop(self) -> None:
        o, total = self.opt, self.topt.total_iter
        self.batches.start()
        if self.rank_state is not None:  # after the iterator exists: nothing may draw in between
            restore_rng_state(self.rank_state["rng"])
        self.last_validation: dict[str, dict[str, float]] = {}
        window = LogWindow()
        self.pbar = Progress(total, initial=self.start_iter, enabled=o.logger.pbar and self.is_main)
        it = self.start_iter
        end = total if self.stop_after is None else min(total, it + self.stop_after)
        if it >= total:
            self.log.info("the checkpoint is at iteration %d >= total_iter %d: nothing to train", it, total)
        while it < end:
            it += 1
            self.iter = it
            lrs = self.scheduler.step_to(it)
            t0 = time.perf_counter()
            terms, gnorm, data_s, skipped = self._train_step(it)
            if self.device.type == "cuda" and (it % o.logger.print_freq == 0 or it == total):
                torch.cuda.synchronize(self.device)
            window.add(terms, gnorm, time.perf_counter() - t0, data_s, skipped, self._global_batch(it))
            self.pbar.update(1)
            if it % o.logger.print_freq == 0 or it == total:
                log_window(self, window, it, lrs)
                window = LogWindow()
            # validate first, so that the checkpoint of this iteration holds its scores
            if self.val_sets and (it % o.val.val_freq == 0 or it == total):
                validate_during_training(self, it)
            if it % o.logger.save_checkpoint_freq == 0 or it == total:
                save_checkpoint(self, it)
            if self.stopping:
                break
        if it < total and it > self.start_iter:
            if it % o.logger.save_checkpoint_freq:
                save_checkpoint(self, it)
            if self.stopping:
                self.log.warning("stopped by %s at iteration %d of %d; the checkpoint of iteration %d is saved; "
                                 "continue with --resume auto", self.stop.name or "a signal on another rank", it,
                                 total, it)
            else:
                self.log.info("stopping at iteration %d of %d (stop_after=%d); continue with --resume auto", it,
                              total, self.stop_after)
        self.last_iter = it

    def _train_step(self, it: int) -> tuple[dict[str, Tensor], Tensor, float, bool]:
        accum = self.topt.grad_accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, Tensor] = {}
        data_s = 0.0
        for m in range(accum):
            t = time.perf_counter()
            batch = self.batches.next()
            if self.progressive is not None:
                batch = self.progressive.apply(batch, it)
            batch = self.batches.to_device(batch)
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
        # one host sync per step: every rank must agree on skipping (DDP grads are already all-reduced) ...
        flag = torch.stack([gnorm.float().reshape(())] + [v.reshape(()) for v in sums.values()])
        # ... and on stopping for a signal (any rank's), at this same iteration
        nonfinite, self.stopping = D.any_over_ranks([~flag.isfinite().all(), self.stop.requested], self.device)
        culprit = self._culprit(sums) if nonfinite else ""
        detail = "" if not nonfinite else f"first non-finite: {culprit}; " + ", ".join(
            f"{k}={float(v):.4g}" for k, v in sums.items()) + f", grad_norm={float(gnorm):.4g}"
        skip = self.guard.record(not nonfinite, it, detail=detail)
        self.amp.step(self.optimizer, skip)
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            self.log.warning("iteration %d: non-finite loss or gradient, step skipped (%d skipped so far); first "
                             "non-finite: %s", it, self.guard.total, culprit)
        else:
            for n, e in self.ema.items():
                e.update(self.model.trainable[n])
        return sums, gnorm, data_s, skip

    def _culprit(self, sums: dict[str, Tensor]) -> str:
        """The first non-finite loss term or gradient, from the first rank that has one (all ranks call this)."""
        found = D.all_gather_objects(first_nonfinite(sums, dict(self.model.trainable.items())))
        rank = next((r for r, c in enumerate(found) if not c.startswith("the gradient norm")), 0)
        return found[rank] + (f" (rank {rank})" if self.dist.distributed else "")

    def _clip(self) -> Tensor:
        if self.topt.use_grad_clip:
            return torch.nn.utils.clip_grad_norm_(self.params, self.topt.grad_clip_norm)
        grads = [p.grad for p in self.params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)

    def _global_batch(self, it: int) -> int:
        per = self.progressive.sizes(it)[1] if self.progressive is not None else self.batch_size
        return per * self.dist.world_size * self.topt.grad_accum_steps

    # ================================================================= finish
    def _finish(self) -> TrainResult:
        self.log.info("End of training at iteration %d; %d step(s) skipped for non-finite values.",
                      self.last_iter, self.guard.total)
        stopped = (self.stop.name or "a signal") if self.stopping and self.last_iter < self.topt.total_iter else None
        return TrainResult(self.exp_dir, self.start_iter, self.last_iter, self.guard.total, dict(self.best),
                           dict(self.last_validation), stopped)

    def _teardown(self) -> None:
        self.folder_lock.release()
        if self.pbar is not None:
            self.pbar.close()
        self.tb.close()
        close_logger()
        if self._own_group:
            D.cleanup()
