"""``hidiff-test`` on a stage-1 run: restored with the ground-truth prior, as validation does, and labelled oracle."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from hidiff.archs import build_network
from hidiff.config import options_from_text
from hidiff.data.image_io import to_uint8
from hidiff.engine.validation import validation_restorer
from hidiff.errors import ConfigError
from hidiff.models import build_model
from hidiff.runners.test_runner import ORACLE_LABEL, run_test

sys.path.insert(0, str(Path(__file__).parent))
from tiny import NET_G, NET_LE  # noqa: E402


def stage1_options(root: Path, self_ensemble: bool = False):
    """A stage-1 option file over two tiny pairs, with saved tiny weights."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(16, 24), (20, 16)]):
        gt = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        for sub, img in (("target", gt), ("input", cv2.GaussianBlur(gt, (5, 5), 1.5))):
            (root / "data" / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "data" / sub / f"img{i:02d}.png"), img)
    torch.manual_seed(0)
    for s, spec in (("g", NET_G), ("le", NET_LE)):
        torch.save({"params": build_network(spec).state_dict()}, root / f"net_{s}.pth")
    raw = {"name": "s1tiny", "model_type": "HI_Diff_S1", "manual_seed": 7,
           "datasets": {"test_1": {"name": "Tiny", "type": "PairedImageIRDataset", "protocol": "gopro",
                                   "dataroot_gt": str(root / "data/target"),
                                   "dataroot_lq": str(root / "data/input")}},
           "network_g": NET_G, "network_le": NET_LE,
           "path": {"pretrain_network_g": str(root / "net_g.pth"), "pretrain_network_le": str(root / "net_le.pth"),
                    "results_root": str(root / "results"), "experiments_root": str(root / "exps")},
           "val": {"save_img": True, "use_ema": False, "self_ensemble": self_ensemble,
                   "metrics": {"psnr": {"type": "psnr_uint8"}}}}
    return options_from_text(yaml.safe_dump(raw), is_train=False)


def validation_outputs(options, root: Path) -> dict:
    """What training validation gives for each image of the set (the oracle restorer)."""
    model = build_model(options)
    for s in ("g", "le"):
        model.trainable[s].load_state_dict(torch.load(root / f"net_{s}.pth")["params"])
    model.eval()
    restore = validation_restorer(model, options.manual_seed, None, options.val.self_ensemble)
    out = {}
    for i in range(2):
        read = lambda sub: torch.from_numpy(cv2.imread(str(root / "data" / sub / f"img{i:02d}.png"))[..., ::-1]
                                            .copy()).permute(2, 0, 1)[None].float() / 255  # noqa: E731
        out[f"img{i:02d}"] = to_uint8(restore(read("input"), read("target"), f"img{i:02d}"))
    return out


@pytest.mark.parametrize("self_ensemble", [False, True])
def test_stage1_is_tested_with_the_validation_oracle_and_labelled_so(tmp_path, caplog, self_ensemble):
    """A stage-1 run crashed after setup (its pipeline has no noise() and needs gt=); now it is restored as
    validation restores it, and the log, the summaries and the metadata say the numbers are an oracle."""
    options = stage1_options(tmp_path, self_ensemble)
    with caplog.at_level(logging.WARNING, logger="hidiff"):
        summaries = run_test(options, device="cpu")
    assert "ORACLE" in caplog.text and "not a deblurring result" in caplog.text
    folder, = (tmp_path / "results" / "s1tiny").iterdir()  # named after the weights' folder
    summary = summaries["Tiny"]
    assert summary["set"] == f"Tiny ({ORACLE_LABEL})"
    assert summary["meta"]["prior"].startswith("ground truth (oracle)")
    assert summary["meta"]["diffusion_steps"] is None and summary["meta"]["seeding"].startswith("none")
    assert ORACLE_LABEL in (folder / "summary.md").read_text()
    assert ORACLE_LABEL in (folder / "Tiny" / "summary.md").read_text()
    assert json.loads((folder / "summary.json").read_text())[0]["set"] == f"Tiny ({ORACLE_LABEL})"
    for key, expected in validation_outputs(options, tmp_path).items():
        written = cv2.imread(str(folder / "visualization" / "Tiny" / f"{key}.png"))[..., ::-1]
        np.testing.assert_array_equal(written, expected)


def test_prior_seeds_of_a_stage1_run_are_refused_before_anything_is_written(tmp_path):
    """The ground-truth prior takes no initial noise: K seeds would be K copies of one image."""
    options = stage1_options(tmp_path)
    for kwargs in ({"prior_seeds": 2}, {"prior_seeds": 2, "std_map": True}):
        with pytest.raises(ConfigError, match="restores with the prior of the ground-truth image"):
            run_test(options, device="cpu", **kwargs)
    assert not (tmp_path / "results").exists()
