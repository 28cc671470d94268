"""The synthetic dataset's optional fixed kernel pool (used by the demo)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from hidiff.data.blur_kernels import kernel_pool
from hidiff.data.synthetic_dataset import SyntheticBlurDataset
from hidiff.errors import ConfigError


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), (rng.random((60, 70, 3)) * 255).astype(np.uint8))
    return tmp_path


def test_pool_is_deterministic_and_valid():
    a, b = kernel_pool(15, 5, seed=3), kernel_pool(15, 5, seed=3)
    for (ka, _), (kb, _) in zip(a, b):
        assert np.array_equal(ka, kb)
        assert ka.shape == (15, 15) and ka.min() >= 0 and abs(ka.sum() - 1) < 1e-5
    assert not np.array_equal(a[0][0], kernel_pool(15, 5, seed=4)[0][0])


def test_every_sample_uses_a_pool_kernel_shared_by_train_and_test(photos):
    pool = [k for k, _ in kernel_pool(15, 4, seed=9)]
    train = SyntheticBlurDataset(sharp_root=str(photos), phase="train", gt_size=24, kernel_size=15, seed=1,
                                 geometric_augs=False, kernel_pool=4, kernel_pool_seed=9, return_kernel=True)
    test = SyntheticBlurDataset(sharp_root=str(photos), phase="test", kernel_size=15, seed=2,
                                kernel_pool=4, kernel_pool_seed=9, return_kernel=True)
    for ds in (train, test):
        for i in range(len(ds)):
            k = ds[i]["kernel"].numpy()
            assert any(np.allclose(k, p) for p in pool)


def test_bad_pool_size_is_a_config_error(photos):
    with pytest.raises(ConfigError, match="kernel_pool must be a positive integer"):
        SyntheticBlurDataset(sharp_root=str(photos), phase="test", kernel_pool=0)
