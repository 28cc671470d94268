"""benchmarks/side_by_side.py: two arrangements of the CPU (trainings side by side, kept malloc memory), each
phase's fresh processes counted in one common window, phases alternated."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import PY, REPO, run_env
from hidiff.errors import ConfigError
from hidiff.profiling.side_by_side import arrangements
from hidiff.profiling.train_step import ALL_STAGES, StepSpec, parse_checkpoint_levels
from procs import run_checked

TINY = ["network_g.dim=8", "network_g.num_blocks=[1,1,1,1]", "network_g.heads=[1,1,1,1]"]
SCRIPT = str(REPO / "benchmarks" / "side_by_side.py")


def _run(tmp_path, *extra: str):
    out = tmp_path / "side.json"
    args = [PY, SCRIPT, "--batch", "2", "--size", "32", "--seconds", "2", "--rounds", "1", "--json", str(out),
            *extra]
    for item in TINY:
        args += ["-o", item]
    proc = run_checked(args, timeout=300, env=dict(run_env(), OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE"))
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_trainings_side_by_side_against_one_on_all_threads(tmp_path):
    proc, result = _run(tmp_path)
    (row,) = result["rounds"]
    one, side = row["reference"], row["candidate"]
    assert one["threads_seen"] == [2] and side["threads_seen"] == [1, 1]
    assert one["steps"][0] > 0 and min(side["steps"]) > 0
    assert abs(row["ratio"] - side["samples_per_s"] / one["samples_per_s"]) < 1e-9
    # each process's finished steps over the time they took, not over the window (which the unfinished
    # last step made a biased count, more so for the side with longer steps)
    assert one["samples_per_s"] == pytest.approx(one["steps"][0] * 2 / one["counted_s"][0])
    assert 0 < one["counted_s"][0] <= 2.0
    assert side["samples_per_s"] == pytest.approx(sum(n * 2 / s for n, s in zip(side["steps"], side["counted_s"])))
    assert "| round | one training, 2 threads: samples/s | 2 side by side, 1 thread(s) each: samples/s |" in proc.stdout
    assert f"median ratio (2 side by side, 1 thread(s) each over one training, 2 threads): " \
           f"{result['median_ratio']:.2f}x" in proc.stdout


def test_system_malloc_against_kept_memory(tmp_path):
    proc, result = _run(tmp_path, "--compare", "malloc", "--threads", "1")
    (row,) = result["rounds"]
    system, kept = row["reference"], row["candidate"]
    assert system["memory_kept"] == [False] and system["steps"][0] > 0 and kept["steps"][0] > 0
    assert kept["memory_kept"] == [sys.platform.startswith("linux")]
    assert "| round | system malloc, 1 threads: samples/s | freed memory kept, 1 threads: samples/s |" in proc.stdout


@pytest.mark.parametrize("kind, levels", [("official", None), ("official-ckpt", "1,refinement")])
def test_the_official_formulation_against_hidiffs_default_training_path(tmp_path, kind, levels):
    extra = ["--checkpoint-levels", levels] if levels else []
    proc, result = _run(tmp_path, "--compare", kind, "--threads", "1", *extra)
    (row,) = result["rounds"]
    official, default = row["reference"], row["candidate"]
    assert (official["formulation"], official["keep_memory"], official["checkpoint_levels"]) == ("plain", False, [])
    assert (default["formulation"], default["keep_memory"]) == ("fast", True)
    assert default["checkpoint_levels"] == ([1, "refinement"] if levels else [])
    assert official["steps"][0] > 0 and default["steps"][0] > 0
    label = "hidiff default + checkpointing of 1, refinement" if levels else "hidiff default"
    assert f"| official formulation, system malloc, 1 threads: samples/s | {label}, 1 threads" in proc.stdout


def test_the_feed_forward_stored_against_recomputed(tmp_path):
    proc, result = _run(tmp_path, "--compare", "recompute", "--threads", "1")
    (row,) = result["rounds"]
    stored, recomputed = row["reference"], row["candidate"]
    assert stored["overrides"] == ["train.recompute_ffn=false"] and recomputed["overrides"] == []
    assert stored["formulation"] == recomputed["formulation"] == "fast"
    assert stored["steps"][0] > 0 and recomputed["steps"][0] > 0
    assert ("| hidiff default, feed-forward stored, 1 threads: samples/s | hidiff default (feed-forward "
            "recomputed), 1 threads: samples/s |") in proc.stdout


def test_bad_arguments_are_refused_before_anything_starts(tmp_path):
    r = run_checked([PY, SCRIPT, "--jobs", "0"], timeout=60, env=run_env(), returncode=2)
    assert "--jobs: expected an integer >= 1, got 0" in r.stderr
    r = run_checked([PY, SCRIPT, "--opt", str(tmp_path / "none.yml")], timeout=60, env=run_env(), returncode=2)
    assert f"--opt {tmp_path / 'none.yml'}: file not found" in r.stderr
    r = run_checked([PY, SCRIPT, "--compare", "memory"], timeout=60, env=run_env(), returncode=2)
    assert "invalid choice: 'memory'" in r.stderr
    r = run_checked([PY, SCRIPT, "--compare", "official-ckpt", "--checkpoint-levels", "1,refinment"], timeout=60,
                    env=run_env(), returncode=2)
    assert "--checkpoint-levels: unknown level 'refinment'" in r.stderr and "did you mean 'refinement'" in r.stderr
    r = run_checked([PY, SCRIPT, "--compare", "official", "--checkpoint-levels", "1"], timeout=60, env=run_env(),
                    returncode=2)
    assert "--checkpoint-levels: only --compare official-ckpt checkpoints, got --compare official" in r.stderr


def test_checkpointing_every_stage_is_the_default_of_official_ckpt():
    _, every = arrangements("official-ckpt", 2, 1)
    assert every.checkpoint_levels == ALL_STAGES and every.label == "hidiff default + checkpointing, 2 threads"
    assert arrangements("official-ckpt", 2, 1, [1, 2, 3, 4, "refinement"])[1].label == every.label
    _, some = arrangements("official-ckpt", 2, 1, [1, "refinement"])
    assert some.label == "hidiff default + checkpointing of 1, refinement, 2 threads"
    assert StepSpec("x.yml", 1, (8, 8), checkpoint_levels=list(ALL_STAGES)).label == "fast+ckpt"
    assert StepSpec("x.yml", 1, (8, 8), checkpoint_levels=[1, "refinement"]).label == "fast+ckpt[1,refinement]"
    assert parse_checkpoint_levels("all") == list(ALL_STAGES) and parse_checkpoint_levels("1, refinement") == [
        1, "refinement"]
    with pytest.raises(ConfigError, match="unknown level 5"):
        StepSpec("x.yml", 1, (8, 8), checkpoint_levels=[5])


def test_the_step_that_runs_past_the_window_is_not_charged_to_the_counted_ones():
    """CPU time per step divided n + 1 steps' time by n (the overrun step's too), which flattered the side
    with fewer steps' opponent: each step here burns 0.1 s of CPU, and so must each counted step."""
    import time

    from hidiff.profiling.side_by_side import count_window

    def burn() -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.1:
            pass

    r = count_window(burn, time.time() + 1.0)
    assert r["steps"] >= 1
    per_step = (r["user_s"] + r["sys_s"]) / r["steps"]
    assert 0.09 <= per_step < 0.1 + 0.1 / (r["steps"] + 1), r


def test_the_rate_counts_finished_steps_over_their_own_time_not_over_the_window():
    """Steps of 0.3 s in a 1 s window: 3 finish (0.9 s); the window's count gave 3 / 1.0 = 3.0 steps/s, where
    the steps ran at 3.33 per second; with steps of 0.6 s it gave 1.0 for 1.67, so their ratio read 3.0x, not
    2.0x.  A clock that each step moves on by its length makes the counts exact."""
    from hidiff.profiling.side_by_side import count_window

    def window(step_s: float, seconds: float) -> dict:
        now = [100.0]

        def step() -> None:
            now[0] += step_s

        return count_window(step, 100.0 + seconds, clock=lambda: now[0])

    fast, slow = window(0.3, 1.0), window(0.6, 1.0)
    assert (fast["steps"], slow["steps"]) == (3, 1)
    assert fast["counted_s"] == pytest.approx(0.9) and slow["counted_s"] == pytest.approx(0.6)
    assert fast["steps_per_s"] == pytest.approx(1 / 0.3) and slow["steps_per_s"] == pytest.approx(1 / 0.6)
    assert fast["steps_per_s"] / slow["steps_per_s"] == pytest.approx(2.0)
    none = window(0.3, 0.1)           # no step inside the window: its one step's rate
    assert none["steps"] == 0 and none["steps_per_s"] == pytest.approx(1 / 0.3)


@pytest.mark.parametrize("item, flag", [("train.keep_cpu_memory=false", "--compare malloc"),
                                        ("train.checkpoint_levels=[1]", "--compare official-ckpt")])
def test_overrides_of_what_each_arrangement_sets_are_refused(item, flag):
    """-o train.checkpoint_levels=... was silently replaced by every arrangement's own setting."""
    proc = run_checked([PY, SCRIPT, "-o", item], timeout=120, env=run_env(), returncode=2)
    assert f"-o {item}: {item.split('=')[0]} is set by each variant" in proc.stderr and flag in proc.stderr
