"""The retraining command counts a step as done only when its checkpoint was trained with the options planned
now (before, only the iteration count was compared: another recipe printed 'done', skipped the export and
exited 0), refuses options it would ignore, and never reports a training's refusal as its own bad input."""
from __future__ import annotations

import os

import pytest

from conftest import REPO, run_env
from hidiff.errors import ConfigError
from hidiff.runners import retrain_default as rd
from hidiff.utils.folder_lock import try_lock_folder
from procs import run_checked
from test_retrain_default import COMMAND, photos, tiny, with_overrides  # noqa: F401  (photos: a fixture)


def _files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_finished_recipe_with_other_options_is_refused_not_reported_done(tmp_path, photos):
    export = tmp_path / "model"
    args = COMMAND + ["--export", str(export), *with_overrides(tiny(tmp_path, total_iter=2))]
    run_checked(args, timeout=600, env=run_env(), cwd=tmp_path)
    experiments = tmp_path / "experiments"
    before = _files(tmp_path)
    for extra in ([], ["--dry-run"]):
        r = run_checked(args + extra + ["-o", "network_g.dim=12"], timeout=300, env=run_env(), cwd=tmp_path,
                        returncode=2)
        assert (f"error: {experiments / 'default_stage1'}: its checkpoint (2 of 2 iterations) was trained with "
                f"other options than this command's stage 1") in r.stderr, r.stderr
        assert "network_g.dim: 16 -> 12" in r.stderr and "done" not in r.stdout, (r.stdout, r.stderr)
        assert _files(tmp_path) == before
    # a key the config hash leaves out (how often it logs) is the same recipe: still done
    again = run_checked(args + ["-o", "logger.print_freq=2"], timeout=300, env=run_env(), cwd=tmp_path)
    assert "== stage 2: done (2 of 2 iterations" in again.stdout, again.stdout[-2000:]


def test_ablation_jobs_without_seeds_is_refused(tmp_path, photos):
    with pytest.raises(ConfigError, match="--ablation-jobs 2: .* needs --ablation-seeds N >= 1"):
        rd.make_plan(REPO / "options", tiny(tmp_path), ablation_jobs=2, export=tmp_path / "model")
    r = run_checked(COMMAND + ["--ablation-jobs", "3", *with_overrides(tiny(tmp_path))], timeout=120,
                    env=run_env(), cwd=tmp_path, returncode=2)
    assert "--ablation-jobs 3: trains that many of the ablation's seeds at once" in r.stderr, r.stderr
    assert not (tmp_path / "experiments").exists()


def test_a_training_that_refuses_its_start_makes_the_command_exit_1_not_2(tmp_path, photos):
    """Exit code 2 says that the command wrote and started nothing; a training child's own 2 comes after the
    plan's checks (here: its run folder is locked by another process)."""
    plan = rd.make_plan(REPO / "options", tiny(tmp_path), ablation_seeds=1, ablation_only=True,
                        export=tmp_path / "model")
    (seed,) = plan.ablation
    seed.run_dir.mkdir(parents=True)
    fd = try_lock_folder(seed.run_dir)
    messages: list[str] = []
    try:
        with rd.ChildSignals() as signals:
            code = rd._train_all(plan.ablation, signals, messages.append)
    finally:
        os.close(fd)
    assert code == 1, messages
    assert any("failed at 0 of 4 iterations (exit code 2" in m for m in messages), messages
    assert list(seed.run_dir.iterdir()) == []
