"""``SyntheticBlurDataset``: camera-shake blur synthesised on the fly from sharp photos.

There are no real blurry/sharp pairs offline (docs/architecture.md 3.2), so
this dataset turns any folder of sharp photos into training and validation
pairs with the kernels of :mod:`hidiff.data.blur_kernels`.

Training: for sample ``index`` of epoch ``token``, every choice (crop position,
kernel, noise level, noise, dihedral transform) comes from
``default_rng([seed, token, index])``; photo = ``index % number of photos``, so
``length`` (or the sampler's enlarge ratio) can make an epoch longer than the
photo folder while each repetition still gets its own blur.

Validation/test (a frozen benchmark, chosen so that every image has a fixed
size): the pair of a photo depends only on ``seed`` and the photo's stem
(``key_rng``).  With ``gt_size`` the sharp target is the centred ``gt_size``²
window, otherwise the whole photo minus a ``kernel_size // 2`` border (the part
a valid convolution covers).  Without ``kernel_pool`` and ``kernel_size_min``
(which ``scripts/make_synthetic.py`` does not offer) the items equal the files
that script writes with the same seed, crop, kernel size and noise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from hidiff.data.blur_kernels import check_kernel_size, check_min_kernel_size, noise_range, synthesize_pair
from hidiff.data.blur_kernels import kernel_pool as make_kernel_pool
from hidiff.data.corrupt_skip import SkipCounter, read_or_replace
from hidiff.data.image_io import list_images, read_raw, stored_size, to_rgb_float
from hidiff.data.pair_dataset_base import check_gt_size, check_phase
from hidiff.data.sample_rng import SampleIndex, key_rng, sample_rng, split_index
from hidiff.data.transforms import center_crop, random_crop_box, random_dihedral, to_tensor
from hidiff.errors import ConfigError, DataError
from hidiff.registry import DATASET_REGISTRY


# Decoded photos kept in each process (each loader worker), up to this many bytes.  Decoding a 1.5-MP JPEG and
# converting all of it to float took 67 of the 86 ms of a training sample; the kept photo is cropped first.
PHOTO_CACHE_BYTES = 1 << 30


def sharp_region(photo: np.ndarray, gt_size: Optional[int], kernel_size: int, *, source: str) -> np.ndarray:
    """The centred region whose valid blur gives a ``gt_size``² pair (or the whole photo)."""
    if gt_size is None:
        if min(photo.shape[:2]) < kernel_size:
            raise DataError(f"photo '{source}' ({photo.shape[0]}x{photo.shape[1]}) is smaller than "
                            f"the {kernel_size}x{kernel_size} kernel")
        return photo
    side = gt_size + kernel_size - 1
    if photo.shape[0] < side or photo.shape[1] < side:
        raise DataError(f"photo '{source}' is {photo.shape[0]}x{photo.shape[1]} (HxW); a {gt_size}² pair "
                        f"with a {kernel_size}² kernel needs at least {side}x{side}")
    return center_crop(photo, side, side)


@DATASET_REGISTRY.register()
class SyntheticBlurDataset(Dataset):
    """Blurry/sharp pairs made from a folder of sharp photos.

    Args:
        sharp_root: folder of sharp photos (any size; 8- or 16-bit; each decoded once per process and
            kept while the decoded photos fit in PHOTO_CACHE_BYTES).
        phase: ``'train'`` (random crops, fresh blur per sample) or ``'val'``/``'test'`` (frozen pairs).
        gt_size: crop size; required for training, optional for val/test (see module doc).
        kernel_size: odd PSF side in pixels, at least 7 (31 by default).
        kernel_size_min: draw each kernel on an odd canvas (at least 7) uniform in [kernel_size_min, kernel_size],
            zero-padded to kernel_size (short and long shakes in one set); None = always kernel_size.
        noise_sigma: Gaussian noise σ on [0, 1] images, a number or a ``[min, max]`` range
            drawn uniformly per sample.
        seed: base seed of every draw.
        length: items per epoch in training (default: number of photos); in val/test,
            use only the first ``length`` photos (sorted by file name).
        geometric_augs: training only, one of 8 dihedral transforms per sample.
        skip_corrupt: training only, replace an unreadable photo by the next readable one.
        return_kernel: add the PSF as ``'kernel'`` (k x k float32 tensor) to every item.
        kernel_pool: draw each kernel from a fixed pool of this many camera-shake kernels
            (made from ``kernel_pool_seed``, so train and test sets can share one pool)
            instead of a fresh random trajectory per sample; None = fresh kernels.
        kernel_pool_seed: seed of that pool.
        name: dataset name used in messages.
    """

    def __init__(self, sharp_root: str, phase: str, gt_size: Optional[int] = None, kernel_size: int = 31,
                 noise_sigma: Union[float, Sequence[float]] = (0.0, 0.02), seed: int = 0,
                 length: Optional[int] = None, geometric_augs: bool = True, skip_corrupt: bool = False,
                 return_kernel: bool = False, kernel_pool: Optional[int] = None, kernel_pool_seed: int = 0,
                 kernel_size_min: Optional[int] = None, name: str = "synthetic") -> None:
        self.name = name
        self.phase = check_phase(phase, name)
        self.gt_size = check_gt_size(gt_size, name)
        if self.phase == "train" and self.gt_size is None:
            raise ConfigError(f"dataset '{name}': gt_size is required for training "
                              f"(photos differ in size and must be cropped to batch them)")
        try:
            self.kernel_size = check_kernel_size(kernel_size)
            self.kernel_size_min = check_min_kernel_size(kernel_size_min, self.kernel_size)
            self.noise_sigma = noise_range(noise_sigma)
        except ValueError as exc:
            raise ConfigError(f"dataset '{name}': {exc}") from None
        self.seed = int(seed)
        self.geometric_augs = bool(geometric_augs)
        self.skip_corrupt = bool(skip_corrupt)
        self.return_kernel = bool(return_kernel)
        if kernel_pool is not None and (isinstance(kernel_pool, bool) or not isinstance(kernel_pool, int)
                                        or kernel_pool < 1):
            raise ConfigError(f"dataset '{name}': kernel_pool must be a positive integer or null, got {kernel_pool!r}")
        self.pool = make_kernel_pool(self.kernel_size, kernel_pool, kernel_pool_seed,
                                     self.kernel_size_min) if kernel_pool else None
        self.sharp_root = str(sharp_root)
        if not Path(sharp_root).is_dir():
            raise DataError(f"dataset '{name}': sharp_root '{sharp_root}' does not exist or is not a folder")
        self.paths = list_images(sharp_root)
        stems = [p.stem for p in self.paths]
        if len(set(stems)) != len(stems):
            dup = sorted({s for s in stems if stems.count(s) > 1})
            raise DataError(f"dataset '{name}': photos in '{sharp_root}' share the stems {dup[:5]}")
        if not self.paths:
            raise DataError(f"dataset '{name}': no images in sharp_root '{sharp_root}'")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length <= 0):
            raise ConfigError(f"dataset '{name}': length must be a positive integer or null, got {length!r}")
        if self.phase != "train" and length is not None:
            if length > len(self.paths):
                raise ConfigError(f"dataset '{name}' (phase {phase}): length {length} exceeds the "
                                  f"{len(self.paths)} photos in '{sharp_root}'")
            self.paths = self.paths[:length]
        self.length = length if (self.phase == "train" and length is not None) else len(self.paths)
        self._skips = SkipCounter()
        self._photos: dict = {}
        self._photo_bytes = 0

    @property
    def keys(self) -> list[str]:
        return [p.stem for p in self.paths]

    @property
    def num_skipped(self) -> int:
        return self._skips.count

    def pair_sizes(self, n: Optional[int] = None) -> None:
        """None: each pair is made from one photo, so input and target always share a size (the pair
        datasets' ``pair_sizes`` lets a test run find mismatched files before it starts)."""
        return None

    def size_problems(self) -> list[str]:
        """Training photos too small for one crop with its kernel margin, read from their headers (no decoding):
        found at start, not when the photo is drawn hours later."""
        if self.phase != "train":
            return []
        side = self.gt_size + self.kernel_size - 1
        problems = []
        for path in self.paths:
            hw = stored_size(path)
            if hw is not None and min(hw) < side:
                problems.append(f"photo '{path}' is {hw[0]}x{hw[1]}, smaller than the crop size {self.gt_size} "
                                f"plus the kernel's margin ({side})")
        return problems

    def __len__(self) -> int:
        return self.length

    def _read(self, i: int) -> tuple[np.ndarray, Path]:
        """Photo ``i`` as OpenCV decodes it (BGR/BGRA/gray, 8/16-bit), from this process's cache if kept."""
        path = self.paths[i]
        raw = self._photos.get(path)
        if raw is None:
            raw = read_raw(path)
            to_rgb_float(raw[:1, :1], str(path))  # an unsupported pixel type or channel count fails here
            if self._photo_bytes + raw.nbytes <= PHOTO_CACHE_BYTES:
                self._photos[path] = raw
                self._photo_bytes += raw.nbytes
        return raw, path

    def __getitem__(self, index: SampleIndex) -> dict:
        idx, token = split_index(index)
        n = len(self.paths)
        if self.phase != "train" and idx >= n:
            raise IndexError(f"dataset '{self.name}' (phase {self.phase}) has {n} items, index {idx} requested")
        photo, path = read_or_replace(self._read, idx % n, n, enabled=self.skip_corrupt and self.phase == "train",
                                      counter=self._skips, dataset=self.name, phase=self.phase)
        k = self.kernel_size
        if self.phase == "train":
            rng = sample_rng(self.seed, idx, token)
            side = self.gt_size + k - 1
            top, left = random_crop_box(photo.shape[0], photo.shape[1], side, rng, what=f"photo '{path}'")
            region = to_rgb_float(photo[top:top + side, left:left + side], str(path))
        else:
            rng = key_rng(self.seed, path.stem)
            region = sharp_region(to_rgb_float(photo, str(path)), self.gt_size, k, source=str(path))
        pair = synthesize_pair(region, rng, kernel_size=k, noise_sigma=self.noise_sigma, pool=self.pool,
                               kernel_size_min=self.kernel_size_min)
        lq, gt = pair.blurry.astype(np.float32) / 255.0, pair.sharp.astype(np.float32) / 255.0
        kernel = pair.kernel
        if self.phase == "train" and self.geometric_augs:
            # The same transform of the kernel keeps it the PSF of the transformed pair.
            lq, gt, kernel = random_dihedral([lq, gt, kernel], rng)
        item = {"lq": to_tensor(lq), "gt": to_tensor(gt), "lq_path": f"{path}#synthetic-blur",
                "gt_path": str(path), "key": path.stem}
        if self.return_kernel:
            item["kernel"] = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
        return item
