"""Every shipped option file loads, and its networks equal the official ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hidiff.archs import build_network
from hidiff.config import load_options

OPTIONS = Path(__file__).resolve().parents[1] / "options"
ALL_FILES = sorted(OPTIONS.glob("*.yml"))

# official parameter counts (docs/architecture.md 1.6)
GOPRO = {"g": 25_298_923, "le": 585_688, "le_dm": 558_040, "d": 2_629_937}
REALBLUR = {"g": 22_281_943, "le": 1_533_912, "le_dm": 1_506_264, "d": 394_752}
EXPECTED = {
    "stage1_gopro.yml": ("train/GoPro_S1", GOPRO), "stage2_gopro.yml": ("train/GoPro_S2", GOPRO),
    "stage1_realblur_j.yml": ("train/RealBlur_J_S1", REALBLUR), "stage2_realblur_j.yml": ("train/RealBlur_J_S2", REALBLUR),
    "stage1_realblur_r.yml": ("train/RealBlur_R_S1", REALBLUR), "stage2_realblur_r.yml": ("train/RealBlur_R_S2", REALBLUR),
    "test_gopro.yml": ("test/GoPro", GOPRO), "test_realblur.yml": ("test/RealBlur_J", REALBLUR),
}
REFERENCE_JSON = Path(__file__).resolve().parents[1] / "tests" / "data" / "hidiff_state_dicts.json"


def is_train(path: Path) -> bool:
    return "test" not in path.stem


@pytest.mark.parametrize("path", ALL_FILES, ids=[p.name for p in ALL_FILES])
def test_every_option_file_loads_and_builds(path):
    opt = load_options(path, is_train=is_train(path))
    for suffix, block in opt.networks.items():
        with torch.device("meta"):
            net = build_network(block, f"network_{suffix}")
        assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_configs_match_reference_counts_and_keys(name):
    path = OPTIONS / name
    ref_name, counts = EXPECTED[name]
    opt = load_options(path, is_train=is_train(path))
    reference = json.loads(REFERENCE_JSON.read_text())["configs"][ref_name]["networks"]
    for suffix, block in opt.networks.items():
        with torch.device("meta"):
            net = build_network(block, f"network_{suffix}")
        assert sum(p.numel() for p in net.parameters()) == counts[suffix], (name, suffix)
        ref = reference[f"net_{suffix}"]
        keys = [[k, list(v.shape)] for k, v in net.state_dict().items()]
        assert keys == [[k, list(s)] for k, s in ref["state_dict"]], (name, suffix)
    if name.startswith("test_") or "stage2" in name:
        total = sum(counts[s] for s in ("g", "le_dm", "d"))
        assert total in (28_486_900, 24_182_959)


def test_stage2_diffusion_blocks_select_the_official_implementations():
    gopro = load_options(OPTIONS / "stage2_gopro.yml").diffusion_schedule.build()
    realblur = load_options(OPTIONS / "stage2_realblur_j.yml").diffusion_schedule.build()
    assert (gopro.settings.parameterization, gopro.settings.schedule, gopro.timesteps) == ("eps", "linear", 8)
    assert (realblur.settings.parameterization, realblur.settings.schedule, realblur.timesteps) == \
        ("x0", "sqrt_linear", 16)


def test_run_names_are_distinct_and_the_swintormer_batch_is_the_trained_one():
    """docs/quirks.md 18: the official GoPro stage-2 file was named after RealBlur-J (one run folder for both);
    S11: the official DPDD loader batch was 11 while 9 samples trained."""
    names = {p.name: load_options(p, is_train=is_train(p)).name for p in ALL_FILES}
    assert len(set(names.values())) == len(names), names
    assert names["stage2_gopro.yml"] == "train_HI_Diff_GoPro_S2"
    dpdd = load_options(OPTIONS / "train_swintormer_dpdd.yml", is_train=True)
    assert dpdd.datasets["train"].batch_size_per_gpu == 9
    assert dpdd.train.use_grad_clip and dpdd.train.grad_clip_norm == 0.01
    # S9: test runs load the EMA weights unless told otherwise (the shipped test.py evaluated 'params')
    from hidiff.config.schema import ValOptions
    assert ValOptions().use_ema is True
    assert load_options(OPTIONS / "test_swintormer_dpdd.yml", is_train=False).val.use_ema is True
