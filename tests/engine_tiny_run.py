"""Shared by the engine tests: tiny paired data written to disk and a tiny training option file."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage
import yaml

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def write_pairs(root: Path, n: int = 8, size: int = 40) -> tuple[Path, Path]:
    """``n`` sharp/blurry PNG pairs (crops of scikit-image's photos, box-blurred) under ``root``."""
    data = Path(skimage.__file__).parent / "data"
    lq_dir, gt_dir = root / "input", root / "target"
    lq_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = cv2.imread(str(data / PHOTOS[i % len(PHOTOS)]), cv2.IMREAD_COLOR)
        y, x = 30 + 17 * i, 40 + 23 * i
        gt = np.ascontiguousarray(img[y:y + size, x:x + size])
        lq = cv2.blur(gt, (5, 5))
        cv2.imwrite(str(gt_dir / f"im{i:02d}.png"), gt)
        cv2.imwrite(str(lq_dir / f"im{i:02d}.png"), lq)
    return lq_dir, gt_dir


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def tiny_options(root: Path, *, with_val: bool = False, **extra: Any) -> dict:
    """A stage-1 HI-Diff option dict with tiny networks on ``root/data`` (see :func:`write_pairs`).

    ``extra`` is merged recursively, e.g. ``train={'total_iter': 5}``.
    """
    lq, gt = str(root / "data" / "input"), str(root / "data" / "target")
    opt = {
        "name": "tiny", "model_type": "HI_Diff_S1", "num_gpu": 0, "manual_seed": 11,
        "datasets": {"train": {"name": "tinytrain", "type": "PairedImageIRDataset", "dataroot_lq": lq,
                               "dataroot_gt": gt, "gt_size": 32, "batch_size_per_gpu": 2,
                               "num_worker_per_gpu": 0}},
        "network_g": {"type": "Transformer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                      "heads": [1, 1, 2, 2], "embed_dim": 16},
        "network_le": {"type": "latent_encoder_gelu", "in_chans": 6, "embed_dim": 16, "block_num": 1, "stage": 1},
        "path": {"experiments_root": str(root / "experiments")},
        "train": {"total_iter": 20, "optim_total": {"type": "AdamW", "lr": 1e-3}, "use_grad_clip": True,
                  "pixel_opt": {"type": "L1Loss"}},
        "val": {"val_freq": 1000, "metrics": {"psnr": {"type": "psnr_uint8"}}},
        "logger": {"print_freq": 5, "save_checkpoint_freq": 10, "use_tb_logger": False, "keep_last": 0,
                   "pbar": False},
    }
    if with_val:
        opt["datasets"]["val"] = {"name": "tinyval", "type": "PairedImageIRDataset", "dataroot_lq": lq,
                                  "dataroot_gt": gt}
    return _merge(opt, extra)


def tiny_options_text(root: Path, **kwargs: Any) -> str:
    return yaml.safe_dump(tiny_options(root, **kwargs), sort_keys=False)


def write_options(root: Path, **kwargs: Any) -> Path:
    path = root / "tiny.yml"
    path.write_text(tiny_options_text(root, **kwargs))
    return path


def write_stage1_weights(root: Path) -> dict[str, str]:
    """Random tiny stage-1 ``net_g``/``net_le`` files (what a stage-2 run starts from)."""
    import torch

    from hidiff.archs import build_network
    from hidiff.utils.checkpoint import save_network_file

    base = tiny_options(root)
    torch.manual_seed(0)
    out = {}
    for net in ("g", "le"):
        block = dict(base[f"network_{net}"])
        path = root / "stage1" / f"net_{net}.pth"
        save_network_file(path, build_network(block).state_dict())
        out[net] = str(path)
    return out


def tiny_s2_options(root: Path, *, with_val: bool = False, **extra: Any) -> dict:
    """A stage-2 option dict (diffusion prior, frozen net_le) on top of :func:`write_stage1_weights`."""
    weights = write_stage1_weights(root)
    opt = tiny_options(root, with_val=with_val)
    opt.update({
        "name": "tiny_s2", "model_type": "HI_Diff_S2",
        "network_le_dm": {"type": "latent_encoder_gelu", "in_chans": 3, "embed_dim": 16, "block_num": 1,
                          "stage": 2},
        "network_d": {"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                      "block_num": 3, "group": 4},
        "diffusion_schedule": {"timesteps": 3},
    })
    opt["path"]["pretrain_network_g"] = weights["g"]
    opt["path"]["pretrain_network_le"] = weights["le"]
    opt["train"]["pixel_diff_opt"] = {"type": "L1Loss"}
    return _merge(opt, extra)
