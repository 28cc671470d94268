"""benchmarks/side_by_side.py: one training on all threads against trainings side by side, counted in one window."""
from __future__ import annotations

import json

from conftest import PY, REPO, run_env
from procs import run_checked

TINY = ["network_g.dim=8", "network_g.num_blocks=[1,1,1,1]", "network_g.heads=[1,1,1,1]"]


def test_both_phases_train_in_fresh_processes_and_the_report_gives_the_ratio(tmp_path):
    out = tmp_path / "side.json"
    args = [PY, str(REPO / "benchmarks" / "side_by_side.py"), "--batch", "2", "--size", "32", "--seconds", "4",
            "--rounds", "1", "--json", str(out)]
    for item in TINY:
        args += ["-o", item]
    proc = run_checked(args, timeout=300, env=dict(run_env(), OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE"))
    result = json.loads(out.read_text())
    (row,) = result["rounds"]
    assert row["one"]["threads"] == [2] and row["side by side"]["threads"] == [1, 1]
    assert row["one"]["steps"][0] > 0 and min(row["side by side"]["steps"]) > 0
    assert abs(row["ratio"] - row["side by side"]["samples_per_s"] / row["one"]["samples_per_s"]) < 1e-9
    assert row["one"]["samples_per_s"] == row["one"]["steps"][0] * 2 / 4.0
    assert "| round | one training, 2 threads: samples/s | 2 side by side, 1 thread(s) each" in proc.stdout
    assert f"median ratio: {result['median_ratio']:.2f}x" in proc.stdout


def test_bad_arguments_are_refused_before_anything_starts(tmp_path):
    script = str(REPO / "benchmarks" / "side_by_side.py")
    r = run_checked([PY, script, "--jobs", "0"], timeout=60, env=run_env(), returncode=2)
    assert "--jobs: expected an integer >= 1, got 0" in r.stderr
    r = run_checked([PY, script, "--opt", str(tmp_path / "none.yml")], timeout=60, env=run_env(), returncode=2)
    assert f"--opt {tmp_path / 'none.yml'}: file not found" in r.stderr
