"""LPIPS v0.1 (AlexNet or VGG16) computed fully offline.

The ``lpips`` package is built with ``pnet_rand=True`` so that it never asks
torchvision to download a backbone; its linear heads come from its own wheel
(``weights/v0.1/{alex,vgg}.pth``) and the backbone convolutions are then loaded from
hidiff's cache or torchvision's download (``backbones``).  Inputs are RGB images in [0, 1] passed with
``normalize=True``, as the DPDD protocol and the pyiqa calibration do.  The backbones' strided layers
need a minimum image size (``MIN_SIDE``: 31 pixels for AlexNet, 16 for VGG16).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from hidiff.metrics._arrays import check_pair, require_min_side, to_unit_float
from hidiff.metrics.backbones import load_backbone_features

_BACKBONE = {"alex": "alexnet", "vgg": "vgg16"}
#: the shorter side an image needs per backbone (smaller ones leave a feature map of size 0)
MIN_SIDE = {"alex": 31, "vgg": 16}


def build_lpips(net: str = "alex") -> torch.nn.Module:
    """An ``lpips.LPIPS`` module (eval, no grad) with offline backbone weights."""
    if net not in _BACKBONE:
        raise ValueError(f"LPIPS net must be one of {sorted(_BACKBONE)}, got '{net}'")
    features = load_backbone_features(_BACKBONE[net], required=True)
    import lpips  # deferred: heavy, only LPIPS scoring needs it

    with warnings.catch_warnings():  # torchvision's 'pretrained=' deprecation, lpips' chatter
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    feat = features.state_dict()
    # lpips splits features into slice1..slice5 whose children keep their features index.
    backbone = {key: feat[key.split(".", 1)[1]] for key in model.net.state_dict()}
    model.net.load_state_dict(backbone, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=4)
def _cached(net: str, device: str) -> torch.nn.Module:
    return build_lpips(net).to(device)


def _to_tensor(img: np.ndarray, device: str) -> torch.Tensor:
    x = to_unit_float(img).astype(np.float32)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)


def lpips_distance(img1: np.ndarray, img2: np.ndarray, net: str = "alex", device: str = "cpu") -> float:
    """LPIPS distance of two HxWx3 RGB images (uint8, uint16 or float in [0, 1])."""
    a, b = check_pair(img1, img2, f"lpips_{net}")
    if net in MIN_SIDE:
        require_min_side(a, MIN_SIDE[net], f"lpips_{net}", f"LPIPS's {_BACKBONE[net]} backbone")
    model = _cached(net, device)
    with torch.no_grad():
        return float(model(_to_tensor(a, device), _to_tensor(b, device), normalize=True).item())


def lpips_alex(img1: np.ndarray, img2: np.ndarray) -> float:
    """LPIPS v0.1 with the AlexNet backbone (the variant papers report)."""
    return lpips_distance(img1, img2, "alex")


def lpips_vgg(img1: np.ndarray, img2: np.ndarray) -> float:
    """LPIPS v0.1 with the VGG16 backbone."""
    return lpips_distance(img1, img2, "vgg")
