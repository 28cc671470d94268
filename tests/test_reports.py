"""Reports (CSV/JSON/markdown, combined tables, comparison grid) and scripts/evaluate.py end to end."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import skimage.io
from skimage.metrics import peak_signal_noise_ratio

from conftest import run_env
from hidiff.evaluation import evaluate_folders, get_protocol
from hidiff.evaluation.report import weights_info, write_comparison_grid, write_set_report, write_summary_table
from hidiff.utils.hashing import sha256_file
from procs import run_checked

REPO = Path(__file__).resolve().parents[1]
SK_DATA = Path(skimage.__file__).parent / "data"


def _rows():
    return [
        {"name": "a", "psnr_uint8_rgb": 30.0, "ssim_matlab3d": 0.9, "ecc_converged": True},
        {"name": "b", "psnr_uint8_rgb": 32.5, "ssim_matlab3d": 0.8, "ecc_converged": False},
        {"name": "c", "psnr_uint8_rgb": 28.25, "ssim_matlab3d": 0.7, "ecc_converged": True},
    ]


def test_sha256_file_matches_published_vector(tmp_path):
    p = tmp_path / "abc.bin"
    p.write_bytes(b"abc")  # FIPS 180-2 test vector
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert weights_info({"net_g": p}) == {"net_g": {"path": str(p), "sha256": sha256_file(p)}}


def test_set_report_files_exist_and_parse(tmp_path):
    w = tmp_path / "net_g.pth"
    w.write_bytes(b"weights")
    meta = {"set": "GoPro", "protocol": "gopro", "model": "HI-Diff", "seed": 100,
            "inference": {"padding": "reflect x8", "tiling": None, "self_ensemble": False},
            "weights": weights_info({"net_g": w})}
    out = tmp_path / "results" / "GoPro"
    summary = write_set_report(out, _rows(), meta)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.json", "summary.md"]  # no temp files

    with open(out / "metrics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == ["a", "b", "c"]
    assert list(table[0]) == ["name", "psnr_uint8_rgb", "ssim_matlab3d", "ecc_converged"]
    assert float(table[2]["psnr_uint8_rgb"]) == 28.25 and table[1]["ecc_converged"] == "false"

    js = json.loads((out / "summary.json").read_text())
    assert js == json.loads(json.dumps(summary))
    assert js["means"]["psnr_uint8_rgb"] == pytest.approx((30.0 + 32.5 + 28.25) / 3)
    assert js["means"]["ssim_matlab3d"] == pytest.approx(0.8)
    assert js["flags"]["ecc_converged"]["false"] == ["b"]
    assert js["meta"]["weights"]["net_g"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert js["set"] == "GoPro" and js["protocol"] == "gopro" and js["n_images"] == 3

    md = (out / "summary.md").read_text()
    for text in ("psnr_uint8_rgb", "ssim_matlab3d", "30.2500", "HI-Diff", "inference.padding", "seed",
                 "scored unaligned", hashlib.sha256(b"weights").hexdigest()):
        assert text in md


def test_infinite_psnr_stays_strict_json(tmp_path):
    rows = [{"name": "same", "psnr_uint8_rgb": math.inf}]
    write_set_report(tmp_path / "s", rows, {"protocol": "basic"})
    js = json.loads((tmp_path / "s" / "summary.json").read_text())  # would fail on a bare Infinity token
    assert js["means"]["psnr_uint8_rgb"] == "inf" and js["set"] == "s"


def test_combined_table_for_several_sets(tmp_path):
    s1 = write_set_report(tmp_path / "GoPro", _rows()[:2], {"protocol": "gopro"})
    s2 = write_set_report(tmp_path / "RealBlur_J", [{"name": "x", "psnr_realblur_masked": 29.0,
                                                     "ecc_converged": False}], {"protocol": "realblur"})
    for suffix in (".md", ".csv", ".json"):
        write_summary_table(tmp_path / f"all{suffix}", [s1, s2])
    md = (tmp_path / "all.md").read_text().splitlines()
    assert md[0].startswith("| set | protocol | n_images | psnr_uint8_rgb")
    assert any(line.startswith("| RealBlur_J | realblur | 1 |") for line in md)
    with open(tmp_path / "all.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["set"] for r in rows] == ["GoPro", "RealBlur_J"]
    assert float(rows[1]["psnr_realblur_masked"]) == 29.0 and rows[0]["psnr_realblur_masked"] == ""
    assert rows[1]["ecc_converged_false"] == "1"
    assert [s["set"] for s in json.loads((tmp_path / "all.json").read_text())] == ["GoPro", "RealBlur_J"]


def test_comparison_grid_png(tmp_path):
    img = skimage.io.imread(SK_DATA / "chelsea.png")[:120, :160]
    blurry = cv2.GaussianBlur(img, (9, 9), 3)
    grid = write_comparison_grid(tmp_path / "grid.png", blurry, img // 2 + 60, img,
                                 crops=[(10, 20, 30, 40), (60, 100, 50, 50)])
    back = cv2.imread(str(tmp_path / "grid.png"))[..., ::-1]
    assert np.array_equal(back, grid)
    # three 160-px panels and two 4-px gaps; header, full row and two zoomed rows (40->160: x4, 50->160)
    assert grid.shape == (28 + 4 + 120 + 4 + 120 + 4 + 160, 3 * 160 + 2 * 4, 3)
    # the enlarged ground-truth crop holds the crop's pixels repeated 4x (border excepted)
    want = np.repeat(np.repeat(img[10:40, 20:60], 4, axis=0), 4, axis=1)
    inner = (slice(4, -4), slice(4, -4))
    top = 28 + 4 + 120 + 4
    assert np.array_equal(grid[top:top + 120, 2 * 164:2 * 164 + 160][inner], want[inner])


def _folders(tmp_path: Path) -> tuple[Path, Path, Path, dict]:
    rng = np.random.default_rng(0)
    gt_dir, a_dir, b_dir = tmp_path / "gt", tmp_path / "methodA", tmp_path / "methodB"
    truth = {}
    for i, name in enumerate(("coffee.png", "chelsea.png")):
        img = skimage.io.imread(SK_DATA / name)[:48, :64, :3]
        stem = f"im{i}"
        truth[stem] = img
        for d, sigma in ((gt_dir, 0), (a_dir, 4), (b_dir, 12)):
            d.mkdir(exist_ok=True)
            out = img if sigma == 0 else np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)
            cv2.imwrite(str(d / f"{stem}.png"), out[..., ::-1])
    return gt_dir, a_dir, b_dir, truth


def _run(args: list[str], cwd: Path, returncode: int = 0) -> subprocess.CompletedProcess:
    return run_checked([sys.executable, REPO / "scripts" / "evaluate.py", *args], cwd=cwd, env=run_env(),
                       timeout=300, returncode=returncode)


def test_evaluate_script_compares_two_folders(tmp_path):
    gt_dir, a_dir, b_dir, truth = _folders(tmp_path)
    proc = _run(["--protocol", "basic", "--pred", str(a_dir), "--pred", str(b_dir), "--gt", str(gt_dir),
                 "--out", str(tmp_path / "report")], tmp_path)
    lines = proc.stdout.splitlines()
    assert any(line.startswith("| method | protocol | n_images | psnr_uint8_rgb | ssim_basicsr |") for line in lines)
    row_a = next(line for line in lines if line.startswith("| methodA |"))
    assert next(line for line in lines if line.startswith("| methodB |"))

    with open(tmp_path / "report" / "methodA" / "metrics.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    for stem, gt in truth.items():
        pred = cv2.imread(str(a_dir / f"{stem}.png"))[..., ::-1]
        assert float(rows[stem]["psnr_uint8_rgb"]) == pytest.approx(
            peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-9)
    comp = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert [c["method"] for c in comp] == ["methodA", "methodB"]
    assert comp[0]["means"]["psnr_uint8_rgb"] > comp[1]["means"]["psnr_uint8_rgb"]
    assert f"{comp[0]['means']['psnr_uint8_rgb']:.4f}" in row_a
    assert (tmp_path / "report" / "comparison.md").is_file() and (tmp_path / "report" / "comparison.csv").is_file()


def test_evaluate_script_reports_missing_file_without_traceback(tmp_path):
    gt_dir, a_dir, _, _ = _folders(tmp_path)
    (a_dir / "im1.png").unlink()
    proc = _run(["--set", "GoPro", "--no-count-check", "--pred", str(a_dir), "--gt", str(gt_dir)], tmp_path,
                returncode=2)
    assert "error:" in proc.stderr and "im1" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_out_is_checked_before_scoring_and_an_other_comparison_is_kept(tmp_path, capsys):
    from hidiff.cli.evaluate import main

    gt_dir, a_dir, b_dir, _ = _folders(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["--pred", str(a_dir), "--gt", str(gt_dir), "--out", str(tmp_path / "afile")]) == 2
    captured = capsys.readouterr()
    assert "--out" in captured.err and "is not a folder" in captured.err and "methodA" not in captured.out
    report = tmp_path / "report"
    assert main(["--pred", str(a_dir), "--pred", str(b_dir), "--gt", str(gt_dir), "--out", str(report)]) == 0
    first = (report / "comparison.json").read_text()
    assert main(["--pred", str(a_dir), "--pred", str(b_dir), "--gt", str(gt_dir), "--out", str(report)]) == 0
    assert not list(tmp_path.glob("report_archived_*"))       # the same comparison again: replaced in place
    assert main(["--pred", str(b_dir), "--gt", str(gt_dir), "--out", str(report)]) == 0
    assert sorted(p.name for p in report.iterdir()) == ["comparison.csv", "comparison.json", "comparison.md",
                                                        "methodB"]      # no stale methodA beside the table
    (archived,) = tmp_path.glob("report_archived_*")
    assert (archived / "comparison.json").read_text() == first and (archived / "methodA").is_dir()


def test_evaluate_folders_api_matches_protocol(tmp_path):
    gt_dir, a_dir, _, truth = _folders(tmp_path)
    rows, summary = evaluate_folders(a_dir, gt_dir, "gopro")
    proto = get_protocol("gopro")
    assert summary["protocol"] == "gopro" and [r["name"] for r in rows] == ["im0", "im1"]
    pred = cv2.imread(str(a_dir / "im0.png"))[..., ::-1]
    assert rows[0] == {"name": "im0", **proto.score_pair(pred, truth["im0"])}


def test_worker_processes_give_the_same_rows(tmp_path):
    gt_dir, a_dir, _, _ = _folders(tmp_path)
    serial, _ = evaluate_folders(a_dir, gt_dir, "gopro")
    parallel, summary = evaluate_folders(a_dir, gt_dir, "gopro", workers=2)
    assert parallel == serial and summary["n_images"] == 2
