"""benchmarks/prior_use.py: swap a trained model's prior and report what the output does (real tiny runs)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from conftest import run_env
from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import options_from_text
from hidiff.engine.trainer import Trainer
from procs import run_checked

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "benchmarks" / "prior_use.py")


def _rows(stdout: str) -> dict:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("prior", "---"):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


def test_prior_swaps_of_stage1_and_stage2_runs(tmp_path):
    write_pairs(tmp_path / "data", n=4, size=32)
    s1 = tiny_options(tmp_path, with_val=True, name="s1", train={"total_iter": 2},
                      logger={"save_checkpoint_freq": 2}, datasets={"train": {"gt_size": 32}})
    Trainer(options_from_text(yaml.safe_dump(s1, sort_keys=False))).fit()
    s2 = dict(s1, name="s2", model_type="HI_Diff_S2",
              network_le_dm={"type": "latent_encoder_gelu", "in_chans": 3, "embed_dim": 16, "block_num": 1,
                             "stage": 2},
              network_d={"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                         "block_num": 3, "group": 4},
              diffusion_schedule={"timesteps": 3})
    s2["path"] = dict(s1["path"], stage1="s1")
    s2["train"] = dict(s1["train"], pixel_diff_opt={"type": "L1Loss"})
    Trainer(options_from_text(yaml.safe_dump(s2, sort_keys=False))).fit()

    runs = tmp_path / "experiments"
    out = run_checked([sys.executable, SCRIPT, "--run", str(runs / "s1"), "--images", "3"], env=run_env(),
                      timeout=300).stdout
    assert f"{runs / 's1'} (HI_Diff_S1), iteration 2: 3 validation images of 'tinyval'" in out
    rows = _rows(out)
    assert list(rows) == ["own", "blurry as sharp", "next image's pair"]
    assert rows["own"][1:] == [0.0, 0.0, 0.0] and rows["next image's pair"][3] > 0
    out = run_checked([sys.executable, SCRIPT, "--run", str(runs / "s2"), "--images", "3"], env=run_env(),
                      timeout=300).stdout
    rows = _rows(out)
    assert list(rows) == ["own", "next image's prior", "other x_T"] and rows["own"][1:] == [0.0, 0.0, 0.0]
    assert rows["other x_T"][3] > 0          # another x_T gives another prior

    bad = subprocess.run([sys.executable, SCRIPT, "--run", str(tmp_path / "data")], capture_output=True,
                         text=True, env=run_env(), timeout=300)
    assert bad.returncode == 2 and "no config.yml (not a hidiff run folder)" in bad.stderr
