"""Parameters, MACs and FLOPs of a forward pass (``torch.utils.flop_counter``).

The counter sees matrix products only (conv, linear, mm/bmm, attention kernels);
elementwise work (norms, GELU, softmax) is not counted, as in the papers.
FLOPs = 2 x MACs.

Two figures are kept apart:

* ``macs``: the model's cost in its *reference formulation*, i.e. the textbook
  maths of the official code.  Every module that exposes a ``fused`` switch is run
  with ``fused=False`` and row-stripe chunking is off.  This is the number papers
  report and it does not depend on how fast kernels reorganise the work.
* ``macs_executed``: what the configured (fast) path actually executes; folding
  the attention into the projection saves products, recomputed stripe halos add
  some.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hidiff.archs.fast.stripes import whole_images


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products executed by ``fn()`` (2 per multiply-accumulate)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def reference_formulation(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Temporarily run every submodule on its plain path: ``fused=False``, no inference stripes."""
    modules = list(modules)
    saved = [(m, m.fused) for root in modules for m in root.modules() if isinstance(getattr(m, "fused", None), bool)]
    for m, _ in saved:
        m.fused = False
    try:
        with whole_images(*modules):
            yield
    finally:
        for m, value in saved:
            m.fused = value


def gmac(macs: int | None) -> str:
    """``12.34`` (GMAC) or ``n/a``."""
    return "n/a" if macs is None else f"{macs / 1e9:.2f}"


__all__ = ["count_parameters", "count_flops", "reference_formulation", "gmac"]
