"""The smallest kernel the camera-shake generator can draw (7x7) is enforced everywhere a size is given.

Sizes 3 and 5 passed every check ("odd integer >= 3") but the path length is drawn in [10, 1.8·size] pixels,
an empty range below 7: numpy's "high - low < 0", naming nothing, at the first-sample check (kernel_size) or
in a loader worker mid-training (kernel_size_min).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from conftest import REPO, run_env
from engine_tiny_run import tiny_options
from hidiff.config import options_from_text
from hidiff.data.blur_kernels import (MIN_KERNEL_SIZE, random_canvas_kernel, random_kernel, synthesize_pair,
                                      trajectory_to_psf)
from hidiff.data.synthetic_dataset import SyntheticBlurDataset
from hidiff.data.synthetic_set import freeze_synthetic_set
from hidiff.errors import ConfigError


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "sharp"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.png"), (rng.random((60, 70, 3)) * 255).astype(np.uint8))
    return folder


@pytest.mark.parametrize("size", [3, 5])
def test_small_canvases_are_refused_by_name(size):
    with pytest.raises(ValueError, match=f"kernel_size must be an odd integer >= 7, got {size}"):
        random_kernel(size, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"kernel_size_min must be an odd integer in \[7, kernel_size=21\]"):
        random_canvas_kernel(21, size, np.random.default_rng(0))
    with pytest.raises(ValueError, match="kernel_size_min"):
        synthesize_pair(np.zeros((40, 40, 3)), np.random.default_rng(0), kernel_size=21, kernel_size_min=size)


def test_the_smallest_size_draws_kernels():
    assert MIN_KERNEL_SIZE == 7
    for seed in range(20):
        k, params = random_kernel(7, np.random.default_rng(seed))
        assert k.shape == (7, 7) and abs(k.sum() - 1) < 1e-12 and 10 <= params.length <= 1.8 * 7
    # splatting a given path still works on any odd canvas of 3 or more
    assert trajectory_to_psf(np.linspace(-1, 1, 50) + 0j, 3).shape == (3, 3)


def test_kernels_of_allowed_sizes_are_unchanged():
    """The shipped default model's data and the frozen benchmark depend on these draws, bit for bit."""
    h = hashlib.sha256()
    for size in (7, 9, 31, 41):
        for seed in range(3):
            h.update(random_kernel(size, np.random.default_rng([seed, size]))[0].tobytes())
    for seed in range(4):
        h.update(random_canvas_kernel(41, 7, np.random.default_rng(seed))[0].tobytes())
    assert h.hexdigest() == "948260cc3fdfc9682e6d4b124f5eb79e3e85049c0143e78440eede2267ff8def"


@pytest.mark.parametrize("kwargs, key", [({"kernel_size": 5}, "kernel_size"),
                                         ({"kernel_size": 21, "kernel_size_min": 3}, "kernel_size_min"),
                                         ({"kernel_size": 21, "kernel_size_min": 5}, "kernel_size_min")])
def test_the_dataset_refuses_them_when_built(photos, kwargs, key):
    with pytest.raises(ConfigError, match=f"dataset 'synthetic': {key} must be an odd integer"):
        SyntheticBlurDataset(str(photos), "train", gt_size=16, **kwargs)


@pytest.mark.parametrize("kwargs, expected", [
    ({"kernel_size": 5}, "datasets.train.kernel_size: kernel_size must be an odd integer >= 7, got 5"),
    ({"kernel_size": 3}, "datasets.train.kernel_size: kernel_size must be an odd integer >= 7, got 3"),
    ({"kernel_size": 21, "kernel_size_min": 5},
     "datasets.train.kernel_size_min: kernel_size_min must be an odd integer in [7, kernel_size=21]"),
    ({"kernel_size": 21, "kernel_size_min": 3},
     "datasets.train.kernel_size_min: kernel_size_min must be an odd integer in [7, kernel_size=21]"),
])
def test_an_option_file_with_them_fails_at_load(tmp_path, photos, kwargs, expected):
    opt = tiny_options(tmp_path)
    opt["datasets"]["train"] = {"name": "syn", "type": "SyntheticBlurDataset", "sharp_root": str(photos),
                                "gt_size": 16, "batch_size_per_gpu": 1, **kwargs}
    with pytest.raises(ConfigError) as err:
        options_from_text(yaml.safe_dump(opt, sort_keys=False))
    assert expected in str(err.value), err.value


def test_a_frozen_set_refuses_them_before_writing(tmp_path, photos):
    with pytest.raises(ValueError, match="kernel_size must be an odd integer >= 7, got 5"):
        freeze_synthetic_set(photos, tmp_path / "out", kernel_size=5, log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_make_synthetic_script_refuses_them_before_writing(tmp_path, photos):
    out = tmp_path / "set"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic.py"), "--sharp", str(photos),
                           "--out", str(out), "--kernel-size", "5"], env=run_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "kernel_size must be an odd integer >= 7, got 5" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
