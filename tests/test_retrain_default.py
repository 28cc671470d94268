"""The default model's one retraining command: it checks everything first, runs stage 1 -> stage 2 -> export,
stops cleanly on a signal and continues where it stopped when started again (the real recipe files, tiny sizes)."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_env
from engine_tiny_run import write_pairs
from hidiff.errors import ConfigError, DataError
from hidiff.runners.retrain_default import make_plan
from procs import run_checked, spawn  # noqa: F401  (spawn: a fixture)

COMMAND = [sys.executable, str(REPO / "scripts" / "retrain_default.py"), "--options-dir", str(REPO / "options")]


def tiny(root: Path, total_iter: int = 4) -> list[str]:
    """Overrides that shrink every training of the recipe and keep it inside ``root``."""
    photos = root / "photos"
    return [f"path.experiments_root={root / 'experiments'}",
            f"datasets.train.sharp_root={photos}", f"datasets.val.sharp_root={photos}",
            "datasets.train.gt_size=32", "datasets.train.length=8", "datasets.train.batch_size_per_gpu=2",
            "datasets.train.num_worker_per_gpu=0", "datasets.val.gt_size=32", "datasets.val.length=1",
            f"train.total_iter={total_iter}", f"train.scheduler.periods=[{total_iter}]",
            "logger.save_checkpoint_freq=2", "logger.print_freq=1", f"val.val_freq={total_iter}",
            "logger.use_tb_logger=false"]


def with_overrides(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("-o", item)]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    sharp, _ = write_pairs(tmp_path / "pairs", n=3, size=80)
    (tmp_path / "photos").mkdir()
    for f in sorted(sharp.iterdir()):
        (tmp_path / "photos" / f.name).write_bytes(f.read_bytes())
    return tmp_path / "photos"


def test_a_signal_stops_it_cleanly_and_the_same_command_finishes_the_recipe(tmp_path, photos, spawn):
    # the signal comes once stage 1 has logged iteration 3 and stops it at the iteration running then (the
    # stopped < total check leaves 8 iterations for a signal that arrives late)
    total = 12
    export = tmp_path / "model"
    args = COMMAND + ["--export", str(export), *with_overrides(tiny(tmp_path, total_iter=total))]
    proc = spawn(args, cwd=tmp_path, env=run_env())
    proc.wait_for(r"iter:\s+3,", timeout=180)                 # stage 1 is training
    proc.p.send_signal(signal.SIGTERM)
    assert proc.finish(timeout=120) == 4, proc.explain("expected exit code 4 after SIGTERM")
    out = proc.output
    assert "== stage 1 stopped at" in out and "run the same command again to continue" in out, out[-2000:]
    stage1 = tmp_path / "experiments" / "default_stage1"
    saved = sorted(int(p.stem) for p in (stage1 / "training_states").glob("*.state"))
    assert saved and 3 <= saved[-1] < total, saved                  # the iteration it stopped at was saved
    assert not (tmp_path / "experiments" / "default_stage2").exists() and not export.exists()

    done = run_checked(args, timeout=600, env=run_env(), cwd=tmp_path)
    assert "Resuming training from epoch" in done.stdout + done.stderr
    assert f"== stage 1: training from {saved[-1]:,} of {total} iterations" in done.stdout, done.stdout[-2000:]
    assert f"== stage 2: training from 0 of {total} iterations" in done.stdout
    assert sorted(p.name for p in export.iterdir()) == ["MODEL_CARD.md", "model.yml", "net_d.pth", "net_g.pth",
                                                          "net_le_dm.pth"]
    assert (export / "MODEL_CARD.md").read_text() == (REPO / "docs" / "default_model.md").read_text()
    weights = torch.load(export / "net_g.pth", map_location="cpu", weights_only=True)["params"]
    assert {t.dtype for t in weights.values()} == {torch.float16}

    import hidiff
    restorer = hidiff.load(export)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    restored = restorer.deblur(image)
    assert restored.shape == image.shape and restored.dtype == np.uint8

    status = run_checked(args + ["--dry-run", "--ablation-seeds", "1"], timeout=120, env=run_env(), cwd=tmp_path)
    runs = tmp_path / "experiments"
    assert status.stdout.splitlines()[1:] == [
        f"stage 1: done, {total} of {total} iterations (default_stage1.yml, {runs / 'default_stage1'})",
        f"stage 2: done, {total} of {total} iterations (default_stage2.yml, {runs / 'default_stage2'})",
        f"export: {export} (exists, float16, card {REPO / 'docs' / 'default_model.md'})",
        f"no-prior ablation, seed 10: to train, 0 of {total} iterations (default_plain.yml, "
        f"{runs / 'default_plain'})"], status.stdout
    assert not (tmp_path / "experiments" / "default_plain").exists()          # a dry run starts nothing

    again = run_checked(args, timeout=300, env=run_env(), cwd=tmp_path)   # all done: nothing is redone
    assert f"== stage 1: done ({total} of {total} iterations" in again.stdout
    assert f"== stage 2: done ({total} of {total} iterations" in again.stdout
    assert f"== export: {export} already exists" in again.stdout


def test_bad_input_is_refused_before_anything_is_written(tmp_path, photos):
    empty = tmp_path / "empty"
    empty.mkdir()
    overrides = tiny(tmp_path) + [f"datasets.train.sharp_root={empty}"]
    r = run_checked(COMMAND + with_overrides(overrides), timeout=120, env=run_env(), cwd=tmp_path, returncode=2)
    expected = f"{empty}: the photos of datasets.train.sharp_root (default_stage1.yml) are missing; give --photos"
    assert expected in r.stderr, r.stderr
    r = run_checked(COMMAND + with_overrides(tiny(tmp_path) + ["train.totl_iter=3"]), timeout=120, env=run_env(),
                    cwd=tmp_path, returncode=2)
    assert "default_stage1.yml" in r.stderr and "did you mean 'total_iter'" in r.stderr, r.stderr
    stale = tmp_path / "old_model"
    stale.mkdir()
    r = run_checked(COMMAND + ["--export", str(stale), *with_overrides(tiny(tmp_path))], timeout=120, env=run_env(),
                    cwd=tmp_path, returncode=2)
    assert f"--export {stale}: already exists, but stage 2 has not finished" in r.stderr
    assert not (tmp_path / "experiments").exists()


def test_the_plan_names_every_training_and_the_ablation_seeds(tmp_path, photos):
    plan = make_plan(REPO / "options", tiny(tmp_path), ablation_seeds=3, export=tmp_path / "model")
    runs = [(t.label, t.run_dir.name, t.total_iter) for t in plan.recipe + plan.ablation]
    assert runs == [("stage 1", "default_stage1", 4), ("stage 2", "default_stage2", 4),
                    ("no-prior ablation, seed 10", "default_plain", 4),
                    ("no-prior ablation, seed 11", "default_plain_seed11", 4),
                    ("no-prior ablation, seed 12", "default_plain_seed12", 4)]
    assert "manual_seed=12" in plan.ablation[-1].overrides
    with pytest.raises(DataError, match="--photos .*missing: not a folder of images"):
        make_plan(REPO / "options", tiny(tmp_path), photos=[tmp_path / "missing"])
    with pytest.raises(ConfigError, match="expected an integer >= 0"):
        make_plan(REPO / "options", tiny(tmp_path), ablation_seeds=-1)
    for item in ("name=mine", "manual_seed=3"):   # one run folder (or seed) for every training: refused
        with pytest.raises(ConfigError, match=f"-o {item}: the recipe names its run folders and seeds itself"):
            make_plan(REPO / "options", tiny(tmp_path) + [item], ablation_seeds=2)


def test_the_training_stops_cleanly_when_the_command_itself_is_killed(tmp_path, photos, spawn):
    """SIGKILL of the command cannot be forwarded; the child learns it from the kernel (Linux) and saves."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux only")
    args = COMMAND + ["--export", str(tmp_path / "model"), *with_overrides(tiny(tmp_path, total_iter=400))]
    proc = spawn(args, cwd=tmp_path, env=run_env())
    proc.wait_for(r"iter:\s+3,", timeout=180)
    proc.p.send_signal(signal.SIGKILL)                         # the command only; its child is in another session
    m = proc.wait_for(r"training stopped by SIGHUP at iteration (\d+); its checkpoint is saved", timeout=120)
    states = tmp_path / "experiments" / "default_stage1" / "training_states"
    saved = sorted(int(p.stem) for p in states.glob("*.state"))
    assert saved[-1] == int(m.group(1)) >= 3, (saved, m.group(0))


def test_ablation_only_trains_the_seeds_side_by_side_and_nothing_of_the_recipe(tmp_path, photos):
    """``--ablation-only --ablation-jobs 2``: the prior-free seeds train beside shipped weights, both children at
    once, one thread each, their lines told apart by seed; stage 1, stage 2 and the export are neither trained nor
    written, and the dry run says they are skipped."""
    export = tmp_path / "model"
    args = COMMAND + ["--export", str(export), "--ablation-seeds", "2", "--ablation-jobs", "2", "--ablation-only",
                      *with_overrides(tiny(tmp_path, total_iter=4))]
    status = run_checked(args + ["--dry-run"], timeout=120, env=run_env(), cwd=tmp_path)
    assert status.stdout.splitlines()[1:4] == ["stage 1: skipped (--ablation-only)",
                                               "stage 2: skipped (--ablation-only)",
                                               "export: skipped (--ablation-only)"], status.stdout
    done = run_checked(args, timeout=600, env=dict(run_env(), OMP_NUM_THREADS="2"), cwd=tmp_path)
    out = done.stdout
    assert "== no-prior ablation, seed 10: training from 0 of 4 iterations" in out, out[-3000:]
    assert "[2 at once, 1 thread(s) each]" in out
    experiments = tmp_path / "experiments"
    assert sorted(p.name for p in experiments.iterdir()) == ["default_plain", "default_plain_seed11"], out[-3000:]
    assert not export.exists()
    for seed, folder in ((10, "default_plain"), (11, "default_plain_seed11")):
        lines = [line for line in out.splitlines() if line.startswith(f"[seed {seed}] ")]
        assert any("CPU threads 1" in line for line in lines), lines[:20]
        assert any("End of training at iteration 4" in line for line in lines), lines[-5:]
        states = sorted(int(p.stem) for p in (experiments / folder / "training_states").glob("*.state"))
        assert states[-1] == 4, (folder, states)
    # both were running before either finished: each seed's first line precedes the other's last
    order = [int(line[6:8]) for line in out.splitlines() if line.startswith("[seed ")]
    assert order.index(11) < len(order) - 1 - order[::-1].index(10), order
    status = run_checked(args + ["--dry-run"], timeout=120, env=run_env(), cwd=tmp_path)
    assert "no-prior ablation, seed 11: done, 4 of 4 iterations" in status.stdout, status.stdout
    again = run_checked(args, timeout=300, env=run_env(), cwd=tmp_path)
    assert "== no-prior ablation, seed 11: done (4 of 4 iterations" in again.stdout, again.stdout[-2000:]
    assert sorted(p.name for p in experiments.iterdir()) == ["default_plain", "default_plain_seed11"]
    with pytest.raises(ConfigError, match="--ablation-jobs: expected an integer >= 1, got 0"):
        make_plan(REPO / "options", tiny(tmp_path), ablation_seeds=2, ablation_jobs=0)
    r = run_checked(COMMAND + ["--ablation-only", *with_overrides(tiny(tmp_path))], timeout=120, env=run_env(),
                    cwd=tmp_path, returncode=2)
    assert "--ablation-only: trains only the ablation's seeds, so it needs --ablation-seeds N >= 1" in r.stderr


def test_a_signal_stops_every_side_by_side_seed_with_its_checkpoint(tmp_path, photos):
    """SIGTERM to the command reaches both running children once; each saves where it stopped and exits 4."""
    import os
    import re
    import threading
    import time

    from hidiff.runners import retrain_default as rd

    plan = make_plan(REPO / "options", tiny(tmp_path, total_iter=2000), ablation_seeds=2, ablation_jobs=2,
                     export=tmp_path / "model")
    folders = [t.run_dir for t in plan.ablation]

    def both_training() -> bool:
        logs = [sorted(folder.glob("train_*.log")) for folder in folders]
        return all(files and re.search(r"iter:\s+3,", files[-1].read_text()) for files in logs)

    def stop_when_both_train() -> None:
        deadline = time.monotonic() + 300
        while not both_training() and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    messages: list[str] = []
    threading.Thread(target=stop_when_both_train, daemon=True).start()
    with rd.ChildSignals() as signals:
        code = rd._train_all(plan.ablation, signals, messages.append, jobs=2)
    assert code == 4 and signals.received == "SIGTERM", (code, messages)
    for training in plan.ablation:
        saved = sorted(int(p.stem) for p in (training.run_dir / "training_states").glob("*.state"))
        assert saved and 3 <= saved[-1] < 2000, (training.run_dir, saved)
        assert any(m.startswith(f"== {training.label} stopped at {saved[-1]:,} of 2,000 iterations (SIGTERM")
                   for m in messages), messages


SIDE_BY_SIDE_DRIVER = """
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from test_retrain_default import tiny
from hidiff.runners import retrain_default as rd
root = Path(sys.argv[1])
plan = rd.make_plan(Path(sys.argv[3]) / "options", tiny(root, total_iter=2000), ablation_seeds=2, ablation_jobs=2,
                    export=root / "model")
with rd.ChildSignals() as signals:
    sys.exit(rd._train_all(plan.ablation, signals, print, jobs=2))
"""


def test_side_by_side_seeds_save_when_the_command_is_killed_and_their_output_has_nowhere_to_go(
        tmp_path, photos, spawn):
    """With seeds side by side, each child's output is piped through the command.  When the command dies (a
    SIGKILL, a closed terminal) that pipe has no reader: the parent-death signal must still end in a saved
    checkpoint, not in a BrokenPipeError raised from the stop handler's message, and not in a second signal's
    default action (Linux sends the parent-death signal once per thread of the dead command, and the command's
    output copiers are threads: under load the repeats came after the first was handled)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux only")
    import re
    import time

    proc = spawn([sys.executable, "-c", SIDE_BY_SIDE_DRIVER, str(tmp_path), str(REPO / "tests"), str(REPO)],
                 cwd=tmp_path, env=run_env())
    for _ in range(2):   # each seed's line of iteration 3 (they start seconds apart)
        proc.wait_for(r"\[seed 1[01]\] .*iter:\s+3,", timeout=240)
    proc.p.send_signal(signal.SIGKILL)
    proc.finish(timeout=30)
    for folder in ("default_plain", "default_plain_seed11"):
        log = sorted((tmp_path / "experiments" / folder).glob("train_*.log"))[-1]
        deadline, m = time.monotonic() + 120, None
        while m is None and time.monotonic() < deadline:
            m = re.search(r"stopped by SIGHUP at iteration (\d+) of 2000; the checkpoint of iteration \1 is saved",
                          log.read_text())
            time.sleep(0.2)
        assert m, (folder, log.read_text()[-1500:])
        saved = sorted(int(p.stem) for p in (log.parent / "training_states").glob("*.state"))
        assert saved[-1] == int(m.group(1)) >= 3, (folder, saved, m.group(0))
