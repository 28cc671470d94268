"""Evaluation checks: DPDD scene means, image counts, the dual-pixel input view, up-front pairing and sizes,
non-default protocol settings, metric minimum sizes."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from hidiff.archs import build_network
from hidiff.config import options_from_text
from hidiff.config.yaml_io import load_yaml
from hidiff.errors import DataError
from hidiff.evaluation.protocols import DPDDProtocol, RealBlurProtocol, get_protocol
from hidiff.evaluation.report import summary_table_markdown

VIEWS = ("inputL", "inputR", "inputC", "target")


def write_dpdd(root: Path, n: int = 4, side: int = 48, views=VIEWS, labels: bool = True) -> Path:
    """A DPDD-like test split: 16-bit views of a smooth image, each blurred differently."""
    rng = np.random.default_rng(0)
    test = root / "DPDD" / "test"
    for i in range(1, n + 1):
        sharp = cv2.GaussianBlur(rng.random((side, side, 3)), (0, 0), 2)
        for v in views:
            img = sharp if v == "target" else cv2.GaussianBlur(sharp, (0, 0), 1 + "LRC".index(v[-1]))
            (test / v).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(test / v / f"img{i}.png"), np.round(img * 65535).astype(np.uint16))
    if labels:
        np.save(test / "indoor_labels.npy", np.array([1, 2]))
        np.save(test / "outdoor_labels.npy", np.arange(3, n + 1))
    return root / "DPDD"


def dpdd_options(root: Path, data: Path, overrides=()):
    raw = load_yaml(REPO / "options" / "test_swintormer_dpdd.yml")
    raw["network_g"].update(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1])
    weights = root / "release" / "net_g.pth"
    if not weights.exists():
        weights.parent.mkdir()
        torch.manual_seed(0)
        torch.save({"params_ema": build_network(raw["network_g"]).state_dict()}, weights)
    raw["path"].update(pretrain_network_g=str(weights), results_root=str(root / "results"))
    raw["datasets"]["test_1"]["dataroot"] = str(data)
    raw["val"].pop("tile")
    raw["val"].update(window_size=16, score_input=True, comparison_grid=True, save_img=False)
    return options_from_text(yaml.safe_dump(raw), list(overrides), is_train=False)


def run_dpdd(root: Path, data: Path, overrides=(), limit=None):
    from hidiff.runners.test_runner import run_test

    summaries = run_test(dpdd_options(root, data, overrides), device="cpu", limit=limit)
    set_dir = root / "results" / "test_Swintormer_DPDD" / "release" / "DPDD"
    rows = list(csv.DictReader(open(set_dir / "metrics.csv")))
    return summaries["DPDD"], rows, set_dir


@pytest.fixture(scope="module")
def dpdd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpdd")
    data = write_dpdd(root)
    summary, rows, set_dir = run_dpdd(root, data)
    return root, data, summary, rows, set_dir


# ---- DPDD indoor/outdoor means (docs/protocols.md, dpdd) ----

def test_test_runner_reports_indoor_and_outdoor_means(dpdd_run):
    _, _, summary, rows, set_dir = dpdd_run
    by = {r["name"]: float(r["psnr_float_rgb"]) for r in rows}
    scenes = summary["scenes"]
    assert list(scenes) == ["indoor", "outdoor"] and scenes["indoor"]["n_images"] == 2
    assert scenes["indoor"]["means"]["psnr_float_rgb"] == pytest.approx((by["img1"] + by["img2"]) / 2)
    assert scenes["outdoor"]["means"]["psnr_float_rgb"] == pytest.approx((by["img3"] + by["img4"]) / 2)
    assert json.loads((set_dir / "summary.json").read_text())["scenes"]["outdoor"]["n_images"] == 2
    assert "indoor (2)" in (set_dir / "summary.md").read_text()
    table = summary_table_markdown([summary])  # what hidiff-test prints
    assert "| DPDD (indoor) |" in table and "| DPDD (outdoor) |" in table


def test_missing_scene_labels_give_the_combined_mean_and_say_so(tmp_path, caplog):
    data = write_dpdd(tmp_path, n=2, labels=False)
    with caplog.at_level(logging.WARNING, logger="hidiff"):
        summary, _, set_dir = run_dpdd(tmp_path, data, ["val.comparison_grid=false", "val.score_input=false"])
    assert "scenes" not in summary and "indoor_labels.npy" in summary["scenes_missing"]
    assert "no indoor/outdoor means" in caplog.text
    assert "no per-scene means" in summary_table_markdown([summary])
    assert "no per-scene means" in (set_dir / "summary.md").read_text()


def test_evaluate_dpdd_reports_scene_means(tmp_path, capsys):
    from hidiff.cli.evaluate import main

    data = write_dpdd(tmp_path, n=3)
    gt = data / "test" / "target"
    assert main(["--protocol", "dpdd", "--no-lpips", "--pred", str(data / "test" / "inputC"), "--gt", str(gt),
                 "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| inputC (indoor) |" in out and "| inputC (outdoor) |" in out
    summary = json.loads((tmp_path / "rep" / "inputC" / "summary.json").read_text())
    assert summary["scenes"]["indoor"]["n_images"] == 2 and summary["scenes"]["outdoor"]["n_images"] == 1


# ---- a known test set's image count ----

def test_test_runner_marks_a_known_set_with_another_count_incomplete(dpdd_run, caplog, tmp_path):
    _, _, summary, _, set_dir = dpdd_run
    assert (summary["complete"], summary["expected_images"], summary["found_images"]) == (False, 76, 4)
    assert json.loads((set_dir / "summary.json").read_text())["complete"] is False
    table = summary_table_markdown([summary])
    assert "| complete |" in table.splitlines()[0] and "| false |" in table and "**incomplete**: 4 of the 76" in table


def test_test_runner_warns_about_the_count_before_restoring(tmp_path, caplog):
    from hidiff.runners.test_runner import _count_check

    with caplog.at_level(logging.WARNING, logger="hidiff"):
        assert _count_check("test_1", "GoPro", 3, None) == {"complete": False, "expected_images": 1111,
                                                            "found_images": 3}
    assert "GoPro should have 1111 images but 3 were found" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hidiff"):
        assert _count_check("test_1", "GoPro", 1111, 5)["complete"] is False   # --limit: a subset, no warning
        assert _count_check("test_1", "GoPro", 1111, None)["complete"] is True
        assert _count_check("test_1", "Tiny", 3, None) == {}
    assert caplog.text == ""


# ---- the dual-pixel input: the combined view, or the view used, named ----

def test_input_columns_and_grid_use_the_combined_view(dpdd_run):
    _, data, summary, rows, set_dir = dpdd_run
    gt = cv2.imread(str(data / "test" / "target" / "img1.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    c = cv2.imread(str(data / "test" / "inputC" / "img1.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    want = DPDDProtocol(lpips=False).score_pair(c, gt)["psnr_float_rgb"]
    assert float(rows[0]["input_psnr_float_rgb"]) == pytest.approx(want, abs=1e-9)
    assert summary["meta"]["input_view"] == "inputC"
    assert (set_dir / "comparison_img1.png").is_file()


def test_without_input_c_the_view_used_is_named(tmp_path):
    data = write_dpdd(tmp_path, n=2, views=("inputL", "inputR", "target"))
    summary, rows, _ = run_dpdd(tmp_path, data)
    gt = cv2.imread(str(data / "test" / "target" / "img1.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    r = cv2.imread(str(data / "test" / "inputR" / "img1.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]  # RL order
    assert not any(k.startswith("input_") for k in rows[0])
    assert float(rows[0]["inputR_psnr_float_rgb"]) == pytest.approx(
        DPDDProtocol(lpips=False).score_pair(r, gt)["psnr_float_rgb"], abs=1e-9)
    assert summary["meta"]["input_view"].startswith("inputR (one dual-pixel view")


# ---- hidiff-evaluate: every folder paired and size-checked before scoring ----

def _folders(root: Path, n: int = 3, side: int = 32) -> Path:
    rng = np.random.default_rng(1)
    for sub in ("gt", "a", "b"):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / sub / f"im{i}.png"), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return root


@pytest.fixture
def counted(monkeypatch):
    import hidiff.evaluation.folders as folders

    calls = []
    real = folders.score_image_pair
    monkeypatch.setattr(folders, "score_image_pair", lambda *a: calls.append(a) or real(*a))
    return calls


def test_a_missing_file_in_a_later_folder_stops_before_scoring(tmp_path, counted):
    from hidiff.evaluation.compare import compare_folders

    root = _folders(tmp_path)
    (root / "b" / "im2.png").unlink()
    with pytest.raises(DataError, match=r"1 ground-truth image\(s\) .* no prediction .* '.*b': im2"):
        compare_folders([root / "a", root / "b"], root / "gt", "basic")
    assert counted == []


def test_a_mis_sized_file_in_a_later_folder_stops_before_scoring(tmp_path, counted):
    from hidiff.evaluation.compare import compare_folders

    root = _folders(tmp_path)
    cv2.imwrite(str(root / "b" / "im1.png"), np.zeros((30, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"'.*b/im1.png' is 32x30 but its ground truth '.*gt/im1.png' is 32x32"):
        compare_folders([root / "a", root / "b"], root / "gt", "basic")
    assert counted == []


# ---- minimum image sizes ----

def test_metrics_refuse_images_below_their_minimum_size():
    from hidiff.metrics import lpips_alex, ssim_skimage

    small = np.zeros((6, 20, 3), np.uint8)
    with pytest.raises(DataError, match=r"ssim_skimage: a 6x20 \(HxW\) image is too small; .* at least 7x7"):
        ssim_skimage(small, small)
    tiny = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(DataError, match=r"lpips_alex: a 16x16 .* too small; .*alexnet.* at least 31x31"):
        lpips_alex(tiny, tiny)


def test_evaluate_dpdd_on_small_images_names_the_image_and_the_minimum(tmp_path, counted):
    from hidiff.evaluation.compare import compare_folders

    root = _folders(tmp_path, side=16)
    with pytest.raises(DataError, match=r"3 image\(s\) are smaller than 31x31 .*dpdd protocol .*LPIPS-alex"
                                        r".*'.*gt/im0.png' is 16x16"):
        compare_folders([root / "a"], root / "gt", "dpdd")
    six = _folders(tmp_path / "six", side=6)
    with pytest.raises(DataError, match=r"smaller than 7x7 .*ssim_skimage's 7x7 window.*'.*gt/im0.png' is 6x6"):
        compare_folders([six / "a"], six / "gt", get_protocol("dpdd", lpips=False))
    assert counted == []


def test_test_runner_small_dpdd_image_is_a_clear_error(tmp_path):
    from hidiff.runners.test_runner import run_test

    data = write_dpdd(tmp_path, n=1, side=16)
    with pytest.raises(DataError, match=r"DPDD/img1 \('.*target/img1.png'\) is 16x16 \(WxH\); the dpdd protocol "
                                        r"needs at least 31x31 pixels"):
        run_test(dpdd_options(tmp_path, data), device="cpu")
    assert not (tmp_path / "results" / "test_Swintormer_DPDD" / "release").exists()


# ---- non-default protocol settings are named ----

def test_realblur_non_default_ecc_settings_are_named():
    default = RealBlurProtocol().describe()
    assert "options" not in default and "NOT" not in default
    d = get_protocol("realblur", ecc_iterations=50).describe()
    assert "ecc_iterations=50" in d and "NOT the official settings (official: ecc_iterations=100)" in d
    assert "gauss_filt_size=3" in get_protocol("realblur", gauss_filt_size=3).describe()


# ---- CharbonnierLoss: the docstring states the maths ----

def test_charbonnier_docstring_states_the_eps_convention():
    from hidiff.losses import CharbonnierLoss

    doc = CharbonnierLoss.__doc__
    assert "sqrt((x - y)^2 + eps)" in doc and "eps^2" not in doc
    a, b = torch.zeros(4), torch.zeros(4)
    assert CharbonnierLoss(eps=1e-4)(a, b).item() == pytest.approx(1e-2)  # sqrt(eps), not eps


def test_a_set_named_like_a_benchmark_is_warned_about_its_basic_protocol(caplog):
    """'GoPro_test' or 'RealBlur-J test' silently got the basic protocol, and its report could read like the
    paper's figure."""
    from hidiff.evaluation.protocols import default_protocol_for

    with caplog.at_level("WARNING", logger="hidiff"):
        assert default_protocol_for("GoPro") == "gopro" and not caplog.records
        assert default_protocol_for("GoPro_test") == "basic"
        assert default_protocol_for("RealBlur-J test") == "basic"
        assert default_protocol_for("my_photos") == "basic"
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert "'GoPro_test' is scored with the basic protocol" in said[0] and "'gopro' protocol" in said[0]
    assert "RealBlur_J" in said[1] or "RealBlur-J" in said[1], said[1]
