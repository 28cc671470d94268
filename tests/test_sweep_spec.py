"""Sweep files: every run planned and validated before anything is written or started."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import PY, REPO, run_env

from hidiff.config import config_hash, load_options
from hidiff.errors import ConfigError
from hidiff.sweep.spec import load_sweep
from hidiff.utils.hashing import sha256_file
from procs import run_checked
from sweep_tiny import write_tiny_sweep


def _edit(sweep_file, **changes):
    data = yaml.safe_load(sweep_file.read_text())
    data.update(changes)
    sweep_file.write_text(yaml.safe_dump(data, sort_keys=False))


def test_plan_names_seeds_and_stage1_links(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=2)
    sweep = load_sweep(sweep_file, base)
    assert sweep.folder == tmp_path / "experiments" / "sweeps" / "tiny"
    assert [r.name for r in sweep.runs] == ["tiny_stage1_s0", "tiny_prior_s0", "tiny_stage1_s1", "tiny_prior_s1",
                                            "tiny_noprior_s0", "tiny_noprior_s1"]
    prior = sweep.run("tiny_prior_s1")
    assert prior.after == ["tiny_stage1_s1"] and prior.options.path.stage1 == "tiny_stage1_s1"
    assert prior.manual_seed == 12 and sweep.run("tiny_stage1_s1").manual_seed == 12   # tiny base seed 11 + 1
    assert sweep.run("tiny_noprior_s0").options.model_type == "PlainRestoration"
    assert sweep.run("tiny_noprior_s0").after == []
    # the hash recorded for a run is the one the trainer computes from the written option file
    (tmp_path / "o.yml").write_text(prior.text)
    assert config_hash(load_options(tmp_path / "o.yml")) == prior.hash
    ev = prior.eval_options
    assert ev.model_type == "HI_Diff_S2" and ev.diffusion_schedule.timesteps == 2
    assert ev.path.results_root == str(sweep.folder / "eval") and ev.manual_seed == 12
    assert not sweep.folder.exists()   # planning writes nothing



def test_a_run_name_another_sweep_has_recorded_is_refused(tmp_path):
    """Sweep 'a' variant 'b_c' and sweep 'a_b' variant 'c' both name a run 'a_b_c_s0': the second would archive
    the first's run under it.  A record of the other sweep (as its runner writes one) stops the plan."""
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    other = tmp_path / "experiments" / "sweeps" / "ti"
    (other / "runs").mkdir(parents=True)
    (other / "runs" / "tiny_noprior_s0.json").write_text(json.dumps({"run": "tiny_noprior_s0", "status": "trained"}))
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep_file, base)
    assert f"the run 'tiny_noprior_s0' is also a run of the sweep in '{other}'" in str(err.value)
    assert "rename this sweep or the variant" in str(err.value)
    assert not (tmp_path / "experiments" / "sweeps" / "tiny").exists()
    assert "(its record runs/tiny_noprior_s0.json)" in str(err.value)
    (other / "runs" / "tiny_noprior_s0.json").unlink()   # its own names only: planning works again
    assert load_sweep(sweep_file, base).folder == tmp_path / "experiments" / "sweeps" / "tiny"
    # planned by the other sweep (its plan.json, written before its first training) but not started yet: that
    # sweep would reach it later and archive this one's run
    (other / "plan.json").write_text(json.dumps({"name": "ti", "runs": [{"name": "ti_x_s0"},
                                                                        {"name": "tiny_noprior_s0"}]}))
    with pytest.raises(ConfigError, match=r"also a run of the sweep in '.*ti' \(its plan\.json\)"):
        load_sweep(sweep_file, base)
    (other / "plan.json").write_text("{not json")   # a plan that cannot be read claims nothing
    assert load_sweep(sweep_file, base).folder == tmp_path / "experiments" / "sweeps" / "tiny"

def test_grid_and_shared_network_overrides_reach_stage1(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1, extra={
        "variants": [{"name": "single", "overrides": {"network_g.prior_pyramid": False}}],
        "grid": {"diffusion_schedule.timesteps": [1, 3]}, "grid_label": "T={timesteps}", "baseline": "timesteps1"})
    sweep = load_sweep(sweep_file, base)
    assert [v.label for v in sweep.variants] == ["single", "T=1", "T=3"]
    names = [r.name for r in sweep.runs]
    # the grid variants share one stage-1 run (same stage-1 options); 'single' changes net_g, so it has its own
    assert names == ["tiny_stage1_single_s0", "tiny_single_s0", "tiny_stage1_s0", "tiny_timesteps1_s0",
                     "tiny_timesteps3_s0"]
    assert sweep.run("tiny_stage1_single_s0").options.networks["g"].kwargs["prior_pyramid"] is False
    assert sweep.run("tiny_timesteps3_s0").options.path.stage1 == "tiny_stage1_s0"
    assert sweep.run("tiny_timesteps3_s0").options.diffusion_schedule.timesteps == 3


@pytest.mark.parametrize("change, message", [
    ({"seedz": 2}, "unknown key 'seedz' (did you mean 'seeds'?)"),
    ({"baseline": "noprio"}, "no variant named 'noprio' (did you mean 'noprior'?)"),
    ({"variants": [{"name": "a", "overides": {}}]}, "unknown key 'overides' (did you mean 'overrides'?)"),
    ({"variants": [{"name": "a b"}]}, "'a b' is not a plain folder name"),
    ({"seeds": 0}, "at least 1 seed"),
    ({"grid_label": "T={steps}"}, "given without a grid"),
    ({"grid": {"train.total_iter": []}}, "non-empty list"),
    ({"eval": {"test": "missing.yml"}}, "eval.test: file not found"),
    ({"stage1": {"opt": "stage1.yml", "overrides": {"network_le.embed_dimm": 8}}}, "stage 1 of variant 'prior'"),
    # what the sweep sets per run: an override of it was silently replaced (3 variants training the same runs)
    ({"grid": {"manual_seed": [1, 2, 3]}}, "grid: 'manual_seed' is set by the sweep for each run from its 'seeds'"),
    ({"variants": [{"name": "a", "overrides": {"name": "mine"}}]}, "variants[0].overrides: 'name' is set by the sweep"),
    ({"variants": [{"name": "a", "overrides": {"manual_seed": 5}}]}, "variants[0].overrides: 'manual_seed' is set"),
    ({"overrides": {"name": "mine"}}, "overrides: 'name' is set by the sweep"),
    ({"stage1": {"opt": "stage1.yml", "overrides": {"manual_seed": 5}}}, "stage1.overrides: 'manual_seed' is set"),
    ({"variants": [{"name": "a", "overrides": {"path.stage1": "old_run"}}]},
     "variants[0].overrides: 'path.stage1' is set by the sweep to each variant's stage-1 run"),
    # equal options under two names: the same runs trained twice
    ({"grid": {"train.grad_clip_norm": [1, 1.0]}},
     "variants 'grad_clip_norm1' and 'grad_clip_norm1.0' resolve to the same options"),
    ({"variants": [{"name": "a"}, {"name": "b", "label": "B"}], "baseline": "a"},
     "variants 'a' and 'b' resolve to the same options"),
    # evaluation overrides of what the sweep sets: the scores landed where the report does not look (or another
    # run folder's weights were evaluated under this run's name)
    ({"eval": {"test": "test.yml", "overrides": {"name": "foo"}}},
     "eval.overrides: 'name' is set by the sweep for each evaluation"),
    ({"eval": {"test": "test.yml", "overrides": {"path.results_root": "/tmp/elsewhere"}}},
     "eval.overrides: 'path.results_root' is set by the sweep for each evaluation"),
    ({"eval": {"test": "test.yml", "overrides": {"path.experiments_root": "other"}}},
     "eval.overrides: 'path.experiments_root' is set by the sweep for each evaluation"),
    ({"eval": {"test": "test.yml", "overrides": {"manual_seed": 3}}},
     "eval.overrides: 'manual_seed' is set by the sweep for each evaluation"),
    # stage-1 settings that no run uses were dropped without a word
    ({"stage1": None, "baseline": "noprior",
      "variants": [{"name": "noprior", "opt": "plain.yml", "stage1_overrides": {"network_g.dim": 16}}]},
     "variants[0].stage1_overrides: given, but the sweep file has no 'stage1' block, so no stage-1 run is trained "
     "for variant 'noprior'"),
    ({"variants": [{"name": "prior"}, {"name": "noprior", "opt": "plain.yml",
                                        "stage1_overrides": {"network_g.dim": 16}}]},
     "variant 'noprior': stage1_overrides given, but its model is PlainRestoration, not HI_Diff_S2"),
    ({"variants": [{"name": "noprior", "opt": "plain.yml"}]},
     "stage1: no variant uses it (only HI_Diff_S2 variants train a stage-1 run; the variants' models: noprior "
     "(PlainRestoration)); remove the stage1 block"),
    # stage 2 with no stage-1 weights at all: --check passed, the sweep failed after the other runs trained
    ({"stage1": None}, "variant 'prior', seed 11: model HI_Diff_S2 needs stage-1 weights, but the sweep file has "
                       "no 'stage1: {opt: ...}' block"),
])
def test_bad_sweep_files_fail_before_anything_runs(tmp_path, change, message):
    base, sweep_file = write_tiny_sweep(tmp_path)
    _edit(sweep_file, **change)
    with pytest.raises(ConfigError) as exc:
        load_sweep(sweep_file, base)
    assert message in str(exc.value)


def test_a_command_line_seed_or_name_is_refused(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path)
    for item in ("manual_seed=5", "name=mine"):
        with pytest.raises(ConfigError, match=f"-o: '{item.split('=')[0]}' is set by the sweep"):
            load_sweep(sweep_file, base, [item])
    for item in ("name=mine", "manual_seed=5", "path.results_root=/tmp/elsewhere", f"path.experiments_root={tmp_path}",
                 'path={"results_root": "/tmp/elsewhere"}'):
        with pytest.raises(ConfigError, match=f"--eval-o: '{item.split('=')[0]}' is set by the sweep for each "
                                              f"evaluation"):
            load_sweep(sweep_file, base, eval_overrides=[item])
    # what the evaluation may change: its sets and settings
    ev = load_sweep(sweep_file, base, eval_overrides=["val.score_input=false"]).run("tiny_prior_s0").eval_options
    assert ev.val.score_input is False


def test_evaluation_overrides_that_the_trained_weights_do_not_fit_are_refused_before_training(tmp_path):
    """--eval-o network_g.dim=16 planned, trained every run, then failed at each evaluation's weight load."""
    base, sweep_file = write_tiny_sweep(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_sweep(sweep_file, base, eval_overrides=["network_g.dim=16"])
    msg = str(exc.value)
    assert "eval of tiny_prior_s0" in msg and "network_g.dim=16" in msg and "trained weights no longer fit" in msg
    assert "attn.qkv.weight [48, 16, 1, 1] -> [96, 32, 1, 1]" in msg
    with pytest.raises(ConfigError, match="model_type HI_Diff_S1 builds no network_le_dm"):
        load_sweep(sweep_file, base, eval_overrides=["model_type=HI_Diff_S1"])
    _edit(sweep_file, eval={"test": "test.yml", "overrides": {"network_le_dm.embed_dim": 32}})
    with pytest.raises(ConfigError, match="change network_le_dm so that the trained weights no longer fit"):
        load_sweep(sweep_file, base)
    # how a network computes may change: the same weights load
    _edit(sweep_file, eval={"test": "test.yml", "overrides": {"network_g.fused_attention": False}})
    ev = load_sweep(sweep_file, base).run("tiny_prior_s0").eval_options
    assert ev.networks["g"].kwargs["fused_attention"] is False
    assert not (tmp_path / "experiments").exists()


def test_seeds_option_takes_the_first_of_a_seed_list(tmp_path):
    """--seeds 2 on seeds: [20, 30, 40] gave [11, 12] (base seed + k), so no finished run matched."""
    base, sweep_file = write_tiny_sweep(tmp_path)
    _edit(sweep_file, seeds=[20, 30, 40])
    assert load_sweep(sweep_file, base, seeds=2).seeds == [20, 30]
    assert load_sweep(sweep_file, base).seeds == [20, 30, 40]
    with pytest.raises(ConfigError, match=r"--seeds 4: .* lists 3 seeds \(\[20, 30, 40\]\); give 1 to 3"):
        load_sweep(sweep_file, base, seeds=4)
    _edit(sweep_file, seeds=2)
    assert load_sweep(sweep_file, base, seeds=3).seeds == [11, 12, 13]    # a number: base seed + k, as before


def test_a_variant_file_with_other_stage1_networks_is_refused(tmp_path):
    """Only overrides reached stage 1: a variant's own opt file with another network_g trained stage 1 with the
    stage-1 file's network, and its stage 2 failed to load it after the earlier runs had trained."""
    base, sweep_file = write_tiny_sweep(tmp_path)
    wide = yaml.safe_load(base.read_text())
    wide["network_g"]["dim"] = 16
    (tmp_path / "wide.yml").write_text(yaml.safe_dump(wide))
    _edit(sweep_file, variants=[{"name": "wide", "opt": "wide.yml"}, {"name": "noprior", "opt": "plain.yml"}])
    with pytest.raises(ConfigError) as exc:
        load_sweep(sweep_file, base)
    msg = str(exc.value)
    assert "variant 'wide'" in msg and "network_g" in msg and "dim: 8 vs 16" in msg
    assert str(tmp_path / "wide.yml") in msg and "'tiny_stage1_s0'" in msg and str(tmp_path / "stage1.yml") in msg
    # the same change given to its stage-1 run too: accepted
    _edit(sweep_file, variants=[{"name": "wide", "opt": "wide.yml", "stage1_overrides": {"network_g.dim": 16}},
                                {"name": "noprior", "opt": "plain.yml"}])
    assert load_sweep(sweep_file, base).run("tiny_stage1_wide_s0").options.networks["g"].kwargs["dim"] == 16


def test_a_bad_override_in_the_last_variant_stops_the_cli_before_any_run(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path)
    data = yaml.safe_load(sweep_file.read_text())
    data["variants"][1]["overrides"] = {"network_g.dimm": 8}
    sweep_file.write_text(yaml.safe_dump(data))
    proc = run_checked([PY, str(REPO / "scripts" / "sweep.py"), "-opt", str(base), "--sweep", str(sweep_file)],
                       env=run_env(), cwd=tmp_path, timeout=300, returncode=2)
    assert "variant 'noprior'" in proc.stderr and "dimm" in proc.stderr
    assert not (tmp_path / "experiments").exists()


def _fake_finished(runner, run, record=True):
    """What a finished training run leaves behind, without training: config.yml, final weights, the record."""
    from hidiff.config import save_resolved
    from hidiff.utils.checkpoint import save_network_file
    from hidiff.models import build_model

    save_resolved(run.options, run.run_dir / "config.yml")
    model = build_model(run.options)
    for s in model.save_names:
        save_network_file(run.run_dir / "models" / f"net_{s}_latest.pth", model.net(s).state_dict())
    if record:
        runner._record(run, 1.0, "trained")


def _resume(runner, run):
    cmd = runner.train_command(run)
    return cmd[cmd.index("--resume") + 1]


def test_reuse_needs_the_same_options_and_the_same_stage1_weights(tmp_path):
    from hidiff.sweep.runner import SweepRunner

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    runner = SweepRunner(load_sweep(sweep_file, base))
    s1, prior, plain = (runner.sweep.run(n) for n in ("tiny_stage1_s0", "tiny_prior_s0", "tiny_noprior_s0"))
    assert not runner.reusable(plain)
    cmd = runner.train_command(plain)
    assert cmd[cmd.index("--resume") + 1] == "auto"
    for run in (s1, prior, plain):
        _fake_finished(runner, run)
    assert runner.reusable(s1) and runner.reusable(prior) and runner.reusable(plain)
    # another total_iter: the finished run is not reused, and its folder is started afresh (the trainer archives it)
    changed = SweepRunner(load_sweep(sweep_file, base, ["train.total_iter=3"]))
    assert not changed.reusable(changed.sweep.run("tiny_noprior_s0"))
    cmd = changed.train_command(changed.sweep.run("tiny_noprior_s0"))
    assert cmd[cmd.index("--resume") + 1] == "none"
    # stage-1 weights that changed since stage 2 was trained: stage 2 is trained again
    runner.records.clear()
    runner._record(s1, 1.0, "trained")
    (s1.run_dir / "models" / "net_g_latest.pth").write_bytes(b"other weights")
    runner._record(s1, 1.0, "trained")
    assert not runner.reusable(prior)


def test_the_quality_benchmark_sweep_validates():
    sweeps = REPO / "benchmarks" / "sweeps"
    sweep = load_sweep(sweeps / "quality.yml", sweeps / "quality_stage2.yml")
    assert [v.name for v in sweep.variants] == ["no_prior", "single_scale_T8", "timesteps1", "timesteps4",
                                                "timesteps8"]
    assert sweep.baseline == "no_prior" and len(sweep.seeds) == 3 and len(sweep.runs) == 5 * 3 + 2 * 3
    assert [sweep.run(f"quality_timesteps{t}_s2").options.diffusion_schedule.timesteps for t in (1, 4, 8)] == [1, 4, 8]
    assert sweep.run("quality_stage1_single_scale_T8_s0").options.networks["g"].kwargs["prior_pyramid"] is False
    plain, s1, s2 = (sweep.run(n).options.train.total_iter for n in ("quality_no_prior_s0", "quality_stage1_s0",
                                                                      "quality_timesteps8_s0"))
    assert plain == s1 + s2     # every U-Net gets the same number of updates


def test_stage2_resume_follows_the_stage1_weights_recorded_on_disk(tmp_path):
    """Stage 1 retrained in a session that was stopped before stage 2 started: only that session knew that stage
    2's folder came from the old stage-1 weights, so every later one passed --resume auto, which the trainer
    refuses (stage-1 weights changed), and running the same command again never got further."""
    from hidiff.engine.checkpoint_store import CheckpointStore
    from hidiff.sweep.runner import SweepRunner

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    session = SweepRunner(load_sweep(sweep_file, base))
    s1, prior = session.sweep.run("tiny_stage1_s0"), session.sweep.run("tiny_prior_s0")
    _fake_finished(session, s1)
    _fake_finished(session, prior)
    # a session retrains stage 1 (other weights) and is stopped before stage 2 starts
    (s1.run_dir / "models" / "net_le_latest.pth").write_bytes(b"retrained stage-1 weights")
    session._record(s1, 1.0, "trained")

    def next_session():
        runner = SweepRunner(load_sweep(sweep_file, base))
        assert runner.reusable(runner.sweep.run("tiny_stage1_s0"))
        runner._record(runner.sweep.run("tiny_stage1_s0"), None, "reused")
        return runner, runner.sweep.run("tiny_prior_s0")

    later, prior = next_session()
    assert not later.reusable(prior) and _resume(later, prior) == "none"
    assert _resume(next_session()[0], prior) == "none"          # and in every session after it
    # stage 2 starts from the new weights (its record says so on disk) and is stopped: the next session resumes
    later._record(prior, None, "training")
    rec = json.loads(later.record_file(prior).read_text())
    assert rec["status"] == "training" and rec["inputs"] == {"tiny_stage1_s0": later.records["tiny_stage1_s0"][
        "weights_sha256"]}
    again, prior = next_session()
    assert _resume(again, prior) == "auto"
    assert not again.reusable(prior)     # started, not finished: its old final weights are no result
    # no record to tell (a folder from before), but its newest checkpoint started from other stage-1 weights
    again.record_file(prior).unlink()
    net = {"w": torch.zeros(1)}
    CheckpointStore(prior.run_dir).save(1, {"d": (net, None)},
                                        {"pretrained": {"le": {"path": "old", "sha256": "0" * 64}}})
    assert _resume(again, prior) == "none"
    CheckpointStore(prior.run_dir).save(2, {"d": (net, None)}, {"pretrained": {"le": {
        "path": "now", "sha256": sha256_file(s1.run_dir / "models" / "net_le_latest.pth")}}})
    assert _resume(again, prior) == "auto"


def test_a_second_sweep_on_the_same_folder_is_refused_before_it_writes(tmp_path, capsys):
    """Two sweeps on one folder rewrote each other's plan and option files while their runs trained."""
    from hidiff.sweep import cli
    from hidiff.sweep.runner import SweepRunner

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    first = SweepRunner(load_sweep(sweep_file, base))
    first.hold_lock()
    try:
        assert cli.main(["-opt", str(base), "--sweep", str(sweep_file)]) == 2
        err = capsys.readouterr().err
        assert f"{first.folder}: another hidiff-sweep is running on this sweep folder now" in err
        second = SweepRunner(load_sweep(sweep_file, base))
        with pytest.raises(ConfigError, match="another hidiff-sweep is running"):
            second.execute()
        assert list(first.folder.iterdir()) == []       # nothing written, nothing started
        assert not (tmp_path / "experiments" / "tiny_stage1_s0").exists()
    finally:
        first.release_lock()
    second.hold_lock()      # free once the first one ends
    second.release_lock()


def test_a_training_that_leaves_other_options_in_its_folder_is_not_recorded(tmp_path):
    """A run recorded whatever the folder held when its trainer exited 0 (another sweep's training, say)."""
    from hidiff.sweep.runner import Job, RunFailed, SweepRunner

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    runner = SweepRunner(load_sweep(sweep_file, base))
    plain = runner.sweep.run("tiny_noprior_s0")
    _fake_finished(runner, load_sweep(sweep_file, base, ["train.total_iter=3"]).run("tiny_noprior_s0"), record=False)
    log = tmp_path / "train.log"
    log.write_text("done\n")
    with pytest.raises(RunFailed) as exc:
        runner._finish(Job("train:tiny_noprior_s0", "train", plain), 0, 1.0, log)
    assert "holds a run with other options" in str(exc.value) and str(plain.run_dir / "config.yml") in str(exc.value)
    assert plain.hash in str(exc.value)
    assert not runner.record_file(plain).exists() and "tiny_noprior_s0" not in runner.records


def test_a_new_plan_moves_the_old_report_aside(tmp_path):
    """results.md of an old plan stayed beside the plan.json of a new one that never finished."""
    from hidiff.sweep.runner import SweepRunner

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    logs = []
    runner = SweepRunner(load_sweep(sweep_file, base), log=logs.append)
    runner.write_plan()
    report = ["results.md", "results.csv", "per_image.csv", "chart_tinytest_psnr_uint8_rgb.png"]
    for name in report:
        (runner.folder / name).write_text("old report")
    runner.write_plan()           # the same plan: its report stays
    assert all((runner.folder / n).is_file() for n in report) and not logs
    SweepRunner(load_sweep(sweep_file, base, ["train.total_iter=3"]), log=logs.append).write_plan()
    aside = list(runner.folder.glob("superseded_*"))
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == sorted(report)
    assert not any((runner.folder / n).exists() for n in report)
    assert len(logs) == 1 and "the plan changed" in logs[0] and str(aside[0]) in logs[0]


def test_an_evaluation_that_leaves_no_scores_is_not_recorded(tmp_path):
    """An evaluation that exited 0 was recorded even when its metrics.csv was not where the report reads it
    (scores written elsewhere): the report then failed, and every rerun evaluated it again."""
    from hidiff.sweep.report import metrics_csv
    from hidiff.sweep.runner import Job, RunFailed, SweepRunner

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    runner = SweepRunner(load_sweep(sweep_file, base))
    plain = runner.sweep.run("tiny_noprior_s0")
    _fake_finished(runner, plain)
    log = tmp_path / "eval.log"
    log.write_text("done\n")
    expected = metrics_csv(runner.folder, plain.name, "tinytest")
    with pytest.raises(RunFailed) as exc:
        runner._finish(Job("eval:tiny_noprior_s0", "eval", plain), 0, 1.0, log)
    assert f"{expected} missing" in str(exc.value) and str(log) in str(exc.value)
    assert not runner.eval_record_file(plain).exists()
    expected.parent.mkdir(parents=True)
    expected.write_text("name,psnr_uint8_rgb\nim00,30.0\n")
    runner._finish(Job("eval:tiny_noprior_s0", "eval", plain), 0, 1.0, log)
    assert json.loads(runner.eval_record_file(plain).read_text())["sets"] == ["tinytest"]


def test_an_evaluation_is_not_reused_once_its_test_images_changed(tmp_path):
    """The evaluation's record kept the weights and the options' hash, which holds the test set's paths only: a
    test set rewritten in place with other images (benchmarks/quality.py --test-crop 0, --test OTHER) reused
    the old scores beside classical rows scored on the new set."""
    import os

    import cv2

    from hidiff.sweep.report import metrics_csv
    from hidiff.sweep.runner import Job, SweepRunner

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    sweep = load_sweep(sweep_file, base)
    runner = SweepRunner(sweep)
    plain = sweep.run("tiny_noprior_s0")
    _fake_finished(runner, plain)
    scores = metrics_csv(runner.folder, plain.name, "tinytest")
    scores.parent.mkdir(parents=True)
    scores.write_text("name,psnr_uint8_rgb\nim00,30.0\n")
    log = tmp_path / "eval.log"
    log.write_text("done\n")
    runner._finish(Job("eval:tiny_noprior_s0", "eval", plain), 0, 1.0, log)
    assert set(json.loads(runner.eval_record_file(plain).read_text())["test_data"]) == {
        "test_1.dataroot_gt", "test_1.dataroot_lq"}

    def fresh() -> SweepRunner:     # a later call of the sweep: digests are computed once per call
        again = SweepRunner(sweep)
        again.records[plain.name] = runner.records[plain.name]
        return again

    assert fresh().eval_reusable(plain)
    target = sorted((tmp_path / "data" / "target").iterdir())[0]
    os.utime(target, (1, 1))                                   # touched only: the same bytes, still reused
    assert fresh().eval_reusable(plain)
    image = cv2.imread(str(target))
    cv2.imwrite(str(target), 255 - image)                      # other pixels under the same name
    assert not fresh().eval_reusable(plain)
