"""hidiff-evaluate on awkward inputs: a report folder overlapping an input folder, 16-bit images under the uint8
protocols, gray results for colour ground truth, out-of-range numbers."""
from __future__ import annotations

import json
import os
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, run_env
from hidiff.cli.evaluate import main
from hidiff.errors import ConfigError, DataError
from hidiff.evaluation.compare import compare_folders, write_comparison
from hidiff.evaluation.folders import evaluate_folders
from hidiff.evaluation.protocols import get_protocol
from procs import run_checked


def make_folders(root, n: int = 2, side: int = 64):
    """gt/, a/, b/ of 8-bit colour PNGs; a and b are noisy copies of gt."""
    rng = np.random.default_rng(0)
    dirs = {k: root / k for k in ("gt", "a", "b")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for i in range(n):
        gt = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (0, 0), 2)
        cv2.imwrite(str(dirs["gt"] / f"im{i}.png"), gt)
        for k, sigma in (("a", 4), ("b", 12)):
            noisy = np.clip(gt + rng.normal(0, sigma, gt.shape), 0, 255).round().astype(np.uint8)
            cv2.imwrite(str(dirs[k] / f"im{i}.png"), noisy)
    return dirs


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- --out must not be, hold or lie inside a --pred or --gt folder ----

def test_out_equal_to_a_pred_folder_is_refused_in_a_subprocess(tmp_path):
    d = make_folders(tmp_path)
    before = tree(tmp_path)
    proc = run_checked([sys.executable, REPO / "scripts" / "evaluate.py", "--pred", str(d["a"]), "--pred",
                        str(d["b"]), "--gt", str(d["gt"]), "--out", str(d["a"])], cwd=tmp_path, env=run_env(),
                       timeout=300, returncode=2)
    assert f"--out '{d['a']}' is the same folder as --pred folder '{d['a']}'" in proc.stderr
    assert proc.stdout == "" and tree(tmp_path) == before


@pytest.mark.parametrize("where", ["inside_gt", "inside_pred", "holds_pred", "link_to_pred"])
def test_out_overlapping_an_input_folder_is_refused_before_scoring(tmp_path, capsys, where):
    d = make_folders(tmp_path / "data")
    out, expected = {"inside_gt": (d["gt"] / "report", "lies inside --gt folder"),
                     "inside_pred": (d["b"] / "r" / "report", "lies inside --pred folder"),
                     "holds_pred": (tmp_path / "data", "contains --pred folder"),
                     "link_to_pred": (tmp_path / "link", "is the same folder as --pred folder")}[where]
    if where == "link_to_pred":
        os.symlink(d["b"], out)
    before = tree(tmp_path)
    assert main(["--pred", str(d["a"]), "--pred", str(d["b"]), "--gt", str(d["gt"]), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"--out '{out}' {expected}" in captured.err and captured.out == ""
    assert tree(tmp_path) == before


def test_a_later_comparison_never_moves_the_prediction_images(tmp_path):
    """The library call refuses too, so archiving an old comparison can never move a folder holding inputs."""
    d = make_folders(tmp_path)
    results = compare_folders([d["a"], d["b"]], d["gt"], "basic")
    with pytest.raises(ConfigError, match=r"report folder '.*a' is the same folder as result folder '.*a'"):
        write_comparison(d["a"], results)
    with pytest.raises(ConfigError, match=r"report folder '.*gt/r' lies inside ground-truth folder '.*gt'"):
        write_comparison(d["gt"] / "r", results)
    assert tree(d["a"]) == ["im0.png", "im1.png"] and not (d["gt"] / "r").exists()
    assert not list(tmp_path.glob("*_archived_*"))


def test_a_report_folder_beside_the_inputs_still_works(tmp_path, capsys):
    d = make_folders(tmp_path)
    assert main(["--pred", str(d["a"]), "--gt", str(d["gt"]), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "a" / "metrics.csv").is_file()


# ---- 16-bit images under the uint8 protocols ----

@pytest.mark.parametrize("protocol", ["basic", "gopro"])
def test_16bit_images_are_rounded_to_8_bits_as_an_8bit_save_would(tmp_path, caplog, protocol):
    d = make_folders(tmp_path)
    deep, saved8 = tmp_path / "deep", tmp_path / "saved8"
    deep.mkdir()
    saved8.mkdir()
    rng = np.random.default_rng(1)
    for f in sorted(d["a"].iterdir()):
        x = np.clip(cv2.imread(str(f)).astype(np.int64) * 257 + rng.integers(-128, 129, (64, 64, 3)), 0, 65535)
        cv2.imwrite(str(deep / f.name), x.astype(np.uint16))
        cv2.imwrite(str(saved8 / f.name), np.rint(x / 257).astype(np.uint8))   # what an 8-bit save writes
    out = tmp_path / "report"
    assert main(["--protocol", protocol, "--pred", str(deep), "--gt", str(d["gt"]), "--out", str(out)]) == 0
    said = [r.getMessage() for r in caplog.records if "rounded to 8 bits" in r.getMessage()]
    assert len(said) == 1 and str(deep / "im0.png") in said[0]
    summary = json.loads((out / "deep" / "summary.json").read_text())
    assert "2 16-bit image file(s) rounded to 8 bits, round(x/257)" in summary["protocol_description"]
    rows, plain = evaluate_folders(saved8, d["gt"], protocol)
    assert summary["means"] == plain["means"] and "rounded" not in plain["protocol_description"]
    # a 16-bit ground truth is rounded the same way
    rows16, s16 = evaluate_folders(d["a"], deep, protocol)
    assert "2 16-bit image file(s)" in s16["protocol_description"] and len(rows16) == 2


def test_the_float_protocols_still_score_16_bits_as_they_are(tmp_path):
    d = make_folders(tmp_path)
    deep = tmp_path / "deep"
    deep.mkdir()
    for f in sorted(d["a"].iterdir()):
        cv2.imwrite(str(deep / f.name), cv2.imread(str(f)).astype(np.uint16) * 257 + 100)
    _, summary = evaluate_folders(deep, d["gt"], get_protocol("dpdd", lpips=False))
    assert "rounded" not in summary["protocol_description"]
    _, eight = evaluate_folders(d["a"], d["gt"], get_protocol("dpdd", lpips=False))
    assert summary["means"]["psnr_float_rgb"] != eight["means"]["psnr_float_rgb"]


# ---- a gray result for a colour ground truth ----

def test_gray_against_colour_is_refused_naming_both_files_before_scoring(tmp_path, capsys):
    d = make_folders(tmp_path)
    # folder a: its im1 is corrupt, so scoring a would fail on it; the channel check of b must come first
    data = (d["a"] / "im1.png").read_bytes()
    (d["a"] / "im1.png").write_bytes(data[:60])
    cv2.imwrite(str(d["b"] / "im0.png"), cv2.imread(str(d["b"] / "im0.png"), cv2.IMREAD_GRAYSCALE))
    out = tmp_path / "report"
    assert main(["--pred", str(d["a"]), "--pred", str(d["b"]), "--gt", str(d["gt"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"'{d['b'] / 'im0.png'}' is gray but its ground truth '{d['gt'] / 'im0.png'}' is colour" in err
            and "nothing was scored" in err and "cannot decode" not in err)
    assert not out.exists()
    # the single-folder API refuses the reverse as well
    cv2.imwrite(str(d["gt"] / "im1.png"), cv2.imread(str(d["gt"] / "im1.png"), cv2.IMREAD_GRAYSCALE))
    with pytest.raises(DataError, match=r"'.*b/im1.png' is colour but its ground truth '.*gt/im1.png' is gray"):
        evaluate_folders(d["b"], d["gt"], "basic")


# ---- numbers out of range are usage errors at parse time ----

@pytest.mark.parametrize("flag,value,expected", [("--workers", "0", "expected a positive integer (>= 1), got 0"),
                                                 ("--workers", "-2", "expected a positive integer (>= 1), got -2"),
                                                 ("--crop-border", "-5", "expected an integer >= 0, got -5")])
def test_out_of_range_numbers_are_refused_at_parse(tmp_path, capsys, flag, value, expected):
    d = make_folders(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--pred", str(d["a"]), "--gt", str(d["gt"]), "--out", str(tmp_path / "r"), flag, value])
    assert exc.value.code == 2 and f"argument {flag}: {expected}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
