"""The one restoration path: padding, explicit noise, per-image seeds."""
from __future__ import annotations

import pytest
import torch

from hidiff.inference.noise import image_seed
from hidiff.inference.pipeline import RestorationPipeline
from hidiff.utils.padding import crop, mirror_pad, pad_to_multiple
from tiny import tiny_diffusion, tiny_networks


def make_noise(shape, seed: int) -> torch.Tensor:
    """x_T drawn on the CPU from ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    nets = tiny_networks()
    return RestorationPipeline(nets["g"], net_le_dm=nets["le_dm"], net_d=nets["d"],
                               diffusion=tiny_diffusion()).eval()


@pytest.mark.parametrize("h, w", [(1, 1), (3, 5), (4, 4), (13, 21), (8, 16), (17, 9)])
def test_any_size_comes_back_at_its_size(pipeline, h, w):
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        y = pipeline.restore(x, noise=pipeline.noise(1, torch.Generator().manual_seed(1)))
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (2, 3), (5, 4), (9, 9)])
def test_mirror_padding_never_fails_and_reflects(h, w):
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    p, size = pad_to_multiple(x, 8)
    assert p.shape[-2] % 8 == 0 and p.shape[-1] % 8 == 0
    torch.testing.assert_close(crop(p, size), x)
    if h > 1 and w > 1:  # first padded row/col mirror the last-but-one
        torch.testing.assert_close(p[..., h, :w], x[..., h - 2, :])
        torch.testing.assert_close(p[..., :h, w], x[..., :, w - 2])


def test_restore_equals_the_explicit_composition(pipeline):
    x = torch.rand(2, 3, 12, 20)
    noise = pipeline.noise(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = pipeline.restore(x, noise=noise)
        padded = mirror_pad(x, 4, 4)
        z = pipeline.diffusion.sample(pipeline.net_d, pipeline.net_le_dm(padded), noise)
        want = pipeline.net_g(padded, z)[..., :12, :20]
    torch.testing.assert_close(got, want)


def test_noise_controls_the_prior_and_is_reproducible(pipeline):
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a = pipeline.restore(x, noise=make_noise((1, 16, 64), 5))
        b = pipeline.restore(x, noise=make_noise((1, 16, 64), 5))
        c = pipeline.restore(x, noise=make_noise((1, 16, 64), 6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert pipeline.prior_shape == (16, 64)


def test_image_seed_is_stable_and_distinct():
    assert image_seed("GOPR0384_11_00_000001", 100) == image_seed("GOPR0384_11_00_000001", 100)
    assert image_seed("a", 100) != image_seed("b", 100)
    assert image_seed("a", 100) != image_seed("a", 101)
    assert 0 <= image_seed("a", 0) < 2 ** 63


def test_prior_free_pipeline():
    from hidiff.archs import build_network
    net = build_network({"type": "Transformer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                         "heads": [1, 1, 2, 2], "use_prior": False})
    p = RestorationPipeline(net)
    assert not p.needs_prior
    with torch.no_grad():
        assert p.restore(torch.rand(1, 3, 11, 6)).shape == (1, 3, 11, 6)
    with pytest.raises(ValueError, match="given together"):
        RestorationPipeline(net, net_le_dm=net)
