"""Every shipped option file loads, and its networks equal the official ones."""
from __future__ import annotations

import json
import math
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


SWINTORMER_JSON = Path(__file__).resolve().parents[1] / "tests" / "data" / "swintormer_state_dict.json"

# Recorded state dicts (the key and shape of every tensor, in order) that networks of shipped option files must
# reproduce, by (file, network suffix):
#   ("official", config): tests/data/hidiff_state_dicts.json, built with the authors' classes from their option
#       files; the Swintormer-prior files copy HI-Diff GoPro's latent encoders and denoiser verbatim
#   ("swintormer", None): tests/data/swintormer_state_dict.json, the published Swintormer (dual-pixel, 6 channels)
#   ("shipped", None): hidiff/pretrained/default/net_<x>.pth, the default model trained from default_stage1/2.yml
RECORDS = {name: {s: ("official", ref) for s in ("g", "le", "le_dm", "d")} for name, (ref, _) in EXPECTED.items()}
RECORDS.update({
    "stage1_swintormer_prior_gopro.yml": {"le": ("official", "train/GoPro_S1")},
    "stage2_swintormer_prior_gopro.yml": {s: ("official", "train/GoPro_S2") for s in ("le", "le_dm", "d")},
    "train_swintormer_dpdd.yml": {"g": ("swintormer", None)},
    "test_swintormer_dpdd.yml": {"g": ("swintormer", None)},
    "default_stage1.yml": {"g": ("shipped", None)},
    "default_stage2.yml": {s: ("shipped", None) for s in ("g", "le_dm", "d")},
})
# Networks that a record covers only in part, with what must hold:
#   "subset": the prior-free ablation is the default model's U-Net without the prior's layers: every tensor of
#       it is one of the recorded ones, same name and shape
#   "input": the published Swintormer for 3-channel input: the same tensors, only the input embedding's differ
VARIANTS = {
    ("default_plain.yml", "g"): ("shipped", None, "subset"),
    ("train_swintormer_gopro.yml", "g"): ("swintormer", None, "input"),
}
# Weights one shipped file's run hands to another's (strict loads), so the networks must be the same: these cover
# the networks no record covers (the demo's) and check the rest once more
HANDOFFS = [
    ("demo_stage1.yml", "demo_stage2.yml", ("g", "le")),                       # path.stage1: demo_stage1
    ("demo_stage2.yml", "demo_test.yml", ("g", "le_dm", "d")),                 # hidiff/runners/demo.py tests it
    ("default_stage1.yml", "default_stage2.yml", ("g", "le")),
    ("stage1_swintormer_prior_gopro.yml", "stage2_swintormer_prior_gopro.yml", ("g", "le")),
    ("train_swintormer_dpdd.yml", "test_swintormer_dpdd.yml", ("g",)),
]


def is_train(path: Path) -> bool:
    return "test" not in path.stem


def built_networks(path: Path) -> dict[str, tuple[list, int]]:
    """network suffix -> ([[key, shape], ...], parameter count) of the networks ``path`` builds (meta device)."""
    opt = load_options(path, is_train=is_train(path))
    out = {}
    for suffix, block in opt.networks.items():
        with torch.device("meta"):
            net = build_network(block, f"network_{suffix}")
        out[suffix] = ([[k, list(v.shape)] for k, v in net.state_dict().items()],
                       sum(p.numel() for p in net.parameters()))
    return out


def size(shapes: list) -> int:
    """The number of elements of a [[key, shape], ...] list."""
    return sum(math.prod(s) for _, s in shapes)


def record(source: str, ref: str | None, suffix: str) -> list | None:
    """The recorded [[key, shape], ...]; None where the record does not ship (a copy without the default model)."""
    if source == "official":
        entries = json.loads(REFERENCE_JSON.read_text())["configs"][ref]["networks"][f"net_{suffix}"]["state_dict"]
    elif source == "swintormer":
        entries = json.loads(SWINTORMER_JSON.read_text())["state_dict"]
    else:
        from hidiff.runners.default_model import PACKAGED
        if not (PACKAGED / f"net_{suffix}.pth").is_file():
            return None
        sd = torch.load(PACKAGED / f"net_{suffix}.pth", map_location="cpu", weights_only=True)["params"]
        entries = [(k, v.shape) for k, v in sd.items()]
    return [[k, list(s)] for k, s in entries]


@pytest.mark.parametrize("path", ALL_FILES, ids=[p.name for p in ALL_FILES])
def test_every_option_file_loads_and_builds(path):
    """Each network equals its record where one exists (its parameter count = the record's sum of tensor sizes),
    or the record's variant, and equals the network of the file it hands weights to or takes them from."""
    built = built_networks(path)
    checked = set()
    for suffix, (shapes, params) in built.items():
        if suffix in RECORDS.get(path.name, {}):
            want = record(*RECORDS[path.name][suffix], suffix)
            if want is not None:
                assert params == size(want), (path.name, suffix, params, size(want))
                assert shapes == want, (path.name, suffix)
                checked.add(suffix)
        if (path.name, suffix) in VARIANTS:
            source, ref, how = VARIANTS[path.name, suffix]
            want = record(source, ref, suffix)
            if want is not None:
                recorded = dict((k, s) for k, s in want)
                if how == "subset":
                    assert all(recorded.get(k) == s for k, s in shapes), (path.name, suffix)
                    assert 0 < len(shapes) < len(want) and params == size(shapes) < size(want), (path.name, suffix)
                else:
                    assert [k for k, _ in shapes] == [k for k, _ in want], (path.name, suffix)
                    differ = [k for (k, s), (_, w) in zip(shapes, want) if s != w]
                    assert differ and all(k.startswith("patch_embed.") for k in differ), (path.name, suffix, differ)
                    # its count: the record's, less the recorded input embedding's tensors, plus the built ones
                    assert params == size(want) - size([kw for kw in want if kw[0] in differ]) + \
                        size([ks for ks in shapes if ks[0] in differ]), (path.name, suffix)
                checked.add(suffix)
    for giver, taker, suffixes in HANDOFFS:
        if path.name in (giver, taker):
            other = built_networks(OPTIONS / (taker if path.name == giver else giver))
            for suffix in suffixes:
                assert built[suffix] == other[suffix], (giver, taker, suffix)
                checked.add(suffix)
    unchecked = sorted(set(built) - checked)
    assert not unchecked or all(RECORDS.get(path.name, {}).get(s, ("",))[0] == "shipped" for s in unchecked), \
        f"{path.name}: networks {unchecked} have no record, variant or handoff to compare with: add one"


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
