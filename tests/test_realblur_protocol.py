"""RealBlur protocol: ECC alignment, masked PSNR/SSIM, name pairing, count checks, ECC failures."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import skimage.io
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hidiff.errors import DataError
from hidiff.evaluation.folders import evaluate_folders
from hidiff.evaluation.pairing import pair_by_name
from hidiff.evaluation.protocols import get_protocol
from hidiff.evaluation.realblur import align, masked_psnr, masked_ssim, score_realblur

SK_DATA = Path(skimage.__file__).parent / "data"
# A small homography: shear/rotation of ~0.5 degree, a few pixels of shift, mild perspective.
H_TRUE = np.array([[1.0, 0.01, 2.5], [-0.008, 1.0, -1.5], [2e-5, -1e-5, 1.0]], dtype=np.float64)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    img = skimage.io.imread(SK_DATA / "astronaut.png")[..., :3]
    return cv2.resize(img, (192, 160), interpolation=cv2.INTER_AREA)  # W=192, H=160


@pytest.fixture(scope="module")
def misaligned(astronaut) -> np.ndarray:
    """The image as a camera would see it after the known motion H_TRUE (dst(H p) = src(p))."""
    h, w = astronaut.shape[:2]
    return cv2.warpPerspective(astronaut, H_TRUE, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = np.c_[pts, np.ones(len(pts))] @ h.T
    return q[:, :2] / q[:, 2:]


def test_ecc_recovers_a_known_homography(astronaut, misaligned):
    al = align(misaligned.astype(np.float32) / 255, astronaut.astype(np.float32) / 255)
    assert al.converged and al.cc > 0.99
    h, w = astronaut.shape[:2]
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w / 2, h / 2]], dtype=np.float64)
    err = np.abs(_apply(al.warp.astype(np.float64), corners) - _apply(H_TRUE, corners))
    assert err.max() < 0.25, err


def test_aligned_psnr_beats_unaligned(astronaut, misaligned):
    scores = score_realblur(misaligned, astronaut)
    unaligned = peak_signal_noise_ratio(astronaut, misaligned, data_range=255)
    assert scores["ecc_converged"] is True
    assert scores["psnr_realblur_masked"] > unaligned + 8
    assert scores["ssim_realblur_masked"] > structural_similarity(astronaut, misaligned, channel_axis=2)


def test_identical_images_score_perfectly(astronaut):
    scores = get_protocol("realblur").score_pair(astronaut, astronaut)
    assert scores["ecc_converged"] and scores["intensity_scale"] == pytest.approx(1.0)
    assert scores["psnr_realblur_masked"] > 60 or math.isinf(scores["psnr_realblur_masked"])
    assert scores["ssim_realblur_masked"] == pytest.approx(1.0, abs=1e-6)


def test_masked_psnr_is_mse_inside_the_mask():
    rng = np.random.default_rng(0)
    x, z = rng.random((20, 24, 3)), rng.random((20, 24, 3))
    mask = np.zeros((20, 24, 3))
    mask[3:15, 2:20] = 1
    inside = (x - z)[3:15, 2:20]
    want = 10 * math.log10(1 / np.mean(inside ** 2))
    assert masked_psnr(x * mask, z * mask, mask) == pytest.approx(want, abs=1e-10)


def test_masked_ssim_with_full_mask_is_cropped_gaussian_skimage(astronaut, misaligned):
    """With an all-ones mask the protocol's SSIM is skimage's Gaussian SSIM (same 5-px crop)."""
    x, z = astronaut.astype(np.float32) / 255, misaligned.astype(np.float32) / 255
    want = structural_similarity(x, z, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0)
    assert masked_ssim(x, z, np.ones_like(x)) == pytest.approx(want, abs=1e-6)


def test_non_converging_ecc_is_flagged_not_raised():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    flat = np.full((64, 64, 3), 128, np.uint8)
    scores = score_realblur(noise, flat)
    assert scores["ecc_converged"] is False
    assert math.isnan(scores["ecc_cc"])
    assert math.isfinite(scores["psnr_realblur_masked"]) and math.isfinite(scores["ssim_realblur_masked"])


def _write(folder: Path, name: str, img: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / name), img[..., ::-1])


def test_pairing_is_by_name_not_position(tmp_path, astronaut, misaligned):
    # pred names sort differently from gt names by extension and case; pairs must follow the stem.
    _write(tmp_path / "gt", "img10.png", astronaut)
    _write(tmp_path / "gt", "img2.png", misaligned)
    _write(tmp_path / "pred", "img2.png", misaligned)
    _write(tmp_path / "pred", "img10.bmp", astronaut)
    pairs = pair_by_name(tmp_path / "pred", tmp_path / "gt")
    assert [p.name for p in pairs] == ["img2", "img10"]
    assert all(p.pred.stem == p.gt.stem == p.name for p in pairs)
    rows, summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", "basic")
    assert all(math.isinf(r["psnr_uint8_rgb"]) for r in rows)  # every image met its own ground truth


def test_missing_prediction_is_a_clear_error(tmp_path, astronaut):
    for n in ("a", "b", "c"):
        _write(tmp_path / "gt", f"{n}.png", astronaut)
    for n in ("a", "c", "zzz"):
        _write(tmp_path / "pred", f"{n}.png", astronaut)
    with pytest.raises(DataError) as err:
        pair_by_name(tmp_path / "pred", tmp_path / "gt")
    msg = str(err.value)
    assert "no prediction" in msg and ": b" in msg and "no ground truth" in msg and "zzz" in msg


def test_known_set_count_is_checked(tmp_path, astronaut):
    for n in ("a", "b"):
        _write(tmp_path / "gt", f"{n}.png", astronaut)
        _write(tmp_path / "pred", f"{n}.png", astronaut)
    with pytest.raises(DataError, match=r"RealBlur_J should have 980 images but .* has 2"):
        pair_by_name(tmp_path / "pred", tmp_path / "gt", set_name="realblur-j")
    assert len(pair_by_name(tmp_path / "pred", tmp_path / "gt", set_name="RealBlur_J", check_count=False)) == 2


def test_folder_evaluation_reports_ecc_failures(tmp_path, astronaut, misaligned):
    rng = np.random.default_rng(3)
    _write(tmp_path / "gt", "good.png", astronaut)
    _write(tmp_path / "pred", "good.png", misaligned)
    _write(tmp_path / "gt", "flat.png", np.full((64, 64, 3), 90, np.uint8))
    _write(tmp_path / "pred", "flat.png", rng.integers(0, 256, (64, 64, 3)).astype(np.uint8))
    rows, summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", set_name="RealBlur_R", check_count=False)
    assert summary["protocol"] == "realblur"
    by_name = {r["name"]: r for r in rows}
    assert by_name["good"]["ecc_converged"] is True and by_name["flat"]["ecc_converged"] is False
    assert summary["flags"]["ecc_converged"] == {"n_true": 1, "n_false": 1, "false": ["flat"]}
    assert summary["means"]["psnr_realblur_masked"] == pytest.approx(
        np.mean([r["psnr_realblur_masked"] for r in rows]))


def test_intensity_match_is_the_official_float32_expression(astronaut, misaligned):
    """Bit for bit the official ``zs = (np.sum(x*z)/np.sum(z*z))*z`` on float32 images (ECC amplifies ulps)."""
    from hidiff.evaluation.realblur import intensity_match
    x = astronaut.astype(np.float32) / 255
    z = misaligned.astype(np.float32) / 255 * np.float32(0.93)
    official = (np.sum(x * z) / np.sum(z * z)) * z
    ours, scale = intensity_match(z, x)
    assert ours.dtype == np.float32 and np.array_equal(ours, official)
    assert intensity_match(x * np.float32(0.93), x)[1] == pytest.approx(1 / 0.93, rel=1e-5)
