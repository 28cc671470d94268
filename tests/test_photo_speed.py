"""benchmarks/photo_speed.py: the real command on a photo, wall time and peak RSS, with a model folder."""
from __future__ import annotations

import json
import sys

import hidiff
from hidiff.runners.default_model import ENV, PACKAGED
from conftest import REPO, needs_shipped_default_model, run_env
from procs import run_checked


def photo_speed_row(tmp_path, *extra):
    out = tmp_path / "figures.json"
    proc = run_checked([sys.executable, str(REPO / "benchmarks" / "photo_speed.py"), "--size", "200x240",
                        "--threads", "1", "--gopro", "skip", "--json", str(out), *extra], env=run_env(), timeout=600)
    figures = json.loads(out.read_text())
    (row,) = figures["rows"]
    assert figures["size"] == [200, 240] and row["tiles"] == 1  # at most 512x512: one whole image
    assert row["wall_s"] > 0 and 0.05 < row["peak_rss_gib"] < 8
    assert "| default |" in proc.stdout and "200x240 photo" in proc.stdout
    return row


def test_small_photo_through_the_real_command_reports_time_and_memory(tmp_path):
    assert "default_stage2.yml architecture, random weights" in photo_speed_row(tmp_path, "--random-weights")["weights"]


@needs_shipped_default_model()
def test_without_a_model_argument_the_shipped_default_model_is_timed(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert photo_speed_row(tmp_path)["weights"] == f"hidiff's default model ({PACKAGED})"


def test_the_gopro_comparison_uses_the_official_networks(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import photo_speed
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    folder = photo_speed.gopro_release(tmp_path / "gopro")
    r = hidiff.load(folder, device="cpu")
    assert "GoPro" in r.description and sum(p.numel() for p in r.pipeline.net_g.parameters()) > 20e6
    assert photo_speed.tiles_of(3000, 4000) > 200 and photo_speed.tiles_of(480, 704, 256) == 6
