"""A tiny real sweep end to end: stage 1 -> stage 2 and a prior-free U-Net, killed and resumed, its runs reused."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import PY, REPO, run_env

from procs import explain, run_checked
from sweep_tiny import write_tiny_sweep

from hidiff.sweep.report import metrics_csv, plan_hash

pytestmark = pytest.mark.slow


def _sweep(base, sweep_file, jobs):
    return [PY, str(REPO / "scripts" / "sweep.py"), "-opt", str(base), "--sweep", str(sweep_file), "--jobs",
            str(jobs)]


def test_sweep_runs_resumes_after_a_kill_and_reuses_finished_runs(tmp_path):
    # one seed: which stage-1 run each seed's stage 2 is planned on is tests/test_sweep_spec.py's
    # test_plan_names_seeds_and_stage1_links; here the reused stage-1 run's weights are the ones stage 2 took
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    folder = tmp_path / "experiments" / "sweeps" / "tiny"
    first = tmp_path / "experiments" / "tiny_stage1_s0"
    # 1) start the sweep one run at a time and kill it (with its trainer) once the first run has finished
    log = tmp_path / "first_sweep.log"  # a file, not a pipe: a pipe nobody reads can fill up and stall the run
    with log.open("w") as sink:
        proc = subprocess.Popen(_sweep(base, sweep_file, 1), cwd=tmp_path, env=run_env(),
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    record = folder / "runs" / "tiny_stage1_s0.json"

    def finished():     # the record is written with status 'training' when the run starts
        return record.is_file() and json.loads(record.read_text())["status"] == "trained"

    try:
        deadline = time.time() + 300
        while not finished() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert finished(), explain(proc.args, proc.poll(), "", log.read_text(), "the first run never finished")
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
    for run in ("tiny_prior_s0", "tiny_noprior_s0"):
        rec = json.loads((folder / "runs" / f"{run}.json").read_text())
        assert set(rec["weights_sha256"]) == ({"g", "le_dm", "d"} if "_prior" in run else {"g"})
        assert (folder / "options" / f"{run}.yml").is_file()
        assert metrics_csv(folder, run, "tinytest").is_file()
    prior = json.loads((folder / "runs" / "tiny_prior_s0.json").read_text())
    assert prior["inputs"] == {"tiny_stage1_s0": before[1]}        # the reused run's weights, unchanged
    md = (folder / "results.md").read_text()
    assert "tiny HI-Diff" in md and "(baseline)" in md and "blurry input" in md
    assert f"Plan {plan_hash(json.loads((folder / 'plan.json').read_text()))} (plan.json)" in md
    per_image = (folder / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 1 + 2 * 1 * 3   # 2 variants x 1 seed x 3 images
    assert (folder / "chart_tinytest_psnr_uint8_rgb.png").stat().st_size > 1000

    # 3) once more: nothing is trained or evaluated again, the report is the same
    again = run_checked(_sweep(base, sweep_file, 2), cwd=tmp_path, env=run_env(), timeout=600)
    assert "start " not in again.stdout
    assert (folder / "results.md").read_text() == md


def test_sweep_trains_with_torchrun_when_nproc_is_above_1(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1, extra={
        "nproc": 2, "stage1": None, "variants": [{"name": "noprior", "opt": "plain.yml"}]})
    run_checked(_sweep(base, sweep_file, 1), cwd=tmp_path, env=run_env(), timeout=600)
    log = (tmp_path / "experiments" / "sweeps" / "tiny" / "logs" / "train_tiny_noprior_s0.log").read_text()
    assert "--nproc_per_node=2" in log and "world size 2" in log
    assert "noprior (baseline) | " in (tmp_path / "experiments" / "sweeps" / "tiny" / "results.md").read_text()


def test_a_sweep_over_sets_of_two_protocols_reports_each_on_its_metrics(tmp_path):
    """A test file with a GoPro-protocol and a RealBlur-protocol set (as options/test_gopro.yml): every run
    trained and was evaluated, then the report ended with 'no psnr_realblur_masked for image ...'."""
    import yaml

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1, extra={
        "stage1": None, "baseline": "noprior",
        "variants": [{"name": "noprior", "opt": "plain.yml"},
                     {"name": "longer", "opt": "plain.yml", "overrides": {"train.total_iter": 3}}]})
    test = yaml.safe_load((tmp_path / "test.yml").read_text())
    test["datasets"]["test_2"] = dict(test["datasets"]["test_1"], name="tinyrb", protocol="realblur")
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    run_checked(_sweep(base, sweep_file, 1), cwd=tmp_path, env=run_env(), timeout=600)
    folder = tmp_path / "experiments" / "sweeps" / "tiny"
    md = (folder / "results.md").read_text()
    sections = {part.split(" ", 1)[0]: part for part in md.split("\n## ")[1:]}    # one per set, sorted
    assert list(sections) == ["tinyrb", "tinytest"]
    gopro, realblur = sections["tinytest"], sections["tinyrb"]
    assert "| psnr_uint8_rgb |" in gopro and "realblur" not in gopro
    assert "| psnr_realblur_masked |" in realblur and "uint8" not in realblur and "ecc_cc" not in realblur
    assert "(k = 2: 1 variant x 2 metrics against the baseline)" in realblur
    assert (folder / "chart_tinytest_psnr_uint8_rgb.png").is_file()
    assert (folder / "chart_tinyrb_psnr_realblur_masked.png").is_file()
    assert "(chart_tinyrb_psnr_realblur_masked.png)" in realblur


def _start_until_iteration_3(cmd, tmp_path, runs):
    """Start the sweep (its own session, output to a file); return (process, log file) once each of ``runs``
    has logged iteration 3. The process is killed if they never do."""
    log = tmp_path / "sweep.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=run_env(), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    logs = [tmp_path / "experiments" / "sweeps" / "tiny" / "logs" / f"train_{run}.log" for run in runs]
    deadline = time.time() + 300
    while not all(p.is_file() and "iter:       3," in p.read_text() for p in logs):
        if proc.poll() is not None or time.time() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
            raise AssertionError(explain(proc.args, proc.poll(), "", log.read_text(), "runs never trained"))
        time.sleep(0.2)
    return proc, log


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill"])
def test_a_stopped_sweep_leaves_each_running_training_saved(tmp_path, how):
    """Ctrl-C in the sweep's terminal (SIGINT to its process group), SIGTERM to the sweep (a scheduler, `kill`)
    and SIGKILL of the sweep: every training it was running finishes its iteration, saves that checkpoint and
    stops; none is killed unsaved and none trains on unseen."""
    from hidiff.engine.checkpoint_store import latest_complete

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    runs = ("tiny_stage1_s0", "tiny_noprior_s0")                 # with --jobs 2 these two train at once
    cmd = _sweep(base, sweep_file, 2) + ["-o", "train.total_iter=100000", "-o", "logger.save_checkpoint_freq=100000"]
    proc, log = _start_until_iteration_3(cmd, tmp_path, runs)
    try:
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    expected = {"ctrl-c": 130, "sigterm": 130, "sigkill": -signal.SIGKILL}[how]
    assert code == expected, explain(proc.args, code, "", log.read_text(), f"expected exit code {expected}")
    signal_name = {"ctrl-c": "SIGINT", "sigterm": "SIGTERM", "sigkill": "SIGHUP"}[how]
    for run in runs:
        run_dir = tmp_path / "experiments" / run
        deadline, text = time.time() + 120, ""
        while time.time() < deadline:     # after a SIGKILL of the sweep its trainings stop on their own
            text = next(run_dir.glob("train_*.log")).read_text()
            if "End of training" in text:
                break
            time.sleep(0.2)
        m = re.search(rf"stopped by {signal_name} at iteration (\d+) of 100000; the checkpoint of iteration \1 is "
                      rf"saved", text)
        assert m, (run, text[-1500:])
        assert latest_complete(run_dir).iteration == int(m.group(1)) >= 3
    if how != "sigkill":
        assert "run the same command again to continue" in log.read_text()


def _failing_stage1(tmp_path, plain_iters):
    """The tiny sweep (1 seed) with its stage-1 run reading a copy of the data that the test can take away, so
    that run fails mid-training while the prior-free run trains beside it."""
    import shutil

    import yaml

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    shutil.copytree(tmp_path / "data", tmp_path / "data_s1")
    for name, changes in (("stage1.yml", {"total_iter": 100000, "root": "data_s1"}),
                          ("plain.yml", {"total_iter": plain_iters})):
        opts = yaml.safe_load((tmp_path / name).read_text())
        opts["train"]["total_iter"] = changes["total_iter"]
        opts["logger"]["save_checkpoint_freq"] = 100000
        if "root" in changes:
            for key in ("dataroot_lq", "dataroot_gt"):
                opts["datasets"]["train"][key] = opts["datasets"]["train"][key].replace("/data/", "/data_s1/")
        (tmp_path / name).write_text(yaml.safe_dump(opts, sort_keys=False))
    return base, sweep_file


def _run_until_stage1_fails(tmp_path, cmd):
    """Start the sweep, wait until both runs train, take the stage-1 run's data away; returns (exit code, log)."""
    import shutil

    proc, log = _start_until_iteration_3(cmd, tmp_path, ("tiny_stage1_s0", "tiny_noprior_s0"))
    try:
        shutil.rmtree(tmp_path / "data_s1")     # a data share that goes away under a long run
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    return code, log.read_text()


def test_a_failed_run_stops_the_others_once_each_saving_its_checkpoint(tmp_path):
    """Without --keep-going a failure ends the sweep: the training beside the failed one is sent SIGTERM once,
    finishes its iteration and saves it (not killed unsaved by a second signal), and nothing new starts."""
    from hidiff.engine.checkpoint_store import latest_complete

    base, sweep_file = _failing_stage1(tmp_path, plain_iters=100000)
    code, out = _run_until_stage1_fails(tmp_path, _sweep(base, sweep_file, 2))
    assert code == 1, explain(_sweep(base, sweep_file, 2), code, "", out, "expected exit code 1")
    assert "FAILED train tiny_stage1_s0: stopping the 1 other running job(s)" in out
    assert "train of tiny_stage1_s0 failed" in out and "data_s1" in out    # the failed run's log tail is shown
    assert "start train tiny_prior_s0" not in out
    text = next((tmp_path / "experiments" / "tiny_noprior_s0").glob("train_*.log")).read_text()
    m = re.search(r"stopped by SIGTERM at iteration (\d+) of 100000; the checkpoint of iteration \1 is saved", text)
    assert m, text[-1500:]
    assert latest_complete(tmp_path / "experiments" / "tiny_noprior_s0").iteration == int(m.group(1)) >= 3
    assert not (tmp_path / "experiments" / "sweeps" / "tiny" / "results.md").exists()


def test_keep_going_finishes_the_other_runs_and_skips_what_needs_the_failed_one(tmp_path):
    base, sweep_file = _failing_stage1(tmp_path, plain_iters=150)
    cmd = _sweep(base, sweep_file, 2) + ["--keep-going"]
    code, out = _run_until_stage1_fails(tmp_path, cmd)
    assert code == 1, explain(cmd, code, "", out, "expected exit code 1")
    failed = out.index("FAILED train tiny_stage1_s0")
    assert out.index("done  train tiny_noprior_s0") > failed      # still training when the other failed
    assert "done  eval tiny_noprior_s0" in out
    for job in ("train", "eval"):
        assert f"skip  {job} tiny_prior_s0 (it needs train tiny_stage1_s0, which failed)" in out
    assert "1 job(s) failed and 2 that needed them were skipped" in out
    folder = tmp_path / "experiments" / "sweeps" / "tiny"
    rec = json.loads((folder / "runs" / "tiny_noprior_s0.json").read_text())
    assert rec["status"] == "trained" and set(rec["weights_sha256"]) == {"g"}
    assert metrics_csv(folder, "tiny_noprior_s0", "tinytest").is_file()
    failed = json.loads((folder / "runs" / "tiny_stage1_s0.json").read_text())
    assert failed["status"] == "training" and failed["weights_sha256"] == {}   # started, never finished
    assert not (folder / "results.md").exists()     # no comparison from a sweep with a run missing
