"""Iteration-based learning-rate schedules (BasicSR/Restormer/HI-Diff family).

Every schedule here is a pure function of the 1-based training iteration ``k``,
so exact resume only needs the iteration number.  Following the official loop
(docs/architecture.md 3.2), the learning rate of iteration ``k`` is the schedule value at
``t = k - 1``: the official code calls ``scheduler.step()`` at the start of every
iteration with ``k > 1``.  Optional linear warm-up (BasicSR ``warmup_iter``):
for ``k < warmup_iter`` the rate is ``base_lr * k / warmup_iter``.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Sequence

import torch

from hidiff.errors import ConfigError
from hidiff.utils.kwargs import check_kwargs
from hidiff.utils.suggest import did_you_mean


def _cumulative(periods: Sequence[int]) -> list[int]:
    out, acc = [], 0
    for p in periods:
        acc += int(p)
        out.append(acc)
    return out


def cosine_restart_value(base_lr: float, t: int, periods: Sequence[int], restart_weights: Sequence[float],
                         eta_mins: Sequence[float]) -> float:
    """Cosine annealing with restarts at schedule position ``t`` (= iteration - 1).

    Period ``i`` covers ``cum[i-1] < t <= cum[i]`` (the first also contains
    ``t = 0``) and anneals from ``eta_min_i + w_i (base - eta_min_i)`` down to
    ``eta_min_i``.  Past the last period the final ``eta_min`` is held (the
    official code crashes there instead).
    """
    cum = _cumulative(periods)
    if t > cum[-1]:
        return float(eta_mins[-1])
    idx = bisect.bisect_left(cum, t)  # first period whose end >= t
    start = 0 if idx == 0 else cum[idx - 1]
    eta_min = eta_mins[idx]
    return eta_min + restart_weights[idx] * 0.5 * (base_lr - eta_min) * (
        1.0 + math.cos(math.pi * (t - start) / periods[idx]))


class IterationLR:
    """Base class: sets every param group's lr from the iteration number.

    Subclasses implement :meth:`value` (the lr of one group at position
    ``t = k - 1``, from the group's base lr).  Call :meth:`step_to` with the
    current 1-based iteration before the optimiser step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_iter: int = -1) -> None:
        self.optimizer = optimizer
        self.warmup_iter = int(warmup_iter) if warmup_iter is not None else -1
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        for g, base in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = base
        self.last_iter = 0
        self._last_lr = list(self.base_lrs)

    def value(self, base_lr: float, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def lr_at(self, k: int) -> list[float]:
        """Learning rates of iteration ``k`` (1-based), warm-up included."""
        if k < 1:
            raise ValueError(f"iterations are 1-based, got {k}")
        if 0 < self.warmup_iter and k < self.warmup_iter:
            return [base * k / self.warmup_iter for base in self.base_lrs]
        return [self.value(base, k - 1) for base in self.base_lrs]

    def step_to(self, k: int) -> list[float]:
        """Set the optimiser's learning rates for iteration ``k`` and return them."""
        lrs = self.lr_at(k)
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self.last_iter = int(k)
        self._last_lr = lrs
        return lrs

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "base_lrs": list(self.base_lrs), "last_iter": self.last_iter,
                "warmup_iter": self.warmup_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("type") not in (None, type(self).__name__):
            raise ValueError(f"scheduler state is for {state['type']}, not {type(self).__name__}")
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = base
        if state.get("last_iter", 0) > 0:
            self.step_to(int(state["last_iter"]))


class ConstantLR(IterationLR):
    """The base learning rate throughout (after the optional warm-up)."""

    def value(self, base_lr: float, t: int) -> float:
        return base_lr


class MultiStepRestartLR(IterationLR):
    """BasicSR ``MultiStepRestartLR``: multiply by ``gamma`` at each milestone;
    at a restart position the rate jumps back to ``base_lr * restart_weight``."""

    def __init__(self, optimizer, milestones: Sequence[int], gamma: float = 0.1, restarts: Sequence[int] = (0,),
                 restart_weights: Sequence[float] = (1,), warmup_iter: int = -1) -> None:
        if len(restarts) != len(restart_weights):
            raise ConfigError(f"train.scheduler: restarts {list(restarts)} and restart_weights "
                              f"{list(restart_weights)} must have the same length")
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.restarts = [int(r) for r in restarts]
        self.restart_weights = [float(w) for w in restart_weights]
        super().__init__(optimizer, warmup_iter)

    def value(self, base_lr: float, t: int) -> float:
        done = [(r, w) for r, w in zip(self.restarts, self.restart_weights) if r <= t]
        if done:
            r, w = max(done)
            n = sum(1 for m in self.milestones if r < m <= t)
            return base_lr * w * self.gamma ** n
        return base_lr * self.gamma ** sum(1 for m in self.milestones if m <= t)


class CosineAnnealingRestartLR(IterationLR):
    """BasicSR ``CosineAnnealingRestartLR``: cosine periods with one ``eta_min``."""

    def __init__(self, optimizer, periods: Sequence[int], restart_weights: Sequence[float] | None = None,
                 eta_min: float = 0.0, warmup_iter: int = -1) -> None:
        restart_weights = [1.0] * len(periods) if restart_weights is None else restart_weights
        _check_periods(periods, restart_weights, "restart_weights")
        self.periods = [int(p) for p in periods]
        self.restart_weights = [float(w) for w in restart_weights]
        self.eta_min = float(eta_min)
        super().__init__(optimizer, warmup_iter)

    @property
    def total(self) -> int:
        return sum(self.periods)

    def value(self, base_lr: float, t: int) -> float:
        return cosine_restart_value(base_lr, t, self.periods, self.restart_weights,
                                    [self.eta_min] * len(self.periods))


class CosineAnnealingRestartCyclicLR(IterationLR):
    """Restormer/HI-Diff ``CosineAnnealingRestartCyclicLR``: one ``eta_min`` per period.

    ``restart_weights`` default to 1 and ``eta_mins`` to 0 for every period.

    With the official values (periods [100000, 200000], eta_mins [2e-4, 1e-6],
    base 2e-4) the rate is flat for iterations 1..100001, then cosine to 1e-6
    (docs/quirks.md, quirk 15).
    """

    def __init__(self, optimizer, periods: Sequence[int], restart_weights: Sequence[float] | None = None,
                 eta_mins: Sequence[float] | None = None, warmup_iter: int = -1) -> None:
        restart_weights = [1.0] * len(periods) if restart_weights is None else restart_weights
        eta_mins = [0.0] * len(periods) if eta_mins is None else eta_mins
        _check_periods(periods, restart_weights, "restart_weights")
        _check_periods(periods, eta_mins, "eta_mins")
        self.periods = [int(p) for p in periods]
        self.restart_weights = [float(w) for w in restart_weights]
        self.eta_mins = [float(e) for e in eta_mins]
        super().__init__(optimizer, warmup_iter)

    @property
    def total(self) -> int:
        return sum(self.periods)

    def value(self, base_lr: float, t: int) -> float:
        return cosine_restart_value(base_lr, t, self.periods, self.restart_weights, self.eta_mins)


def _check_periods(periods: Sequence[int], other: Sequence[float], name: str) -> None:
    if not periods or any(int(p) <= 0 for p in periods):
        raise ConfigError(f"train.scheduler.periods: expected a non-empty list of positive ints, got {periods!r}")
    if len(other) != len(periods):
        raise ConfigError(f"train.scheduler.{name}: expected {len(periods)} values (one per period), "
                          f"got {list(other)!r}")


SCHEDULERS: dict[str, type[IterationLR]] = {
    cls.__name__: cls for cls in (ConstantLR, MultiStepRestartLR, CosineAnnealingRestartLR,
                                  CosineAnnealingRestartCyclicLR)
}
SCHEDULERS["MultiStepLR"] = MultiStepRestartLR  # BasicSR accepts both names


def build_scheduler(optimizer: torch.optim.Optimizer, block: dict[str, Any] | None, warmup_iter: int = -1,
                    total_iter: int | None = None) -> IterationLR:
    """Build a schedule from a ``train.scheduler`` block ``{type: Name, **kwargs}``.

    ``None`` gives a constant rate.  When ``total_iter`` is given, a cosine
    schedule shorter than the run is refused (the official code crashes there
    mid-run; we say so before the first iteration).
    """
    if block is None:
        return ConstantLR(optimizer, warmup_iter)
    block = dict(block)
    name = block.pop("type", None)
    if name not in SCHEDULERS:
        raise ConfigError(f"train.scheduler.type: unknown scheduler {name!r}{did_you_mean(str(name), SCHEDULERS)}; "
                          f"known: {', '.join(sorted(SCHEDULERS))}")
    cls = SCHEDULERS[name]
    check_kwargs(cls.__init__, {"optimizer": optimizer, **block}, "train.scheduler")
    sched = cls(optimizer, warmup_iter=warmup_iter, **block)
    total = getattr(sched, "total", None)
    if total is not None and total_iter is not None and total_iter > total:
        raise ConfigError(f"train.scheduler.periods: the periods sum to {total} but train.total_iter is "
                          f"{total_iter}; make the periods cover the whole run")
    return sched
