"""What the profiler measures: one ``Case`` per network, the prior chain, the whole pipeline and a training step.

Every case is a closure over fixed inputs on one device, so the same code builds
cases on the ``meta`` device (MAC counts, no memory) and on the real device
(latency and memory).  Case names:

* ``net_<x>`` for every network of the stage model (``net_g``, ``net_le``,
  ``net_le_dm``, ``net_d``): one forward as the pipeline calls it (net_g and the
  encoders on the padded image, net_d for one step of the chain);
* ``chain``: the T-step reverse diffusion (T calls of net_d) of stage-2 models;
* ``pipeline``: the whole inference path, blurry (B,C,H,W) -> restored: padding,
  latent encoder, T-step chain, U-Net, crop.  Stage-1 models have no inference
  pipeline; their ``pipeline`` is the oracle restore with the GT-conditioned prior;
* ``train_step``: one optimisation step of the stage (forward, backward, gradient
  clipping, optimiser step) on random crops of the padded size, with the option
  file's ``train.channels_last``, ``checkpoint_levels`` and recomputation; opt-in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from hidiff.engine.formulation import channels_last_batch, prepare_networks
from hidiff.engine.optim import build_optimizer
from hidiff.errors import ConfigError
from hidiff.inference.noise import draw_noise

CASE_ORDER = ("net_g", "net_le", "net_le_dm", "net_d", "chain", "pipeline", "train_step")


@dataclass
class Case:
    """One measured call: ``run()`` does the work, ``count()`` is what the MAC counter sees."""

    name: str
    label: str
    modules: List[nn.Module]
    run: Callable[[], object]
    grad: bool = False
    count: Optional[Callable[[], object]] = None
    notes: List[str] = field(default_factory=list)

    def counted(self) -> Callable[[], object]:
        return self.count or self.run


def parse_size(text: str) -> Tuple[int, int]:
    """``'256x256'`` / ``'720x1280'`` (H x W) or ``'256'`` -> (H, W)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ConfigError(f"--size: expected HxW (e.g. 256x256 or 720x1280), got {text!r}")
    return dims[0], dims[1]


def padded_size(size: Tuple[int, int], multiple: int) -> Tuple[int, int]:
    """The size the pipeline pads to (each side rounded up to ``multiple``)."""
    m = max(1, int(multiple))
    return tuple(-(-s // m) * m for s in size)  # type: ignore[return-value]


def _tensor(shape: Sequence[int], device: torch.device, seed: int) -> torch.Tensor:
    """Uniform [0, 1) values from ``seed`` (an empty tensor on the meta device)."""
    if device.type == "meta":
        return torch.empty(tuple(shape), device=device)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(shape), generator=g).to(device)


def _prior_shape(model, device: torch.device) -> Optional[Tuple[int, int]]:
    """(tokens, channels) of the prior, from a tiny forward of the model's encoder."""
    nets = model.networks()
    with torch.no_grad():
        if "le_dm" in nets:
            z = nets["le_dm"](_tensor((1, 3, 16, 16), device, 1))
        elif "le" in nets:
            probe = _tensor((1, 3, 16, 16), device, 1)
            z = nets["le"](probe, probe)
        else:
            return None
    return int(z.shape[1]), int(z.shape[2])


def input_channels(model) -> int:
    """Channels of the blurry input the model restores (6 for dual-pixel Swintormer)."""
    return int(getattr(model, "in_channels", 3))


def build_cases(model, size: Tuple[int, int], *, batch: int = 1, device: torch.device | str = "cpu",
                names: Optional[Sequence[str]] = None, options=None) -> List[Case]:
    """The cases of ``model`` (already on ``device``) for a (batch, C, H, W) input.

    ``names`` selects cases (default: every inference case; ``train_step`` only when
    named, and then ``options`` must be the training options the model was built from).
    """
    device = torch.device(device)
    want = list(names) if names else [n for n in CASE_ORDER if n != "train_step"]
    nets: Dict[str, nn.Module] = model.networks()
    diffusion = getattr(model, "diffusion", None)
    in_ch = input_channels(model)
    hp, wp = padded_size(size, model.pad_multiple)
    lq = _tensor((batch, in_ch, *size), device, 2)
    lq_p = _tensor((batch, in_ch, hp, wp), device, 2)
    gt_p = _tensor((batch, 3, hp, wp), device, 3)
    prior_shape = _prior_shape(model, device) if model.has_prior else None
    z = _tensor((batch, *prior_shape), device, 4) if prior_shape else None
    x_t = (draw_noise((batch, *prior_shape), 5, device=device) if prior_shape and device.type != "meta" else z)

    cases: Dict[str, Case] = {}
    pad_note = f"on the padded {hp}x{wp} input" if (hp, wp) != tuple(size) else f"on {hp}x{wp}"
    if "g" in nets:
        g = nets["g"]
        cases["net_g"] = Case("net_g", f"net_g (U-Net) {pad_note}", [g],
                              (lambda: g(lq_p, z)) if model.has_prior else (lambda: g(lq_p)))
    if "le" in nets:
        le = nets["le"]
        cases["net_le"] = Case("net_le", "net_le (stage-1 encoder, GT + blurry)", [le], lambda: le(lq_p, gt_p))
    if "le_dm" in nets:
        le_dm = nets["le_dm"]
        cases["net_le_dm"] = Case("net_le_dm", "net_le_dm (latent encoder, blurry)", [le_dm], lambda: le_dm(lq_p))
    if "d" in nets and diffusion is not None:
        d = nets["d"]
        t_last = diffusion.timesteps - 1
        cases["net_d"] = Case("net_d", "net_d (denoiser, one step)", [d],
                              lambda: d(x_t, z, diffusion.time_input(x_t, t_last)))
        cases["chain"] = Case("chain", f"diffusion chain (T={diffusion.timesteps} x net_d)", [d],
                              lambda: diffusion.sample(d, z, x_t))
    pipe = model.pipeline()
    if pipe.needs_gt:
        gt = _tensor((batch, 3, *size), device, 3)
        cases["pipeline"] = Case("pipeline", "stage-1 restore: pad + net_le(GT, blurry) + U-Net + crop",
                                 [nets["le"], nets["g"]], lambda: pipe.restore(lq, gt=gt),
                                 notes=["stage 1 restores with the ground-truth prior (an oracle)"])
    else:
        parts = [m for m in (pipe.net_le_dm, pipe.net_d, pipe.net_g) if m is not None]
        label = "pipeline: pad + latent encoder + chain + U-Net + crop" if pipe.needs_prior else \
            "pipeline: pad + network + crop"
        cases["pipeline"] = Case("pipeline", label, parts,
                                 (lambda: pipe.restore(lq, noise=x_t)) if pipe.needs_prior else
                                 (lambda: pipe.restore(lq)))
    if "train_step" in want:
        cases["train_step"] = _train_step_case(model, options, (hp, wp), batch, device, in_ch)

    unknown = [n for n in want if n not in CASE_ORDER]
    if unknown:
        raise ConfigError(f"--cases: unknown case(s) {unknown}; known: {', '.join(CASE_ORDER)}")
    missing = [n for n in want if n not in cases]
    if missing and names:
        raise ConfigError(f"--cases: {', '.join(missing)} not available for model_type "
                          f"{type(model).__name__} (available: {', '.join(cases)})")
    return [cases[n] for n in CASE_ORDER if n in cases and n in want]


def _train_step_case(model, options, size: Tuple[int, int], batch: int, device: torch.device,
                     in_ch: int) -> Case:
    """One optimisation step as the trainer runs it (fp32, no accumulation), with what the trainer sets from
    ``train`` before its first step (hidiff/engine/setup.py, build_model_parts): ``channels_last`` weights and
    batches, activation checkpointing of ``checkpoint_levels``, the feed-forward and branches recomputed in
    backward where ``recompute_ffn`` / ``recompute_branches`` say so."""
    topt = getattr(options, "train", None)
    if topt is None:
        raise ConfigError("the train_step case needs a training option file (with a 'train' block)")
    prepare_networks(model, topt)          # the trainer's own set-up (hidiff/engine/formulation.py)
    data = {"lq": _tensor((batch, in_ch, *size), device, 6), "gt": _tensor((batch, 3, *size), device, 7)}
    if device.type != "meta":
        data = channels_last_batch(data, topt)
    params = [p for p in model.trainable.parameters() if p.requires_grad]

    def forward_backward() -> torch.Tensor:
        loss = model(data)["total"]
        loss.backward()
        return loss

    label = f"training step, batch {batch} of {size[0]}x{size[1]}"
    notes = ["training step MACs: forward + backward (the optimiser update has no matrix products)"]
    if topt.checkpoint_levels or topt.recompute_branches:
        notes.append("backward includes the forward work recomputed by train.checkpoint_levels / "
                     "train.recompute_branches")
    if device.type == "meta":  # counting only: no optimiser state on meta tensors
        return Case("train_step", label, list(model.trainable.values()), forward_backward, grad=True, notes=notes)
    optimizer = build_optimizer(params, topt.optim_total)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        if topt.use_grad_clip:
            torch.nn.utils.clip_grad_norm_(params, topt.grad_clip_norm)
        optimizer.step()

    return Case("train_step", label, list(model.trainable.values()), step, grad=True, count=forward_backward,
                notes=notes)
