"""scripts/test.py end to end: official-format weights, odd sizes, per-image seeds, reports."""
from __future__ import annotations

import csv
import hashlib
import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import PY, REPO, run_env
from hidiff.archs import build_network
from hidiff.config.yaml_io import load_yaml
from procs import run_checked
from test_trust_testing import write_pairs


@pytest.fixture(scope="module")
def official_run(tmp_path_factory):
    """The GoPro test file with the authors' checkpoint format, on three tiny odd-sized images."""
    tmp = tmp_path_factory.mktemp("official")
    raw = load_yaml(REPO / "options" / "test_gopro.yml")
    torch.manual_seed(0)
    weights = tmp / "pretrained"
    weights.mkdir()
    for suffix in ("g", "le_dm", "d"):
        net = build_network(raw[f"network_{suffix}"])
        torch.save({"params": net.state_dict()}, weights / f"net_{suffix}.pth")  # the authors' file layout
        raw["path"][f"pretrain_network_{suffix}"] = str(weights / f"net_{suffix}.pth")
    write_pairs(tmp / "set", [(13, 21), (17, 9), (24, 32)])
    raw["datasets"] = {"test_1": {"name": "GoPro", "type": "PairedImageIRDataset",
                                  "dataroot_gt": str(tmp / "set" / "target"),
                                  "dataroot_lq": str(tmp / "set" / "input")}}
    raw["path"]["results_root"] = str(tmp / "results")
    raw["val"]["metrics"] = {"psnr": {"type": "psnr_uint8"}}  # ssim_basicsr needs 11x11 images
    opt = tmp / "test.yml"
    opt.write_text(yaml.safe_dump(raw))
    proc = run_checked([PY, "scripts/test.py", "-opt", opt], cwd=REPO, env=run_env(), timeout=600)
    return tmp, opt, proc


def test_outputs_have_the_input_size(official_run):
    tmp, _, _ = official_run
    vis = tmp / "results" / "test_HI_Diff_GoPro" / "pretrained" / "visualization" / "GoPro"
    for f in sorted((tmp / "set" / "input").glob("*.png")):
        out = cv2.imread(str(vis / f.name))
        assert out is not None, f"missing output for {f.name}"
        assert out.shape == cv2.imread(str(f)).shape


def test_reports_name_protocol_variants_seed_and_weights(official_run):
    tmp, _, proc = official_run
    set_dir = tmp / "results" / "test_HI_Diff_GoPro" / "pretrained" / "GoPro"
    rows = list(csv.DictReader(open(set_dir / "metrics.csv")))
    assert [r["name"] for r in rows] == ["img00", "img01", "img02"]
    assert {"psnr_uint8_rgb", "ssim_matlab3d"} <= set(rows[0])
    summary = json.loads((set_dir / "summary.json").read_text())
    assert summary["protocol"] == "gopro"
    meta = summary["meta"]
    assert meta["seed"] == 100 and set(meta["weights"]) == {"g", "le_dm", "d"}
    for s in ("g", "le_dm", "d"):
        f = tmp / "pretrained" / f"net_{s}.pth"
        assert meta["weights"][s] == {"path": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    assert "psnr_uint8_rgb" in proc.stdout  # the summary table is printed


def test_outputs_do_not_depend_on_processing_order(official_run):
    """Per-image seeds: restoring only the last image gives the same bytes as in the full run."""
    tmp, opt, _ = official_run
    solo = tmp / "solo"
    (solo / "input").mkdir(parents=True)
    (solo / "target").mkdir(parents=True)
    for sub in ("input", "target"):
        (solo / sub / "img02.png").write_bytes((tmp / "set" / sub / "img02.png").read_bytes())
    run_checked([PY, "scripts/test.py", "-opt", opt, "-o", f"datasets.test_1.dataroot_gt={solo}/target",
                 "-o", f"datasets.test_1.dataroot_lq={solo}/input", "-o", f"path.results_root={tmp}/solo_res"],
                cwd=REPO, env=run_env(), timeout=600)
    a = (tmp / "results" / "test_HI_Diff_GoPro" / "pretrained" / "visualization" / "GoPro" / "img02.png").read_bytes()
    b = (tmp / "solo_res" / "test_HI_Diff_GoPro" / "pretrained" / "visualization" / "GoPro" / "img02.png").read_bytes()
    assert a == b


def test_missing_weights_are_a_clear_error(tmp_path):
    proc = run_checked([PY, "scripts/test.py", "-opt", "options/test_gopro.yml", "-o",
                        f"path.pretrain_network_g={tmp_path}/nope.pth"],
                       cwd=REPO, env=run_env(), timeout=300, returncode=2)
    assert "nope.pth" in proc.stderr and "not found" in proc.stderr
