"""Metric variants against independent computations and closed-form cases."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import skimage
import skimage.io
from scipy import ndimage, signal
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize

from hidiff.errors import DataError, RegistryError
from hidiff.metrics import (METRIC_REGISTRY, get_metric, mae, psnr_float, psnr_uint8, ssim_basicsr,
                            ssim_matlab3d, ssim_skimage)

SK_DATA = Path(skimage.__file__).parent / "data"


def _photo(name: str, shape: tuple[int, int]) -> np.ndarray:
    img = skimage.io.imread(SK_DATA / name)[..., :3]
    return np.round(resize(img, shape, anti_aliasing=True) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A real photo (72x96, H != W) and a blurred, noisy copy of it."""
    gt = _photo("astronaut.png", (72, 96))
    rng = np.random.default_rng(0)
    blurred = ndimage.uniform_filter(gt.astype(np.float64), size=(3, 3, 1))
    noisy = np.clip(np.round(blurred + rng.normal(0, 6, gt.shape)), 0, 255).astype(np.uint8)
    return noisy, gt


# ---- independent reference implementations (scipy, full 2-D/3-D kernels) ----

def _gauss_1d() -> np.ndarray:
    g = signal.windows.gaussian(11, std=1.5)
    return g / g.sum()


def _ssim_from_stats(mu1, mu2, e11, e22, e12, L=255.0):
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    s11, s22, s12 = e11 - mu1 ** 2, e22 - mu2 ** 2, e12 - mu1 * mu2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))


def ref_ssim_wang_valid(a: np.ndarray, b: np.ndarray) -> float:
    """Per-channel SSIM with a full 11x11 kernel, 'valid' convolution, channel mean."""
    k = np.outer(_gauss_1d(), _gauss_1d())
    vals = []
    chans = [(a, b)] if a.ndim == 2 else [(a[..., c], b[..., c]) for c in range(a.shape[2])]
    for x, y in chans:
        x, y = x.astype(np.float64), y.astype(np.float64)
        f = lambda z: signal.convolve2d(z, k, mode="valid")  # noqa: E731
        vals.append(_ssim_from_stats(f(x), f(y), f(x * x), f(y * y), f(x * y)).mean())
    return float(np.mean(vals))


def ref_ssim_matlab_3d(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB conventions: 11x11x11 Gaussian over the HxWx3 volume, 'replicate' padding, full-map mean."""
    g = _gauss_1d()
    k = g[:, None, None] * g[None, :, None] * g[None, None, :]
    x, y = a.astype(np.float64), b.astype(np.float64)
    f = lambda z: ndimage.convolve(z, k, mode="nearest")  # noqa: E731  ('nearest' = replicate)
    return float(_ssim_from_stats(f(x), f(y), f(x * x), f(y * y), f(x * y)).mean())


# ---- PSNR ----

def test_psnr_uint8_matches_skimage(pair):
    pred, gt = pair
    assert psnr_uint8(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-10)


def test_psnr_float_matches_skimage(pair):
    pred, gt = (x.astype(np.float64) / 255 for x in pair)
    assert psnr_float(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=1e-10)


def test_psnr_crop_border_matches_cropped_skimage(pair):
    pred, gt = pair
    want = peak_signal_noise_ratio(gt[4:-4, 4:-4], pred[4:-4, 4:-4], data_range=255)
    assert psnr_uint8(pred, gt, crop_border=4) == pytest.approx(want, abs=1e-10)


def test_psnr_y_channel_matches_skimage_ycbcr(pair):
    pred, gt = pair
    y1, y2 = rgb2ycbcr(pred)[..., 0], rgb2ycbcr(gt)[..., 0]  # BT.601, Y in [16, 235]
    assert psnr_uint8(pred, gt, y_channel=True) == pytest.approx(
        peak_signal_noise_ratio(y2, y1, data_range=255), abs=1e-6)
    assert psnr_float(pred / 255.0, gt / 255.0, y_channel=True) == pytest.approx(
        peak_signal_noise_ratio(y2 / 255, y1 / 255, data_range=1.0), abs=1e-6)


def test_psnr_closed_forms():
    rng = np.random.default_rng(1)
    img = rng.integers(20, 200, size=(16, 20, 3)).astype(np.uint8)
    assert psnr_uint8(img, img) == math.inf
    assert psnr_float(img / 255.0, img / 255.0) == math.inf
    assert psnr_uint8(img + 5, img) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)
    f = img / 255.0
    assert psnr_float(f + 0.05, f) == pytest.approx(20 * math.log10(1 / 0.05), abs=1e-9)
    assert psnr_float(img + 5.0, img.astype(float), data_range=255) == pytest.approx(20 * math.log10(51), abs=1e-9)



def test_psnr_float_scores_integer_images_on_their_types_range(pair):
    """Validation passes uint8 images to val.metrics: psnr_float must not read them as [0, 1] floats."""
    pred, gt = pair
    assert psnr_float(pred, gt) == pytest.approx(psnr_uint8(pred, gt), abs=1e-10)
    assert psnr_float(pred, gt, data_range=255) == pytest.approx(psnr_uint8(pred, gt), abs=1e-10)
    assert psnr_float(pred, gt, crop_border=4, y_channel=True) == pytest.approx(
        psnr_uint8(pred, gt, crop_border=4, y_channel=True), abs=1e-9)
    p16, g16 = (x.astype(np.uint16) * 257 for x in pair)
    assert psnr_float(p16, g16) == pytest.approx(psnr_float(p16 / 65535.0, g16 / 65535.0), abs=1e-10)
    with pytest.raises(DataError, match=r"psnr_float: uint8 images .* \[0, 255\]; data_range=2 .*255"):
        psnr_float(pred, gt, data_range=2)
    with pytest.raises(DataError, match="different pixel types \\(uint8 and float64\\)"):
        psnr_float(pred, gt / 255.0)
    with pytest.raises(DataError, match="unsupported pixel type int64"):
        psnr_float(pred.astype(np.int64), gt.astype(np.int64))


def test_val_metric_psnr_float_gives_the_uint8_value_validation_needs(pair):
    from types import SimpleNamespace

    from hidiff.engine.validation import build_metric_fns

    pred, gt = pair
    fns = build_metric_fns({"psnr": SimpleNamespace(type="psnr_float", crop_border=0, test_y_channel=False)})
    assert fns["psnr"](pred, gt) == pytest.approx(psnr_uint8(pred, gt), abs=1e-10)
    a = np.full((64, 64, 3), 100, np.uint8)  # preflight's probe pair
    assert fns["psnr"](a, a + 20) == pytest.approx(20 * math.log10(255 / 20), abs=1e-9)


# ---- SSIM ----

def test_ssim_basicsr_matches_independent_valid_convolution(pair):
    pred, gt = pair
    assert ssim_basicsr(pred, gt) == pytest.approx(ref_ssim_wang_valid(pred, gt), abs=1e-10)


def test_ssim_basicsr_equals_skimage_gaussian_population_variant(pair):
    """skimage's Gaussian SSIM crops the same 5-px border, so it is a second independent route."""
    pred, gt = pair
    want = structural_similarity(gt.astype(np.float64), pred.astype(np.float64), gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255, channel_axis=2)
    assert ssim_basicsr(pred, gt) == pytest.approx(want, abs=1e-8)


def test_ssim_basicsr_y_channel_and_crop(pair):
    pred, gt = pair
    y1, y2 = rgb2ycbcr(pred)[..., 0], rgb2ycbcr(gt)[..., 0]
    assert ssim_basicsr(pred, gt, y_channel=True) == pytest.approx(ref_ssim_wang_valid(y1, y2), abs=1e-6)
    assert ssim_basicsr(pred, gt, crop_border=3) == pytest.approx(
        ref_ssim_wang_valid(pred[3:-3, 3:-3], gt[3:-3, 3:-3]), abs=1e-10)


def test_ssim_matlab3d_matches_independent_3d_filter(pair):
    pred, gt = pair
    assert ssim_matlab3d(pred, gt) == pytest.approx(ref_ssim_matlab_3d(pred, gt), abs=1e-10)


def test_ssim_matlab3d_differs_from_per_channel_average(pair):
    """The 3-D filter mixes colours, so it is a different number from the BasicSR one."""
    pred, gt = pair
    assert abs(ssim_matlab3d(pred, gt) - ssim_basicsr(pred, gt)) > 1e-3


def test_ssim_matlab3d_gray_is_2d_replicate(pair):
    pred, gt = pair[0][..., 1], pair[1][..., 1]
    g = _gauss_1d()
    k = np.outer(g, g)
    x, y = pred.astype(np.float64), gt.astype(np.float64)
    f = lambda z: ndimage.convolve(z, k, mode="nearest")  # noqa: E731
    want = _ssim_from_stats(f(x), f(y), f(x * x), f(y * y), f(x * y)).mean()
    assert ssim_matlab3d(pred, gt) == pytest.approx(want, abs=1e-10)


def test_ssim_identical_is_one_and_symmetric(pair):
    pred, gt = pair
    for fn in (ssim_basicsr, ssim_matlab3d, ssim_skimage):
        assert fn(gt, gt) == pytest.approx(1.0, abs=1e-12)
        assert fn(pred, gt) == pytest.approx(fn(gt, pred), abs=1e-12)
        assert fn(pred, gt) < 0.99


def test_ssim_skimage_is_the_default_7x7_uniform_window(pair):
    pred, gt = pair
    want = structural_similarity(gt / 255.0, pred / 255.0, data_range=1.0, channel_axis=-1, win_size=7,
                                 gaussian_weights=False, use_sample_covariance=True)
    assert ssim_skimage(pred, gt) == pytest.approx(want, abs=1e-12)


# ---- MAE ----

def test_mae_closed_forms():
    rng = np.random.default_rng(2)
    img = rng.integers(20, 200, size=(8, 9, 3)).astype(np.uint8)
    assert mae(img + 5, img) == pytest.approx(5 / 255, abs=1e-15)
    img16 = img.astype(np.uint16) * 257
    assert mae(img16 + 257, img16) == pytest.approx(257 / 65535, abs=1e-15)
    assert mae(img / 255.0, img / 255.0) == 0.0


# ---- input checks and registry ----

def test_bad_inputs_raise_clear_errors(pair):
    pred, gt = pair
    with pytest.raises(DataError, match="differ in shape"):
        psnr_uint8(pred[:-1], gt)
    with pytest.raises(DataError, match="uint8"):
        psnr_uint8(pred.astype(np.float32), gt.astype(np.float32))
    with pytest.raises(DataError, match="uint8"):
        ssim_matlab3d(pred / 255.0, gt / 255.0)
    with pytest.raises(DataError, match="crop_border"):
        psnr_uint8(pred, gt, crop_border=40)
    with pytest.raises(DataError, match="11x11"):
        ssim_basicsr(pred[:8, :8], gt[:8, :8])


def test_every_variant_is_registered_under_a_stable_name(pair):
    names = {"psnr_uint8", "psnr_float", "ssim_basicsr", "ssim_matlab3d", "ssim_skimage", "mae",
             "lpips_alex", "lpips_vgg"}
    assert names <= set(METRIC_REGISTRY.names())
    pred, gt = pair
    assert get_metric("psnr_uint8")(pred, gt) == psnr_uint8(pred, gt)
    with pytest.raises(RegistryError, match="did you mean 'ssim_matlab3d'"):
        get_metric("ssim_matlab3")
