"""Camera-shake kernels and blurring: kernel properties, determinism, valid convolution, noise."""
from __future__ import annotations


import numpy as np
import pytest

from hidiff.data.blur_kernels import blur_image, convolve_valid, random_kernel, synthesize_pair, trajectory_to_psf


def kernel_centroid(kernel: np.ndarray) -> tuple[float, float]:
    """(row, col) centre of mass of a kernel."""
    k = np.asarray(kernel, dtype=np.float64)
    rows, cols = np.indices(k.shape)
    total = k.sum()
    return float((rows * k).sum() / total), float((cols * k).sum() / total)


@pytest.mark.parametrize("size", [15, 31])
def test_kernel_properties(size):
    lengths, exposures = [], set()
    for seed in range(40):
        k, params = random_kernel(size, np.random.default_rng(seed))
        assert k.shape == (size, size) and k.dtype == np.float64
        assert (k >= 0).all()
        assert abs(k.sum() - 1.0) < 1e-12
        cy, cx = kernel_centroid(k)
        assert abs(cy - (size - 1) / 2) < 1e-9 and abs(cx - (size - 1) / 2) < 1e-9
        assert 10 <= params.length <= 1.8 * size
        assert 0 <= params.anxiety <= 0.005 and 0 <= params.centripetal <= 0.7
        assert 0 <= params.big_shake_prob <= 0.2 and 0 <= params.gaussian_shake <= 10
        lengths.append(params.length)
        exposures.add(params.exposure)
        assert (k > 0).sum() > 3  # a trajectory, not a single pixel
    assert exposures == {0.25, 0.5, 1.0}
    assert max(lengths) - min(lengths) > size / 2


def test_kernels_are_deterministic_per_seed():
    a, _ = random_kernel(31, np.random.default_rng([7, 1, 2]))
    b, _ = random_kernel(31, np.random.default_rng([7, 1, 2]))
    c, _ = random_kernel(31, np.random.default_rng([7, 1, 3]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_psf_of_a_straight_path_is_a_centred_line():
    path = np.linspace(-5, 5, 2001) + 0j  # horizontal, 10 px long
    k = trajectory_to_psf(path, 15, 1.0)
    rows = np.nonzero(k.sum(axis=1))[0]
    cols = np.nonzero(k.sum(axis=0))[0]
    assert list(rows) == [7] and cols.min() == 2 and cols.max() == 12
    long = trajectory_to_psf(np.linspace(-40, 40, 2001) + 0j, 15, 1.0)  # longer than the canvas: shrunk
    assert long[7].sum() == pytest.approx(1.0) and long[7, 0] > 0 and long[7, 14] > 0


def test_valid_convolution_matches_direct_sum():
    rng = np.random.default_rng(3)
    img = rng.random((23, 19, 3))
    k = rng.random((5, 5))
    k /= k.sum()
    out = convolve_valid(img, k)
    assert out.shape == (19, 15, 3)
    ref = np.zeros_like(out)
    for y in range(19):
        for x in range(15):
            for i in range(5):
                for j in range(5):  # convolution: the kernel is flipped against the image
                    ref[y, x] += k[i, j] * img[y + 4 - i, x + 4 - j]
    np.testing.assert_allclose(out, ref, atol=1e-12)


def test_shifted_delta_kernel_shifts_image():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    k = np.zeros((5, 5))
    k[2, 3] = 1.0  # one pixel right of centre: out[y, x] = img[y + 2, x + 2 - 1]
    out = blur_image(img, k, rng, 0.0)
    np.testing.assert_array_equal(out, img[2:18, 1:17])


def test_noise_level_and_quantisation():
    flat = np.full((140, 140, 3), 0.5)
    k = np.zeros((3, 3))
    k[1, 1] = 1
    out = blur_image(flat, k, np.random.default_rng(0), 0.02)
    assert out.dtype == np.uint8 and out.shape == (138, 138, 3)
    assert abs(out.std() / 255.0 - 0.02) < 0.002
    assert abs(out.mean() / 255.0 - 0.5) < 0.002


def test_synthesize_pair_shapes_and_alignment():
    rng = np.random.default_rng(5)
    sharp = rng.integers(0, 256, (64 + 30, 80 + 30, 3), dtype=np.uint8)
    first = synthesize_pair(sharp, np.random.default_rng(9))
    blurry, target, kernel = first.blurry, first.sharp, first.kernel
    assert blurry.shape == target.shape == (64, 80, 3) and blurry.dtype == target.dtype == np.uint8
    np.testing.assert_array_equal(target, sharp[15:-15, 15:-15])
    again = synthesize_pair(sharp, np.random.default_rng(9))
    assert np.array_equal(again.blurry, blurry) and np.array_equal(again.kernel, kernel)
    pair = synthesize_pair(sharp, np.random.default_rng(9), noise_sigma=0.0)
    expected = np.clip(np.rint(convolve_valid(sharp, pair.kernel) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pair.blurry, expected)
    with pytest.raises(ValueError, match="odd"):
        synthesize_pair(sharp, rng, kernel_size=30)
