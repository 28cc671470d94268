"""The one path from a blurry tensor to a restored tensor.

pad -> prior (latent encoder -> T-step sampler from an explicit x_T) -> U-Net
-> crop.  Validation, ``test.py``, ``deblur.py``, export and the tiler all call
this object, so there is exactly one restoration code path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from hidiff.diffusion.latent_ddpm import LatentDDPM
from hidiff.inference.noise import draw_noise
from hidiff.utils.padding import crop, pad_to_multiple


class RestorationPipeline:
    """blurry (B,C,H,W) in [0,1] -> restored (B,3,H,W); any H, W.

    ``net_le_dm``/``net_d``/``diffusion`` are None for prior-free networks
    (e.g. the published Swintormer or the no-prior baseline).
    """

    #: restores from the blurry image alone (see :class:`OraclePipeline`)
    needs_gt = False

    def __init__(self, net_g: nn.Module, *, net_le_dm: Optional[nn.Module] = None,
                 net_d: Optional[nn.Module] = None, diffusion: Optional[LatentDDPM] = None,
                 pad_multiple: int = 8, in_channels: int = 3) -> None:
        parts = [net_le_dm is None, net_d is None, diffusion is None]
        if any(parts) and not all(parts):
            raise ValueError("net_le_dm, net_d and diffusion must be given together (or none of them)")
        self.net_g = net_g
        self.net_le_dm = net_le_dm
        self.net_d = net_d
        self.diffusion = diffusion
        self.pad_multiple = int(pad_multiple)
        self.in_channels = int(in_channels)
        self._prior_shape: Optional[Tuple[int, int]] = None

    # ------------------------------------------------------------------ setup
    @property
    def needs_prior(self) -> bool:
        return self.net_le_dm is not None

    @property
    def device(self) -> torch.device:
        return next(self.net_g.parameters()).device

    def modules(self):
        return [m for m in (self.net_g, self.net_le_dm, self.net_d, self.diffusion) if m is not None]

    def to(self, device) -> "RestorationPipeline":
        for m in self.modules():
            m.to(device)
        return self

    def eval(self) -> "RestorationPipeline":
        for m in self.modules():
            m.eval()
        return self

    @property
    def prior_shape(self) -> Tuple[int, int]:
        """(tokens, channels) of the prior; found once by a tiny forward of the encoder."""
        if self._prior_shape is None:
            if not self.needs_prior:
                raise AttributeError("this pipeline has no prior")
            probe = torch.zeros(1, self.in_channels, 16, 16, device=self.device)
            with torch.no_grad():
                z = self.net_le_dm(probe)
            self._prior_shape = (int(z.shape[1]), int(z.shape[2]))
        return self._prior_shape

    # -------------------------------------------------------------- restoring
    def noise(self, batch: int, generator: Optional[torch.Generator] = None, *, seed: Optional[int] = None) -> Tensor:
        """Initial noise x_T (B, N, C') on the pipeline device (:func:`hidiff.inference.noise.draw_noise`)."""
        return draw_noise((batch, *self.prior_shape), seed, generator=generator, device=self.device)

    def prior(self, lq: Tensor, noise: Optional[Tensor] = None) -> Tensor:
        """z_hat from an already padded or unpadded blurry batch."""
        if not self.needs_prior:
            raise RuntimeError("prior() called on a prior-free pipeline")
        cond = self.net_le_dm(lq)
        if noise is None:
            noise = self.noise(lq.shape[0])
        return self.diffusion.sample(self.net_d, cond, noise.to(cond.device))

    def restore(self, lq: Tensor, *, noise: Optional[Tensor] = None, prior: Optional[Tensor] = None) -> Tensor:
        """Pad, compute the prior (unless given), run net_g, crop back."""
        if lq.dim() != 4 or lq.shape[1] != self.in_channels:
            raise ValueError(f"expected a (B,{self.in_channels},H,W) tensor, got {tuple(lq.shape)}")
        padded, size = pad_to_multiple(lq, self.pad_multiple)
        if self.needs_prior:
            z = prior if prior is not None else self.prior(padded, noise)
            out = self.net_g(padded, z)
        else:
            out = self.net_g(padded)
        return crop(out, size)

    __call__ = restore


class OraclePipeline:
    """Stage 1's restoration: the prior comes from the ground truth, so its numbers are an oracle.

    pad lq and gt -> z = net_le(lq, gt) -> net_g(lq, z) -> crop (docs/quirks.md, quirk 23).
    """

    #: ``restore`` needs ``gt=``; such a pipeline validates a run but cannot deblur a new image
    needs_gt = True
    needs_prior = True

    def __init__(self, net_g: nn.Module, net_le: nn.Module, pad_multiple: int = 8) -> None:
        self.net_g = net_g
        self.net_le = net_le
        self.pad_multiple = int(pad_multiple)

    @property
    def device(self) -> torch.device:
        return next(self.net_g.parameters()).device

    def restore(self, lq: Tensor, *, gt: Optional[Tensor] = None) -> Tensor:
        """Pad both, prior from (lq, gt), run net_g, crop back."""
        if gt is None:
            raise ValueError("stage 1 restores with the ground-truth prior: gt is required")
        lq_p, size = pad_to_multiple(lq, self.pad_multiple)
        gt_p, _ = pad_to_multiple(gt, self.pad_multiple)
        return crop(self.net_g(lq_p, self.net_le(lq_p, gt_p)), size)
