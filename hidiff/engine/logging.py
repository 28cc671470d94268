"""Run logging: the text log (through tqdm.write, so a progress bar is not torn) and TensorBoard scalars/images.

Only rank 0 logs at INFO and writes files; other ranks log errors only (to the
console).  Log line prefix as in BasicSR: ``%(asctime)s %(levelname)s: ``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from hidiff.engine.distributed import reduce_mean_dict

LOGGER_NAME = "hidiff"
_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


class _TqdmAwareHandler(logging.StreamHandler):
    """Console handler that prints through ``tqdm.write`` so the bar is not torn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logger(log_file: Path | None, rank: int = 0) -> logging.Logger:
    """Configure the 'hidiff' logger for this process (idempotent: old handlers are replaced)."""
    log = logging.getLogger(LOGGER_NAME)
    for h in list(log.handlers):
        if getattr(h, "_hidiff_run", False):
            log.removeHandler(h)
            h.close()
    log.setLevel(logging.INFO if rank == 0 else logging.ERROR)
    log.propagate = False
    fmt = logging.Formatter(_FORMAT)
    console = _TqdmAwareHandler(sys.stderr)
    console.setFormatter(fmt)
    console._hidiff_run = True  # type: ignore[attr-defined]
    log.addHandler(console)
    if log_file is not None and rank == 0:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(fmt)
        fh._hidiff_run = True  # type: ignore[attr-defined]
        log.addHandler(fh)
    return log


def close_logger() -> None:
    """Detach and close the handlers added by :func:`setup_logger`."""
    log = logging.getLogger(LOGGER_NAME)
    for h in list(log.handlers):
        if getattr(h, "_hidiff_run", False):
            log.removeHandler(h)
            h.close()


class TensorBoard:
    """A SummaryWriter on rank 0, a no-op elsewhere or when disabled."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # deferred: tensorboard is slow to import
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def image(self, tag: str, chw: torch.Tensor, step: int) -> None:
        """A (3,H,W) float image in [0,1]."""
        if self.writer is not None:
            self.writer.add_image(tag, chw.detach().float().clamp(0, 1).cpu(), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def train_line(name: str, epoch: int, iteration: int, lrs: list[float], eta_s: float, iter_s: float,
               data_s: float, stats: Mapping[str, float]) -> str:
    """BasicSR-style training line, e.g. ``[train..][epoch:  1, iter:     100, lr:(2.000e-04,)] ...``."""
    lr = ",".join(f"{v:.3e}" for v in lrs)
    head = (f"[{name[:5]}..][epoch:{epoch:3d}, iter:{iteration:8,d}, lr:({lr},)] "
            f"[eta: {format_eta(eta_s)}, time (data): {iter_s:.3f} ({data_s:.3f})] ")
    return head + " ".join(f"{k}: {v:.4e}" if k.startswith("l_") or k == "total" else f"{k}: {v:.4g}"
                           for k, v in stats.items())


class LogWindow:
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


def log_window(t, w: LogWindow, it: int, lrs: list[float]) -> None:
    """The periodic training line (losses averaged over ranks and steps) and its TensorBoard scalars."""
    stats = reduce_mean_dict(w.mean_terms(), t.device) if w.steps else {}
    if not t.is_main:
        return
    iter_s = w.time / max(w.n, 1)
    extra = {"grad_norm": w.mean_gnorm(), "it/s": w.n / max(w.time, 1e-9),
             "samples/s": w.samples / max(w.time, 1e-9), "data_s": w.data / max(w.n, 1),
             "skipped": float(t.guard.total)}
    if t.device.type == "cuda":
        extra["gpu_mem_gib"] = torch.cuda.max_memory_allocated(t.device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(t.device)
    eta = iter_s * (t.topt.total_iter - it)
    if "total" in stats and t.pbar is not None:
        t.pbar.update(0, loss=f"{stats['total']:.4g}")
    t.log.info(train_line(t.opt.name, t.batches.epoch, it, lrs, eta, iter_s, extra["data_s"], {**stats, **extra}))
    t.tb.scalars({k: v for k, v in stats.items()}, it, prefix="losses/")
    t.tb.scalars({"lr": lrs[0], **extra}, it, prefix="train/")
