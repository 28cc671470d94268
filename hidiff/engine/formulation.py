"""How the trainer runs its networks, beside what they compute: memory layout (``train.channels_last``),
activation checkpointing (``train.checkpoint_levels``), recomputation in backward (``train.recompute_ffn``,
``train.recompute_branches``) and ``torch.compile``.

None of these changes the maths (docs/speed.md).  The trainer and the training-step benchmarks
(hidiff/profiling) call the same functions to set up the networks, so what a benchmark times is what the
trainer runs; the trainer's batches are made channels_last by its own loader (``BatchStream``), the
benchmarks' random batches by :func:`channels_last_batch`.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence, Union

import torch

from hidiff.archs.fast.gdfn import set_ffn_recompute
from hidiff.archs.fast.transformer_block import set_branch_recompute
from hidiff.errors import ConfigError

_QUIET = logging.getLogger("hidiff.formulation")


def prepare_networks(model, topt, levels: Optional[Sequence[Union[int, str]]] = None,
                     log: Optional[logging.Logger] = None) -> List[str]:
    """Set the trained networks up as ``topt`` (the ``train`` options) says, before the optimiser is built:
    channels_last weights, checkpointing of ``levels`` (default ``topt.checkpoint_levels``), the fast blocks'
    recomputation.  Returns the networks checkpointed (``net_<x>``)."""
    log = log or _QUIET
    levels = list(topt.checkpoint_levels if levels is None else levels)
    if topt.channels_last:
        model.to(memory_format=torch.channels_last)
    checkpointed = checkpoint_levels(model, levels, log) if levels else []
    for name, net in model.trainable.items():
        if set_ffn_recompute(net, topt.recompute_ffn) and topt.recompute_ffn and not topt.recompute_branches:
            log.info("net_%s: the feed-forward blocks recompute their depthwise conv and GELU gate in backward "
                     "(train.recompute_ffn)", name)
        if set_branch_recompute(net, topt.recompute_branches) and topt.recompute_branches:
            log.info("net_%s: the Transformer blocks keep only their matrix products' outputs for backward and "
                     "recompute the rest (train.recompute_branches)", name)
        elif topt.recompute_branches and name == "g":
            log.warning("train.recompute_branches: net_g has no fast Transformer blocks (the official "
                        "formulation, fused_attention: false, or another network type); nothing is recomputed")
    return checkpointed


def checkpoint_levels(model, levels: Sequence[Union[int, str]], log: Optional[logging.Logger] = None) -> List[str]:
    """Turn on activation checkpointing of ``levels`` in every trained network that has U-Net levels; their
    names (``net_<x>``).  A ConfigError where none has."""
    nets = {n: net for n, net in model.trainable.items() if hasattr(net, "set_checkpoint_levels")}
    if not nets:
        raise ConfigError(f"train.checkpoint_levels {list(levels)}: none of the trained networks "
                          f"({', '.join(sorted(model.trainable))}) has U-Net levels to checkpoint")
    for name, net in nets.items():
        net.set_checkpoint_levels(list(levels))
        (log or _QUIET).info("net_%s: activation checkpointing of %s", name, ", ".join(sorted(net.checkpoint_levels)))
    return [f"net_{n}" for n in nets]


def channels_last_batch(batch: dict, topt) -> dict:
    """The batch's 4-D tensors in channels_last layout where ``train.channels_last`` is on."""
    if not topt.channels_last:
        return batch
    return {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v
            for k, v in batch.items()}


def compiled(module: Any, topt, backend: Optional[str] = None) -> Any:
    """``torch.compile(module)`` where ``train.compile`` is on (``backend``: torch's default, inductor, if None)."""
    if not topt.compile:
        return module
    return torch.compile(module, **({"backend": backend} if backend else {}))
