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
so folders can be scored in worker processes.  ``describe()`` names every option that
differs from its default, so a report never shows non-default scores under the default's
description; ``min_side`` is the smallest image side the protocol's metrics accept,
checked before anything is scored.  ``uint8_metrics`` marks gopro and basic, whose metrics are defined on
uint8 images: ``hidiff-evaluate`` rounds 16-bit files to 8 bits for them (``round(x / 257)``, as an 8-bit save
would) and says so; ``score_pair`` itself refuses them.
"""
from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from hidiff.errors import ConfigError
from hidiff.evaluation.benchmarks import lookup_set, resembled_set
from hidiff.evaluation.realblur import ECC_GAUSS_FILT_SIZE, ECC_ITERATIONS, SSIM_CROP, score_realblur
from hidiff.metrics import lpips_alex, mae, psnr_float, psnr_uint8, ssim_basicsr, ssim_matlab3d, ssim_skimage
from hidiff.metrics._arrays import check_pair, to_unit_float
from hidiff.metrics.backbones import load_alexnet_features
from hidiff.metrics.lpips_metric import MIN_SIDE as LPIPS_MIN_SIDE
from hidiff.metrics.ssim_skimage import MIN_SIDE as SSIM_SKIMAGE_MIN_SIDE
from hidiff.utils.kwargs import check_kwargs
from hidiff.utils.suggest import did_you_mean

log = logging.getLogger("hidiff")

Scores = dict[str, float | bool]


class Protocol(ABC):
    """Scores one (prediction, ground truth) pair of HxWx3 RGB arrays."""

    name: str = ""
    #: its metrics are defined on uint8 images: hidiff-evaluate rounds 16-bit files to 8 bits for them
    uint8_metrics: bool = False

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

    @property
    def min_side(self) -> tuple[int, str]:
        """(pixels, what needs them): the shorter image side every metric of the protocol accepts."""
        return 1, "scoring"

    def non_default_options(self) -> dict[str, Any]:
        """The options that differ from their defaults, ``{name: value}``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default} if dataclasses.is_dataclass(self) else {}

    def describe(self) -> str:
        """One line saying what is computed (written into reports), with any non-default option."""
        line = (self.__doc__ or self.name).strip().splitlines()[0]
        options = self.non_default_options()
        if options:
            line += " [options: " + ", ".join(f"{k}={v}" for k, v in options.items()) + "]"
        return line


@dataclass(frozen=True)
class GoProProtocol(Protocol):
    """MATLAB psnr/ssim on uint8 RGB, full image (evaluate_gopro_hide.m)."""

    name = "gopro"
    uint8_metrics = True

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
    uint8_metrics = True

    def _suffix(self) -> str:
        return ("_y" if self.y_channel else "") + (f"_crop{self.crop_border}" if self.crop_border else "")

    @property
    def columns(self) -> tuple[str, ...]:
        return ("psnr_uint8_" + ("y" if self.y_channel else "rgb") + (f"_crop{self.crop_border}"
                                                                      if self.crop_border else ""),
                "ssim_basicsr" + self._suffix())

    @property
    def min_side(self) -> tuple[int, str]:
        return 11 + 2 * self.crop_border, "ssim_basicsr's 11x11 window" + (
            f" after cropping {self.crop_border} pixels per edge" if self.crop_border else "")

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

    def describe(self) -> str:
        """The default description, or one that says the ECC settings are not the official ones."""
        options = self.non_default_options()
        if not options:
            return super().describe()
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        official = ", ".join(f"{k}={defaults[k]}" for k in options)
        return (super().describe() + f" -- NOT the official settings (official: {official}); these scores "
                "are not comparable with published RealBlur numbers")

    @property
    def min_side(self) -> tuple[int, str]:
        return 2 * SSIM_CROP + 11, f"the 11-tap Gaussian SSIM window inside a {SSIM_CROP}-pixel border crop"

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

    @property
    def min_side(self) -> tuple[int, str]:
        if self.lpips:
            return LPIPS_MIN_SIDE["alex"], "LPIPS-alex (--no-lpips: 7)"
        return SSIM_SKIMAGE_MIN_SIDE, "ssim_skimage's 7x7 window"

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
    """Protocol name for a test set: gopro, realblur, dpdd for the known sets, else basic (with a warning when
    the name holds a known set's, e.g. ``GoPro_test``: its paper's protocol is then one option away)."""
    known = lookup_set(dataset_name)
    if known:
        return known.protocol
    like = resembled_set(dataset_name)
    if like is not None:
        log.warning("test set '%s' is scored with the basic protocol; its name holds the known set %s's, whose "
                    "papers use the '%s' protocol: name the set '%s' or set its protocol to use that",
                    dataset_name, like.name, like.protocol, like.name)
    return "basic"
