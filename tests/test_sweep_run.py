"""A tiny real sweep end to end: stage 1 -> stage 2 and a prior-free U-Net, 2 seeds, killed and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import PY, REPO, run_env

from procs import explain, run_checked
from sweep_tiny import write_tiny_sweep

from hidiff.sweep.report import metrics_csv

pytestmark = pytest.mark.slow


def _sweep(base, sweep_file, jobs):
    return [PY, str(REPO / "scripts" / "sweep.py"), "-opt", str(base), "--sweep", str(sweep_file), "--jobs",
            str(jobs), "--resamples", "2000"]


def test_sweep_runs_resumes_after_a_kill_and_reuses_finished_runs(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=2)
    folder = tmp_path / "experiments" / "sweeps" / "tiny"
    first = tmp_path / "experiments" / "tiny_stage1_s0"
    # 1) start the sweep one run at a time and kill it (with its trainer) once the first run has finished
    log = tmp_path / "first_sweep.log"  # a file, not a pipe: a pipe nobody reads can fill up and stall the run
    with log.open("w") as sink:
        proc = subprocess.Popen(_sweep(base, sweep_file, 1), cwd=tmp_path, env=run_env(),
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    record = folder / "runs" / "tiny_stage1_s0.json"
    try:
        deadline = time.time() + 300
        while not record.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert record.is_file(), explain(proc.args, proc.poll(), "", log.read_text(), "the first run never finished")
        time.sleep(1.0)   # let the next run get going before the kill
    finally:  # the sweep with its trainer, also after a failed assertion
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    weights = first / "models" / "net_g_latest.pth"
    before = (weights.stat().st_mtime_ns, json.loads(record.read_text())["weights_sha256"])
    assert not (folder / "results.md").exists()

    # 2) the same command again: the finished run is reused, the rest trained, evaluated and compared
    done = run_checked(_sweep(base, sweep_file, 2), cwd=tmp_path, env=run_env(), timeout=600)
    assert "reuse tiny_stage1_s0" in done.stdout and "start train tiny_stage1_s0" not in done.stdout
    assert (weights.stat().st_mtime_ns, json.loads(record.read_text())["weights_sha256"]) == before
    for run in ("tiny_prior_s0", "tiny_prior_s1", "tiny_noprior_s0", "tiny_noprior_s1"):
        rec = json.loads((folder / "runs" / f"{run}.json").read_text())
        assert set(rec["weights_sha256"]) == ({"g", "le_dm", "d"} if "_prior" in run else {"g"})
        assert (folder / "options" / f"{run}.yml").is_file()
        assert metrics_csv(folder, run, "tinytest").is_file()
    prior = json.loads((folder / "runs" / "tiny_prior_s1.json").read_text())
    stage1 = json.loads((folder / "runs" / "tiny_stage1_s1.json").read_text())
    assert prior["inputs"] == {"tiny_stage1_s1": stage1["weights_sha256"]}
    md = (folder / "results.md").read_text()
    assert "tiny HI-Diff" in md and "(baseline)" in md and "blurry input" in md
    per_image = (folder / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 1 + 2 * 2 * 3   # 2 variants x 2 seeds x 3 images
    assert (folder / "chart_tinytest_psnr_uint8_rgb.png").stat().st_size > 1000

    # 3) once more: nothing is trained or evaluated again, the report is the same
    again = run_checked(_sweep(base, sweep_file, 2), cwd=tmp_path, env=run_env(), timeout=600)
    assert "start " not in again.stdout
    assert (folder / "results.md").read_text() == md


def test_sweep_trains_with_torchrun_when_nproc_is_above_1(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1, extra={
        "nproc": 2, "variants": [{"name": "noprior", "opt": "plain.yml"}]})
    run_checked(_sweep(base, sweep_file, 1), cwd=tmp_path, env=run_env(), timeout=600)
    log = (tmp_path / "experiments" / "sweeps" / "tiny" / "logs" / "train_tiny_noprior_s0.log").read_text()
    assert "--nproc_per_node=2" in log and "world size 2" in log
    assert "noprior (baseline) | " in (tmp_path / "experiments" / "sweeps" / "tiny" / "results.md").read_text()
