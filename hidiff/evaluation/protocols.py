"""Evaluation protocols: which metric variants score a test set, and under what column names.

==========  ====================================================================
gopro       MATLAB ``psnr`` + ``ssim`` on uint8 RGB (``evaluate_gopro_hide.m``): the
            GoPro/HIDE paper numbers.  Columns psnr_uint8_rgb, ssim_matlab3d.
realblur    intensity match + ECC homography + masked PSNR/SSIM
            (``evaluate_realblur.py``; see ``realblur``).  Columns
            psnr_realblur_masked, ssim_realblur_masked, ecc_converged, ecc_cc,
            intensity_scale.
basic       BasicSR's in-framework PSNR/SSIM (uint8, per-channel SSIM, valid region),
            options crop_border and y_channel.  Columns psnr_uint8_<rgb|y>[_cropN],
            ssim_basicsr[_y][_cropN].
dpdd        Restormer's DPDD protocol (docs/protocols.md) on [0, 1] floats: PSNR,
            skimage SSIM, MAE, LPIPS-alex.  Columns psnr_float_rgb, ssim_skimage,
            mae, lpips_alex.  Accepts 16-bit images.
==========  ====================================================================

``get_protocol(name, **options)`` builds one; ``default_protocol_for(set)`` picks the
protocol of a known test set (GoPro, HIDE -> gopro; RealBlur_J/R -> realblur;
DPDD -> dpdd; anything else -> basic).  Protocol objects are small and picklable,
so folders can be scored in worker processes.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from hidiff.errors import ConfigError
from hidiff.evaluation.benchmarks import lookup_set
from hidiff.evaluation.realblur import ECC_GAUSS_FILT_SIZE, ECC_ITERATIONS, score_realblur
from hidiff.metrics import lpips_alex, mae, psnr_float, psnr_uint8, ssim_basicsr, ssim_matlab3d, ssim_skimage
from hidiff.metrics._arrays import check_pair, to_unit_float
from hidiff.metrics.backbones import load_alexnet_features
from hidiff.utils.kwargs import check_kwargs
from hidiff.utils.suggest import did_you_mean

Scores = dict[str, float | bool]


class Protocol(ABC):
    """Scores one (prediction, ground truth) pair of HxWx3 RGB arrays."""

    name: str = ""

    @property
    @abstractmethod
    def columns(self) -> tuple[str, ...]:
        """Names of the values ``score_pair`` returns, each naming its metric variant."""

    @property
    def headline(self) -> tuple[str, ...]:
        """The columns a paper table would show (PSNR and SSIM)."""
        return self.columns[:2]

    @abstractmethod
    def score_pair(self, pred: np.ndarray, gt: np.ndarray) -> Scores:
        """Scores of one pair; ``pred`` and ``gt`` are HxWx3 RGB (uint8 unless stated)."""

    def describe(self) -> str:
        """One line saying what is computed (written into reports)."""
        return (self.__doc__ or self.name).strip().splitlines()[0]


@dataclass(frozen=True)
class GoProProtocol(Protocol):
    """MATLAB psnr/ssim on uint8 RGB, full image (evaluate_gopro_hide.m)."""

    name = "gopro"

    @property
    def columns(self) -> tuple[str, ...]:
        return ("psnr_uint8_rgb", "ssim_matlab3d")

    def score_pair(self, pred: np.ndarray, gt: np.ndarray) -> Scores:
        return {"psnr_uint8_rgb": psnr_uint8(pred, gt), "ssim_matlab3d": ssim_matlab3d(pred, gt)}


@dataclass(frozen=True)
class BasicProtocol(Protocol):
    """BasicSR PSNR and per-channel SSIM on uint8 images (the training/test log metrics)."""

    crop_border: int = 0
    y_channel: bool = False
    name = "basic"

    def _suffix(self) -> str:
        return ("_y" if self.y_channel else "") + (f"_crop{self.crop_border}" if self.crop_border else "")

    @property
    def columns(self) -> tuple[str, ...]:
        return ("psnr_uint8_" + ("y" if self.y_channel else "rgb") + (f"_crop{self.crop_border}"
                                                                      if self.crop_border else ""),
                "ssim_basicsr" + self._suffix())

    def score_pair(self, pred: np.ndarray, gt: np.ndarray) -> Scores:
        psnr_col, ssim_col = self.columns
        opts = {"crop_border": self.crop_border, "y_channel": self.y_channel}
        return {psnr_col: psnr_uint8(pred, gt, **opts), ssim_col: ssim_basicsr(pred, gt, **opts)}


@dataclass(frozen=True)
class RealBlurProtocol(Protocol):
    """RealBlur: intensity match, ECC homography alignment, masked PSNR/SSIM (evaluate_realblur.py)."""

    ecc_iterations: int = ECC_ITERATIONS
    gauss_filt_size: int = ECC_GAUSS_FILT_SIZE
    name = "realblur"

    @property
    def columns(self) -> tuple[str, ...]:
        return ("psnr_realblur_masked", "ssim_realblur_masked", "ecc_converged", "ecc_cc", "intensity_scale")

    def score_pair(self, pred: np.ndarray, gt: np.ndarray) -> Scores:
        return score_realblur(pred, gt, self.ecc_iterations, self.gauss_filt_size)


@dataclass(frozen=True)
class DPDDProtocol(Protocol):
    """DPDD (Restormer): PSNR, skimage SSIM, MAE, LPIPS-alex on [0, 1] RGB, 8 or 16 bit."""

    lpips: bool = True
    name = "dpdd"

    @property
    def columns(self) -> tuple[str, ...]:
        return ("psnr_float_rgb", "ssim_skimage", "mae") + (("lpips_alex",) if self.lpips else ())

    def score_pair(self, pred: np.ndarray, gt: np.ndarray) -> Scores:
        a, b = check_pair(pred, gt, "dpdd protocol")
        fa, fb = to_unit_float(a), to_unit_float(b)
        out: Scores = {"psnr_float_rgb": psnr_float(fa, fb), "ssim_skimage": ssim_skimage(fa, fb), "mae": mae(fa, fb)}
        if self.lpips:
            out["lpips_alex"] = lpips_alex(fa, fb)
        return out


PROTOCOLS: dict[str, type[Protocol]] = {
    "gopro": GoProProtocol,
    "realblur": RealBlurProtocol,
    "basic": BasicProtocol,
    "dpdd": DPDDProtocol,
}


def get_protocol(name: str | Protocol, **options: Any) -> Protocol:
    """The protocol called ``name`` (case-insensitive) built with ``options``."""
    if isinstance(name, Protocol):
        if options:
            raise ConfigError(f"protocol options {sorted(options)} given with an already built protocol")
        return name
    key = str(name).strip().lower()
    if key not in PROTOCOLS:
        raise ConfigError(f"protocol: unknown protocol '{name}'{did_you_mean(key, PROTOCOLS)}; "
                          f"choose one of {', '.join(PROTOCOLS)}")
    cls = PROTOCOLS[key]
    if options and not dataclasses.fields(cls):
        raise ConfigError(f"protocol '{key}' takes no options, got {', '.join(sorted(options))}")
    check_kwargs(cls, options, f"protocol '{key}'")
    proto = cls(**options)
    if isinstance(proto, DPDDProtocol) and proto.lpips:
        load_alexnet_features(required=True)  # fail now, not after scoring half the set
    return proto


def default_protocol_for(dataset_name: str | None) -> str:
    """Protocol name for a test set: gopro, realblur, dpdd for the known sets, else basic."""
    known = lookup_set(dataset_name)
    return known.protocol if known else "basic"
