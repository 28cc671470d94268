"""benchmarks/gpu_check.py: the dry run executes every check on the CPU and writes both reports."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import PY, REPO, run_env
from hidiff.profiling import gpu_checks
from hidiff.profiling.checkrun import (NO_CUDA, REGISTRY, Check, CheckFailed, Context, note_exit, run_checks,
                                      run_isolated, write_reports)
from procs import explain, run_checked

SCRIPT = str(REPO / "benchmarks" / "gpu_check.py")


@pytest.mark.slow
def test_dry_run_runs_every_check_and_writes_json_and_markdown(tmp_path):
    out = tmp_path / "report"
    proc = run_checked([PY, SCRIPT, "--dry-run", "--in-process", "--out", str(out)], env=run_env(), timeout=900,
                       returncode=None)
    report = out / "gpu_check.json"
    assert report.is_file(), explain(proc.args, proc.returncode, proc.stdout, proc.stderr, "no gpu_check.json")
    data = json.loads(report.read_text())
    statuses = {c["name"]: (c["status"], c["reason"]) for c in data["checks"]}
    assert proc.returncode == 0, (statuses, explain(proc.args, proc.returncode, proc.stdout, proc.stderr, "failed"))
    assert data["dry_run"] is True and data["device"] == "cpu" and data["passed"] is True
    assert [c["name"] for c in data["checks"]] == list(gpu_checks.ORDER)
    for c in data["checks"]:
        assert set(c) >= {"name", "title", "status", "reason", "seconds", "budget_s", "details"}
        assert c["status"] == "passed", (c["name"], c["reason"])
    parts = {c["name"]: c["details"].get("parts", {}) for c in data["checks"]}
    assert parts["amp_stage1"] == {"fp32": "passed", "fp32-strict": NO_CUDA, "bf16": NO_CUDA, "fp16": NO_CUDA}
    assert parts["prefetch"] == {"cpu": "passed", "cuda": NO_CUDA}
    assert parts["export"]["torchscript"] == "passed" and parts["export"]["onnx"].startswith("skipped (")
    assert parts["ddp"]["nccl"].startswith(NO_CUDA)
    oom = next(c for c in data["checks"] if c["name"] == "tiler_oom")["details"]
    assert oom["warnings"] and oom["tiles_per_call"][0] == 8
    assert data["environment"]["numpy"] != "missing"
    md = (out / "gpu_check.md").read_text()
    assert "| check | status | s (budget) | note |" in md
    for name in gpu_checks.ORDER:
        assert f"## {name}: passed" in md
    assert "| stage 1, 2x32x32 | plain |" in md  # the training speed table
    assert "| stage 2, 2x32x32 | fast+stored-ffn |" in md  # beside it, the gate stored instead of recomputed
    assert "| stage 2, 2x32x32 | fast+branches |" in md  # and the branches recomputed (fp32 without CUDA)


def test_the_stored_ffn_and_branch_variants_train_as_labelled():
    from hidiff.archs.fast.gdfn import FastGDFN
    from hidiff.profiling.train_speed import SpeedCase, variant_specs
    from hidiff.profiling.train_step import TrainStep
    ctx = Context(out_dir="unused", dry_run=True, repo=str(REPO))
    case = SpeedCase("stage 1", gpu_checks.opt_path(ctx, "1"), 1, (16, 16))
    specs = variant_specs(case, precisions=("fp32", "bf16", "fp16"), overrides=gpu_checks.tiny_overrides(ctx, "1"))
    stored = gpu_checks.stored_ffn(specs)
    assert [s.label for s in stored] == ["fast+stored-ffn", "fast+bf16+stored-ffn"]
    for spec, recomputes in ((specs[1], True), (stored[0], False)):
        gdfns = [m for net in TrainStep(spec).model.trainable.values() for m in net.modules()
                 if isinstance(m, FastGDFN)]
        assert gdfns and {m.recompute_hidden for m in gdfns} == {recomputes}, spec.label
    from hidiff.archs.fast.transformer_block import FastTransformerBlock
    branches = gpu_checks.recomputed_branches(specs)
    assert [s.label for s in branches] == ["fast+bf16+branches"]
    cpu = gpu_checks.recomputed_branches([s for s in specs if s.precision == "fp32"])
    assert [s.label for s in cpu] == ["fast+branches"]
    blocks = [m for net in TrainStep(cpu[0]).model.trainable.values() for m in net.modules()
              if isinstance(m, FastTransformerBlock)]
    assert blocks and {m.recompute_branches for m in blocks} == {True}


def test_isolated_check_is_killed_at_its_budget_and_a_failure_does_not_stop_the_others(tmp_path):
    ctx = Context(out_dir=str(tmp_path), dry_run=True, repo=str(REPO))
    killed = run_isolated(REGISTRY["tiler_auto"], ctx, timeout=0.5)
    assert killed["status"] == "failed" and "killed at its budget" in killed["reason"]

    def broken(ctx):
        raise ValueError("boom")

    REGISTRY["_broken"] = Check("_broken", "always fails", 5, 5, broken)
    try:
        results = run_checks(ctx, ["_broken", "prefetch"], isolate=False)
    finally:
        del REGISTRY["_broken"]
    assert [r["status"] for r in results] == ["failed", "passed"]
    assert results[0]["reason"] == "ValueError: boom" and results[0]["details"]["traceback"]


def _run_and_report(tmp_path, chk: Check):
    """Run a temporary check in this process and write both reports: (its result, the markdown)."""
    REGISTRY[chk.name] = chk
    ctx = Context(out_dir=str(tmp_path), dry_run=True, repo=str(REPO))
    try:
        (res,) = run_checks(ctx, [chk.name], isolate=False)
    finally:
        del REGISTRY[chk.name]
    write_reports(str(tmp_path), "r", {"title": "t", "command": "c", "dry_run": True, "device": "cpu",
                                       "machine_line": "m", "environment": {}, "started": "s", "total_s": 1.0}, [res])
    return res, (tmp_path / "r.md").read_text()


def test_a_failed_check_keeps_what_it_measured_in_both_reports(tmp_path):
    """The first GPU run lost the stage-2 loss table of a failed precision check; it stays now."""
    def measured_then_failed(ctx):
        raise CheckFailed("fp16 failed: loss differs", {"runs": {"fp16": {"losses": [0.5]}},
                                                       "table": "| run | loss |\n|---|---:|\n| fp16 | 0.5 |"})

    res, md = _run_and_report(tmp_path, Check("_measured", "fails with numbers", 5, 5, measured_then_failed))
    assert res["status"] == "failed" and res["details"]["runs"]["fp16"]["losses"] == [0.5]
    assert "## _measured: failed" in md and "| fp16 | 0.5 |" in md
    assert json.loads((tmp_path / "r.json").read_text())["checks"][0]["details"]["runs"]["fp16"]["losses"] == [0.5]


def test_a_long_coloured_failure_reads_plainly_in_both_reports(tmp_path):
    """torch.export's errors carry terminal colour codes and run to 2,000 characters: they filled the summary
    table of the GPU report of 2026-11-27 (docs/gpu_check/2026-11-27-run6-onnx.md)."""
    def coloured(ctx):
        raise RuntimeError("\x1b[96mThis is step 1/3\x1b[0m of exporting | " + "detail " * 300)

    res, md = _run_and_report(tmp_path, Check("_coloured", "fails in colour", 5, 5, coloured))
    assert res["reason"].startswith("RuntimeError: This is step 1/3 of exporting | detail")
    assert "\x1b" not in json.dumps(res)
    row = next(line for line in md.splitlines() if line.startswith("| _coloured"))
    assert row.endswith(" ... (below) |") and len(row) < 450 and row.count("|") == 5
    assert res["reason"] in md  # whole, under the check's heading


def test_a_result_reported_before_a_bad_exit_keeps_its_verdict_and_says_so():
    passed = {"name": "x", "status": "passed", "reason": "", "details": {"parts": {"a": "passed"}}}
    assert note_exit(dict(passed), 0, "") == passed
    noted = note_exit(dict(passed), -11, "\x1b[31mSegmentation fault\x1b[0m\n")
    assert noted["status"] == "passed" and noted["reason"] == "the check's process exited with code -11 after reporting"
    assert noted["details"] == {"parts": {"a": "passed"}, "exit_code": -11, "stderr_tail": ["Segmentation fault"]}


def test_isolated_check_reports_its_result_from_a_fresh_process(tmp_path):
    ctx = Context(out_dir=str(tmp_path), dry_run=True, repo=str(REPO))
    res = run_isolated(REGISTRY["prefetch"], ctx, timeout=300)
    assert res["status"] == "passed", res
    assert res["details"]["parts"] == {"cpu": "passed", "cuda": NO_CUDA}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_full_run_without_cuda_and_unknown_checks_are_refused_before_anything_is_written(tmp_path):
    for args in (["--out", str(tmp_path / "a")], ["--dry-run", "--only", "nope", "--out", str(tmp_path / "b")]):
        proc = run_checked([PY, SCRIPT, *args], env=run_env(), timeout=120, returncode=2)
        assert "error" in proc.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_amp_verdict_judges_the_first_step_strictly_and_later_steps_against_fp32_rounding_drift():
    ref = [1.0, 0.9, 0.8, 0.7]
    close = [1.001, 0.905, 0.79, 0.708]          # first step 0.1 %, worst 1.25 % (step 3)
    v = gpu_checks.amp_verdict(close, ref, 0.01, None)
    assert v["first_step_rel_diff"] == pytest.approx(0.001) and v["max_rel_diff"] == pytest.approx(0.0125)
    assert v["problems"] and "worst step" in v["problems"][0] and "> 0.01" in v["problems"][0]
    # fp32 with TF32 off drifted 0.8 % from fp32 over the same steps: up to 1.6 % is rounding's scale
    v = gpu_checks.amp_verdict(close, ref, 0.01, 0.008)
    assert v["allowed"] == pytest.approx(0.016) and v["problems"] == []
    # the first step starts from the same weights: no drift excuses a difference there
    v = gpu_checks.amp_verdict([1.02, 0.9, 0.8, 0.7], ref, 0.01, 0.05)
    assert len(v["problems"]) == 1 and v["problems"][0].startswith("first-step loss differs from fp32 by 0.02")


def test_a_nan_loss_fails_every_loss_comparison():
    """Python's max dropped a NaN that came after a number and kept one that came first, and NaN > tol is
    False: the compile check passed, and gpu_check exited 0, with NaN compiled losses."""
    nan = float("nan")
    for losses in ([nan, nan], [0.4, nan], [nan, 0.3], [0.4, float("inf")]):
        assert gpu_checks.rel_diff(losses, [0.4, 0.3]) == float("inf")
    assert gpu_checks.rel_diff([0.4, 0.3], [0.4, 0.3]) == 0.0
    assert gpu_checks.amp_verdict([0.4, nan], [0.4, 0.3], 0.01, None)["problems"]


def test_background_checks_run_beside_the_next_checks_and_an_alone_check_waits_for_them(tmp_path):
    """The compile check (it waits on the CPU) and the ddp check (process start, rendezvous) start in the
    background; tiler_auto, which fills the device's memory, and the speed tables wait for both; each result
    names what ran beside it, background checks included."""
    ctx = Context(out_dir=str(tmp_path), dry_run=True, repo=str(REPO))
    assert REGISTRY["compile"].background and REGISTRY["ddp"].background
    assert REGISTRY["tiler_auto"].alone and REGISTRY["speed_training"].alone
    lines = []
    names = ["compile", "ddp", "prefetch", "tiler_auto"]
    results = run_checks(ctx, names, isolate=True, log=lines.append)
    by = {r["name"]: r for r in results}
    assert [r["name"] for r in results] == names
    assert all(r["status"] == "passed" for r in results), [(r["name"], r["reason"]) for r in results]
    # prefetch starts at once after ddp: both background checks are still running then
    assert by["prefetch"]["beside"] == ["compile", "ddp"]
    assert by["compile"]["beside"] == ["ddp", "prefetch"] and by["ddp"]["beside"] == ["compile", "prefetch"]
    assert by["tiler_auto"]["beside"] == []
    for name in ("compile", "ddp"):
        assert by["tiler_auto"]["started_s"] >= by[name]["started_s"] + by[name]["seconds"]
    assert any("in the background" in ln for ln in lines) and any(ln.startswith("[compile] passed") for ln in lines)
    write_reports(str(tmp_path), "r", {"title": "t", "command": "c", "dry_run": True, "device": "cpu",
                                       "machine_line": "m", "environment": {}, "started": "s", "total_s": 1.0},
                  results)
    assert "| passed |" in (tmp_path / "r.md").read_text() and "beside compile" in (tmp_path / "r.md").read_text()


def _processes_mentioning(text: str) -> list:
    """PIDs whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_an_interrupted_run_leaves_no_background_check_running(tmp_path):
    ctx = Context(out_dir=str(tmp_path), dry_run=True, repo=str(REPO))

    def log(line: str) -> None:
        if line.startswith("[prefetch]"):
            deadline = time.time() + 10
            while not _processes_mentioning(str(tmp_path)) and time.time() < deadline:
                time.sleep(0.05)
            assert _processes_mentioning(str(tmp_path)), "the background check should be running now"
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_checks(ctx, ["compile", "prefetch"], isolate=True, log=log)
    deadline = time.time() + 10
    while _processes_mentioning(str(tmp_path)) and time.time() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(tmp_path)) == []


def test_a_check_budget_given_on_the_command_line_cuts_the_check_and_is_reported(tmp_path):
    out = tmp_path / "report"
    proc = run_checked([PY, SCRIPT, "--dry-run", "--only", "prefetch", "--budget", "prefetch=0.01", "--out", str(out)],
                       env=run_env(), timeout=300, returncode=1)
    (entry,) = json.loads((out / "gpu_check.json").read_text())["checks"]
    assert entry["name"] == "prefetch" and entry["status"] == "failed", explain(proc.args, proc.returncode,
                                                                             proc.stdout, proc.stderr, "")
    assert entry["budget_s"] == 0.01 and "budget" in entry["reason"]


@pytest.mark.parametrize("given", ["prefetch", "nosuch=10", "prefetch=0", "prefetch=abc", "prefetch=inf"])
def test_a_bad_check_budget_is_refused_before_anything_is_written(tmp_path, given):
    out = tmp_path / "report"
    proc = run_checked([PY, SCRIPT, "--dry-run", "--budget", given, "--out", str(out)], env=run_env(), timeout=120,
                       returncode=2)
    assert "--budget" in proc.stderr and "CHECK=SECONDS" in proc.stderr
    assert not out.exists()


def test_the_automatic_tiling_must_grow_with_free_memory():
    """tiler_auto recorded the tiling with all memory free but never compared it with the tight one."""
    from hidiff.inference.tiler import TileOptions
    tight = TileOptions(size=512, batch=2)
    assert gpu_checks.more_room(None, tight)
    assert gpu_checks.more_room(TileOptions(size=1024, batch=1), tight)
    assert gpu_checks.more_room(TileOptions(size=512, batch=16), tight)
    assert not gpu_checks.more_room(TileOptions(size=512, batch=2), tight)  # free memory ignored
    assert not gpu_checks.more_room(TileOptions(size=256, batch=16), tight)
    assert not gpu_checks.more_room(tight, None)


def test_onnx_asked_for_without_its_packages_fails_naming_them(tmp_path, monkeypatch):
    """--onnx with onnxscript missing was recorded as skipped and the run passed (exit 0)."""
    import importlib.util
    real = gpu_checks._importable
    monkeypatch.setattr(gpu_checks, "_importable", lambda name: name != "onnxscript" and real(name))
    assert gpu_checks.missing_onnx_packages() == ["onnxscript"]
    spec = importlib.util.spec_from_file_location("gpu_check_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "report"
    assert script.main(["--dry-run", "--onnx", "--only", "export", "--out", str(out)]) == 2
    assert not out.exists()
    message = gpu_checks.onnx_missing_message(["onnxscript"])
    assert "package onnxscript is missing" in message and "carry its wheel" in message
    # the check itself, run without the script's refusal: the part fails, and so does the check
    ctx = Context(out_dir=str(tmp_path / "c"), dry_run=True, repo=str(REPO), extra={"onnx": True})
    with pytest.raises(AssertionError, match="onnx failed: --onnx asked for .* onnxscript is missing"):
        gpu_checks.export(ctx)
