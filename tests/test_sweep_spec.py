"""Sweep files: every run planned and validated before anything is written or started."""
from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import PY, REPO, run_env

from hidiff.config import config_hash, load_options
from hidiff.errors import ConfigError
from hidiff.sweep.spec import load_sweep
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
        "grid": {"diffusion_schedule.timesteps": [1, 3]}, "baseline": "timesteps1"})
    sweep = load_sweep(sweep_file, base)
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
    proc = subprocess.run([PY, str(REPO / "scripts" / "sweep.py"), "-opt", str(base), "--sweep", str(sweep_file)],
                          capture_output=True, text=True, env=run_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "variant 'noprior'" in proc.stderr and "dimm" in proc.stderr
    assert not (tmp_path / "experiments").exists()
