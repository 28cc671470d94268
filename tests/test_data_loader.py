"""build_dataloader: worker-count independence, exact resume, val order, prefetchers, errors."""
from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from hidiff.data.loader import build_dataloader, worker_seed
from hidiff.data.paired_dataset import PairedImageDataset
from hidiff.data.prefetch import CPUPrefetcher
from hidiff.data.synthetic_dataset import SyntheticBlurDataset
from hidiff.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for sub in ("lq", "gt"):
        (root / sub).mkdir()
    for i in range(7):
        cv2.imwrite(str(root / "lq" / f"k{i}.png"), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "gt" / f"k{i}.png"), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return root


def batches(loader):
    return [(b["key"], b["lq"], b["gt"]) for b in loader]


def same(a, b):
    return len(a) == len(b) and all(ka == kb and torch.equal(la, lb) and torch.equal(ga, gb)
                                    for (ka, la, ga), (kb, lb, gb) in zip(a, b))


def test_training_batches_identical_with_0_and_2_workers(paired):
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "train", gt_size=12, seed=3)
    runs = []
    for workers in (0, 2):
        loader = build_dataloader(ds, phase="train", batch_size=2, num_workers=workers, seed=11)
        loader.sampler.set_epoch(1)
        runs.append(batches(loader))
    assert len(runs[0]) == 3  # 7 samples, drop_last
    assert same(runs[0], runs[1])


def test_synthetic_training_batches_identical_with_0_and_2_workers(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), np.random.default_rng(i).integers(0, 256, (60, 70, 3), np.uint8))
    ds = SyntheticBlurDataset(str(tmp_path), "train", gt_size=16, kernel_size=9, length=6, seed=2)
    runs = [batches(build_dataloader(ds, phase="train", batch_size=3, num_workers=w, seed=0)) for w in (0, 2)]
    assert len(runs[0]) == 2 and same(runs[0], runs[1])


def test_resume_through_the_loader_gives_the_same_remaining_batches(paired):
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "train", gt_size=12, seed=3)
    ref = build_dataloader(ds, phase="train", batch_size=2, num_workers=2, seed=4, enlarge_ratio=2)
    full = batches(ref)
    assert len(full) == 7
    run = build_dataloader(ds, phase="train", batch_size=2, num_workers=2, seed=4, enlarge_ratio=2)
    it = iter(run)
    first = [next(it) for _ in range(3)]  # workers have read ahead by now
    state = run.sampler.state_dict(consumed=3 * 2)
    del it
    resumed = build_dataloader(ds, phase="train", batch_size=2, num_workers=0, seed=4, enlarge_ratio=2)
    resumed.sampler.load_state_dict(state)
    rest = batches(resumed)
    assert same([(b["key"], b["lq"], b["gt"]) for b in first] + rest, full)


def test_val_loader_batch_one_in_key_order_and_sharded(paired):
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "val")
    keys = [b["key"][0] for b in build_dataloader(ds, phase="val", batch_size=8, num_workers=0, seed=0)]
    assert keys == [f"k{i}" for i in range(7)]
    shard = [b["key"][0] for b in build_dataloader(ds, phase="test", batch_size=8, num_workers=0, seed=0,
                                                  rank=1, world_size=3)]
    assert shard == ["k1", "k4"]


def test_a_val_limit_takes_the_same_images_for_any_world_size(paired):
    # val.max_images was applied to each rank's share: 2 processes validated on twice the images of one
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "val")

    def keys(rank, world):
        loader = build_dataloader(ds, phase="val", batch_size=1, num_workers=0, seed=0, rank=rank,
                                  world_size=world, limit=3)
        return [b["key"][0] for b in loader]

    assert keys(0, 1) == ["k0", "k1", "k2"]
    for world in (2, 3, 4):
        shares = [keys(rank, world) for rank in range(world)]
        assert sorted(k for share in shares for k in share) == ["k0", "k1", "k2"], world


class _Seeds(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor([random.random(), float(np.random.random()), torch.rand(1).item()])


def test_workers_are_seeded_from_seed_rank_worker():
    def draws(seed, rank):
        return [b for b in build_dataloader(_Seeds(), phase="train", batch_size=1, num_workers=2, seed=seed,
                                            rank=rank, world_size=2, drop_last=False)]
    a, b, c = draws(5, 0), draws(5, 0), draws(5, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(c))
    assert len({worker_seed(5, r, w) for r in range(2) for w in range(4)}) == 8


def test_cpu_prefetcher_same_batches_and_errors(paired):
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "train", gt_size=12, seed=3)
    plain = build_dataloader(ds, phase="train", batch_size=2, num_workers=0, seed=1)
    pre = build_dataloader(ds, phase="train", batch_size=2, num_workers=0, seed=1, prefetch="cpu")
    assert isinstance(pre, CPUPrefetcher) and len(pre) == len(plain) and pre.sampler is not None
    assert same(batches(plain), batches(pre))

    class Boom(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            index, _epoch = i  # the training sampler yields (index, epoch)
            if index == 2:
                raise RuntimeError("bad item 2")
            return torch.zeros(1)

    loader = build_dataloader(Boom(), phase="train", batch_size=1, num_workers=0, seed=0, prefetch="cpu",
                              shuffle=False)
    with pytest.raises(RuntimeError, match="bad item 2"):
        list(loader)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_prefetch_without_cuda_is_a_config_error(paired):
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "val")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        build_dataloader(ds, phase="val", batch_size=1, num_workers=0, seed=0, prefetch="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_prefetch_moves_batches_to_gpu(paired):
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "train", gt_size=12, seed=3)
    plain = batches(build_dataloader(ds, phase="train", batch_size=2, num_workers=0, seed=1))
    gpu = list(build_dataloader(ds, phase="train", batch_size=2, num_workers=2, seed=1, prefetch="cuda"))
    assert all(b["lq"].is_cuda and b["gt"].is_cuda for b in gpu)
    assert same(plain, [(b["key"], b["lq"].cpu(), b["gt"].cpu()) for b in gpu])


def test_loader_errors(paired):
    ds = PairedImageDataset(str(paired / "lq"), str(paired / "gt"), "train", gt_size=12)
    with pytest.raises(ConfigError, match="prefetch_mode"):
        build_dataloader(ds, phase="train", batch_size=2, num_workers=0, seed=0, prefetch="gpu")
    with pytest.raises(ConfigError, match="fewer than one batch of 8"):
        build_dataloader(ds, phase="train", batch_size=8, num_workers=0, seed=0)
    assert len(build_dataloader(ds, phase="train", batch_size=8, num_workers=0, seed=0, enlarge_ratio=3)) == 2


def test_whole_images_of_different_sizes_in_one_batch_are_named(tmp_path):
    """gt_size: null with the 90-degree augmentation gave torch's bare 'stack expects each tensor to be equal
    size'; the error now names the samples and their sizes, and what to change."""
    rng = np.random.default_rng(0)
    for role in ("lq", "gt"):
        (tmp_path / role).mkdir()
        for i in range(8):
            cv2.imwrite(str(tmp_path / role / f"{i:03d}.png"), (rng.random((24, 40, 3)) * 255).astype(np.uint8))
    ds = PairedImageDataset(str(tmp_path / "lq"), str(tmp_path / "gt"), phase="train", gt_size=None)
    loader = build_dataloader(ds, phase="train", batch_size=4, num_workers=0, seed=0)
    with pytest.raises(DataError, match=r"a batch of 4 samples of different sizes cannot be stacked \('0\d\d' "
                                        r"(24x40|40x24).*gt_size.*batch_size_per_gpu: 1"):
        for _ in range(2):
            for _batch in loader:
                pass
    square = build_dataloader(ds, phase="train", batch_size=1, num_workers=0, seed=0)
    assert next(iter(square))["gt"].shape[0] == 1
