"""A tiny real sweep for the sweep tests: stage 1 -> stage 2 with prior, and a prior-free U-Net."""
from __future__ import annotations

from pathlib import Path

import yaml

from engine_tiny_run import tiny_options, write_pairs

LOGGER = {"print_freq": 1, "save_checkpoint_freq": 2, "keep_last": 0}


def _dump(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_tiny_sweep(root: Path, *, seeds: int = 2, extra: dict | None = None) -> tuple[Path, Path]:
    """Data, option files and a sweep file under ``root``; returns (base option file, sweep file)."""
    write_pairs(root / "data", n=3, size=32)
    s1 = tiny_options(root, train={"total_iter": 2}, logger=LOGGER)
    s1["name"] = "unused_stage1"
    s1["datasets"]["train"]["gt_size"] = 16
    _dump(root / "stage1.yml", s1)
    s2 = tiny_options(root, train={"total_iter": 2, "pixel_diff_opt": {"type": "L1Loss"}}, logger=LOGGER)
    s2.update({"name": "unused_stage2", "model_type": "HI_Diff_S2",
               "network_le_dm": {"type": "latent_encoder_gelu", "in_chans": 3, "embed_dim": 16, "block_num": 1,
                                 "stage": 2},
               "network_d": {"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                             "block_num": 3, "group": 4},
               "diffusion_schedule": {"timesteps": 2}})
    s2["datasets"]["train"]["gt_size"] = 16
    base = _dump(root / "stage2.yml", s2)
    plain = tiny_options(root, train={"total_iter": 2}, logger=LOGGER)
    plain.update({"name": "unused_plain", "model_type": "PlainRestoration"})
    plain["network_g"]["use_prior"] = False
    del plain["network_le"]
    plain["datasets"]["train"]["gt_size"] = 16
    _dump(root / "plain.yml", plain)
    test = {"name": "unused_test", "model_type": "PlainRestoration",
            "datasets": {"test_1": {"name": "tinytest", "type": "PairedImageIRDataset",
                                    "dataroot_lq": str(root / "data" / "input"),
                                    "dataroot_gt": str(root / "data" / "target"), "protocol": "gopro"}},
            "network_g": {"type": "Transformer"}, "val": {"score_input": True}}
    _dump(root / "test.yml", test)
    sweep = {"name": "tiny", "seeds": seeds, "baseline": "noprior", "stage1": {"opt": "stage1.yml"},
             "variants": [{"name": "prior", "label": "tiny HI-Diff"},
                          {"name": "noprior", "label": "tiny U-Net, no prior", "opt": "plain.yml"}],
             "eval": {"test": "test.yml"}, **(extra or {})}
    return base, _dump(root / "sweep.yml", sweep)
