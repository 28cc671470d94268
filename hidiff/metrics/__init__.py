"""Named metric variants on numpy images, registered in ``METRIC_REGISTRY``.

Every number a report prints names its variant, because "PSNR" and "SSIM" mean
different computations in different papers (docs/protocols.md):

==============  ==============================================================
psnr_uint8      uint8 RGB, peak 255 (MATLAB ``psnr``; BasicSR)   [crop_border, y_channel]
psnr_float      float in [0, data_range]; uint8/uint16 on 0..255/65535 [crop_border, y_channel]
ssim_basicsr    per channel, 11x11 Gaussian, valid region (BasicSR test log) [crop_border, y_channel]
ssim_matlab3d   MATLAB ``ssim`` on RGB: 3-D Gaussian over HxWx3 (GoPro/HIDE papers)
ssim_skimage    skimage defaults, 7x7 uniform window (DPDD protocol)
mae             mean absolute error on [0, 1]
lpips_alex      LPIPS v0.1, AlexNet (offline weights, see lpips_weights)
lpips_vgg       LPIPS v0.1, VGG16
==============  ==============================================================

All take ``(img1, img2, **options)`` HxW(x3) arrays and return a float.  Each carries ``better``
("higher" or "lower"), the direction ``val.metrics.<name>.better`` defaults to.

BasicSR's names are accepted in option files and resolve to the variant they
compute (``BASICSR_ALIASES``): ``calculate_psnr`` is ``psnr_uint8`` (8-bit
images, peak 255) and ``calculate_ssim`` is ``ssim_basicsr`` (BasicSR's own
per-channel SSIM, not the 3-D variant some forks substitute under that name).
"""
from __future__ import annotations

from hidiff.metrics.backbones import load_alexnet_features, load_vgg16_features
from hidiff.metrics.lpips_metric import lpips_alex, lpips_distance, lpips_vgg
from hidiff.metrics.mae import mae
from hidiff.metrics.psnr import psnr_float, psnr_uint8
from hidiff.metrics.ssim_basicsr import ssim_basicsr
from hidiff.metrics.ssim_matlab3d import ssim_matlab3d
from hidiff.metrics.ssim_skimage import ssim_skimage
from hidiff.registry import METRIC_REGISTRY

VARIANTS = {
    "psnr_uint8": psnr_uint8,
    "psnr_float": psnr_float,
    "ssim_basicsr": ssim_basicsr,
    "ssim_matlab3d": ssim_matlab3d,
    "ssim_skimage": ssim_skimage,
    "mae": mae,
    "lpips_alex": lpips_alex,
    "lpips_vgg": lpips_vgg,
}
#: the variants where a lower score is better (errors and distances); every other variant is a similarity
LOWER_IS_BETTER = frozenset({"mae", "lpips_alex", "lpips_vgg"})
for _name, _fn in VARIANTS.items():
    _fn.better = "lower" if _name in LOWER_IS_BETTER else "higher"
    METRIC_REGISTRY.register(_name)(_fn)

BASICSR_ALIASES = {"calculate_psnr": "psnr_uint8", "calculate_ssim": "ssim_basicsr"}
for _alias, _target in BASICSR_ALIASES.items():
    METRIC_REGISTRY.alias(_alias, _target)


def get_metric(name: str):
    """The metric function registered as ``name`` (RegistryError lists the known names)."""
    return METRIC_REGISTRY.get(name)


__all__ = ["BASICSR_ALIASES", "LOWER_IS_BETTER", "METRIC_REGISTRY", "VARIANTS", "get_metric", "load_alexnet_features", "load_vgg16_features",
           "lpips_alex", "lpips_distance", "lpips_vgg", "mae", "psnr_float", "psnr_uint8",
           "ssim_basicsr", "ssim_matlab3d", "ssim_skimage"]
