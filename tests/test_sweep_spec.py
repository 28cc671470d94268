"""Sweep files: every run planned and validated before anything is written or started."""
from __future__ import annotations

import pytest
import yaml
from conftest import PY, REPO, run_env

from hidiff.config import config_hash, load_options
from hidiff.errors import ConfigError
from hidiff.sweep.spec import load_sweep
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
])
def test_bad_sweep_files_fail_before_anything_runs(tmp_path, change, message):
    base, sweep_file = write_tiny_sweep(tmp_path)
    _edit(sweep_file, **change)
    with pytest.raises(ConfigError) as exc:
        load_sweep(sweep_file, base)
    assert message in str(exc.value)


def test_a_bad_override_in_the_last_variant_stops_the_cli_before_any_run(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path)
    data = yaml.safe_load(sweep_file.read_text())
    data["variants"][1]["overrides"] = {"network_g.dimm": 8}
    sweep_file.write_text(yaml.safe_dump(data))
    proc = run_checked([PY, str(REPO / "scripts" / "sweep.py"), "-opt", str(base), "--sweep", str(sweep_file)],
                       env=run_env(), cwd=tmp_path, timeout=300, returncode=2)
    assert "variant 'noprior'" in proc.stderr and "dimm" in proc.stderr
    assert not (tmp_path / "experiments").exists()


def _fake_finished(runner, run):
    """What a finished training run leaves behind, without training: config.yml, final weights, the record."""
    from hidiff.config import save_resolved
    from hidiff.utils.checkpoint import save_network_file
    from hidiff.models import build_model

    save_resolved(run.options, run.run_dir / "config.yml")
    model = build_model(run.options)
    for s in model.save_names:
        save_network_file(run.run_dir / "models" / f"net_{s}_latest.pth", model.net(s).state_dict())
    runner._record(run, 1.0, "trained")


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
