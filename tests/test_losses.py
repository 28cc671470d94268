"""Losses: pixel losses, the VGG16 perceptual loss and its offline weights."""
from __future__ import annotations

import pytest
import torch

from hidiff.errors import ConfigError, HidiffError
from hidiff.losses import CharbonnierLoss, L1Loss, MSELoss, PerceptualLoss, build_loss
from test_lpips_offline import needs_weights


def test_pixel_losses_match_their_definitions():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert torch.isclose(L1Loss(loss_weight=2.0)(a, b), 2 * (a - b).abs().mean())
    assert torch.isclose(MSELoss()(a, b), ((a - b) ** 2).mean())
    assert torch.isclose(CharbonnierLoss(eps=1e-6)(a, b), torch.sqrt((a - b) ** 2 + 1e-6).mean())
    with pytest.raises(ConfigError, match="reduction"):
        L1Loss(reduction="avg")
    with pytest.raises(ConfigError, match="did you mean 'L1Loss'"):
        build_loss({"type": "L1loss"})


def test_perceptual_loss_without_weights_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("HIDIFF_CACHE", str(tmp_path))
    with pytest.raises(HidiffError, match="get_lpips_weights.py"):
        PerceptualLoss()


def test_perceptual_loss_names_the_layer_of_a_typo():
    with pytest.raises(ConfigError, match="did you mean 'relu3_3'"):
        PerceptualLoss(layer_weights={"relu3_4": 1.0}, features=torch.nn.Sequential())


@needs_weights("vgg16")   # skipped without the weights, except under HIDIFF_REQUIRE_LPIPS=1 (make test): fails
def test_perceptual_loss_layers_and_gradients():
    loss = PerceptualLoss()  # relu3_3 of ImageNet VGG16, the offline-converted weights
    assert len(loss.features) == 16 and not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    y = torch.rand(1, 3, 32, 32)
    assert loss(y, y).item() == 0.0
    value = loss(x, y)
    value.backward()
    assert value.item() > 0 and x.grad.abs().sum() > 0
