"""Synthetic blur with kernels drawn over a range of canvas sizes (``kernel_size_min``)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hidiff.config import load_options
from hidiff.data.blur_kernels import (kernel_pool, random_canvas_kernel, random_kernel,
                                      synthesize_pair)
from hidiff.data.synthetic_dataset import SyntheticBlurDataset
from hidiff.errors import ConfigError
from test_data_blur import kernel_centroid


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), (rng.random((80, 90, 3)) * 255).astype(np.uint8))
    return tmp_path


def _support(kernel: np.ndarray) -> int:
    """Side of the smallest centred square holding every non-zero tap."""
    rows, cols = np.nonzero(kernel)
    c = kernel.shape[0] // 2
    return 2 * int(max(np.abs(rows - c).max(), np.abs(cols - c).max())) + 1


def test_canvas_kernels_are_padded_centred_and_cover_the_range():
    supports = set()
    for seed in range(40):
        k, _ = random_canvas_kernel(21, 9, np.random.default_rng(seed))
        assert k.shape == (21, 21) and k.min() >= 0 and abs(k.sum() - 1) < 1e-9
        cy, cx = kernel_centroid(k)
        assert abs(cy - 10) < 1e-6 and abs(cx - 10) < 1e-6
        supports.add(_support(k))
    assert min(supports) <= 11 and max(supports) >= 19   # short and long shakes both occur


def test_without_a_range_nothing_changes():
    a, _ = random_canvas_kernel(15, None, np.random.default_rng(3))
    b, _ = random_canvas_kernel(15, 15, np.random.default_rng(3))
    c, _ = random_kernel(15, np.random.default_rng(3))
    assert np.array_equal(a, c) and np.array_equal(b, c)
    sharp = np.random.default_rng(1).random((40, 40, 3))
    p = synthesize_pair(sharp, np.random.default_rng(5), kernel_size=15, noise_sigma=0.01)
    q = synthesize_pair(sharp, np.random.default_rng(5), kernel_size=15, noise_sigma=0.01, kernel_size_min=None)
    assert np.array_equal(p.blurry, q.blurry) and np.array_equal(p.kernel, q.kernel)


def test_pool_kernels_get_their_own_canvas_and_the_plain_pool_is_unchanged():
    plain = kernel_pool(21, 3, seed=2)
    for j, (k, _) in enumerate(plain):
        assert np.array_equal(k, random_kernel(21, np.random.default_rng([2, 7919, j]))[0])
    ranged = [k for k, _ in kernel_pool(21, 8, seed=2, min_size=9)]
    assert all(k.shape == (21, 21) and abs(k.sum() - 1) < 1e-9 for k in ranged)
    assert len({_support(k) for k in ranged}) > 1


def test_dataset_draws_canvas_per_sample_with_fixed_shapes(photos):
    ds = SyntheticBlurDataset(str(photos), "train", gt_size=32, kernel_size=21, kernel_size_min=9,
                              noise_sigma=[0.0, 0.02], seed=4, length=12, return_kernel=True)
    items = [ds[(i, 0)] for i in range(12)]
    assert all(it["lq"].shape == (3, 32, 32) and it["kernel"].shape == (21, 21) for it in items)
    assert len({_support(it["kernel"].numpy()) for it in items}) > 1
    again = ds[(3, 0)]
    assert torch.equal(again["lq"], items[3]["lq"]) and torch.equal(again["kernel"], items[3]["kernel"])


@pytest.mark.parametrize("value", [8, 1, 23, True])
def test_bad_range_is_a_config_error(photos, value):
    with pytest.raises(ConfigError, match="kernel_size_min"):
        SyntheticBlurDataset(str(photos), "val", kernel_size=21, kernel_size_min=value)


def test_option_file_key_is_checked_at_load(tmp_path):
    opt = tmp_path / "o.yml"
    opt.write_text("name: x\nmodel_type: HI_Diff_S1\nnum_gpu: 0\n"
                   "datasets:\n  train:\n    name: t\n    type: SyntheticBlurDataset\n    sharp_root: .\n"
                   "    gt_size: 16\n    kernel_size_min: 0\n    batch_size_per_gpu: 1\n"
                   "network_g: {type: Transformer}\nnetwork_le: {type: latent_encoder_gelu}\n"
                   "train: {total_iter: 1, optim_total: {type: Adam, lr: 1e-3}, pixel_opt: {type: L1Loss}}\n")
    with pytest.raises(ConfigError, match="kernel_size_min"):
        load_options(str(opt))
