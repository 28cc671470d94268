"""x8 dihedral self-ensemble."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hidiff.inference.self_ensemble import dihedral, dihedral_inverse, self_ensemble


def test_identity_returns_input_and_pixelwise_fn_is_unchanged():
    x = torch.rand(2, 3, 5, 7)  # H != W
    assert torch.equal(self_ensemble(lambda t: t, x), x)
    fn = lambda t: torch.sigmoid(3 * t) ** 2 + 0.1  # noqa: E731
    torch.testing.assert_close(self_ensemble(fn, x), fn(x), rtol=0, atol=1e-7)


def test_transforms_are_the_8_distinct_dihedral_maps_and_invert():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    images = {tuple(dihedral(x, k).flatten().tolist()) + tuple(dihedral(x, k).shape) for k in range(8)}
    assert len(images) == 8
    for k in range(8):
        assert torch.equal(dihedral_inverse(dihedral(x, k), k), x)


def test_matches_a_numpy_average_for_a_non_equivariant_fn():
    torch.manual_seed(0)
    weight = torch.randn(3, 3, 3, 3, dtype=torch.float64)  # a random conv is not rotation-equivariant
    fn = lambda t: F.conv2d(t, weight, padding=1)  # noqa: E731
    x = torch.rand(1, 3, 6, 9, dtype=torch.float64)
    xn = x[0].numpy()
    outs = []
    for flip in (False, True):
        for k in range(4):
            t = np.rot90(xn[:, :, ::-1] if flip else xn, k, axes=(1, 2)).copy()
            y = fn(torch.from_numpy(t)[None])[0].numpy()
            y = np.rot90(y, -k, axes=(1, 2))
            outs.append(y[:, :, ::-1] if flip else y)
    want = np.mean(outs, axis=0)
    got = self_ensemble(fn, x)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert not np.allclose(got, fn(x)[0].numpy(), atol=1e-3)
