"""A HI-Diff stage refuses a network_g that ignores the prior, and PlainRestoration one that needs it: a training
file at load, a test at the networks it restores (a test file may leave network_g to the weights' run)."""
from __future__ import annotations

import pytest
import torch
import yaml

from conftest import OPTIONS
from engine_tiny_run import tiny_options, tiny_s2_options
from hidiff.archs import build_network
from hidiff.cli.test import main as hidiff_test
from hidiff.config import load_options, options_from_text
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.errors import ConfigError
from hidiff.runners.test_runner import run_test
from hidiff.runners.weights import from_files
from hidiff.sweep.spec import load_sweep
from sweep_tiny import write_tiny_sweep
from test_test_runner_trust import option_raw
from test_trust_testing import write_pairs

SWIN = {"type": "Swintormer", "inp_channels": 3, "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
        "heads": [1, 1, 2, 2], "residual_from": "first3", "embed_dim": 16}


def load(opt: dict, is_train: bool = True):
    return options_from_text(yaml.safe_dump(opt, sort_keys=False), is_train=is_train)


def _plain(root, **g):
    opt = tiny_options(root, model_type="PlainRestoration", name="tiny_plain")
    del opt["network_le"]
    opt["network_g"].update(g)
    return opt


@pytest.mark.parametrize("stage", ["HI_Diff_S1", "HI_Diff_S2"])
def test_a_hidiff_stage_refuses_a_network_g_without_the_prior(tmp_path, stage, is_train=True):
    opt = tiny_options(tmp_path) if stage == "HI_Diff_S1" else tiny_s2_options(tmp_path)
    load(opt, is_train)  # with the prior: fine
    opt["network_g"]["use_prior"] = False
    with pytest.raises(ConfigError) as err:
        load(opt, is_train)
    msg = str(err.value)
    assert f"network_g.use_prior: false builds a network_g that ignores HI-Diff's prior, so model_type {stage}" \
           in msg and "use model_type: PlainRestoration for a prior-free baseline" in msg, msg

    opt["network_g"] = {**SWIN}  # Swintormer's own default: prior 'none'
    with pytest.raises(ConfigError, match=r"network_g.prior: 'none' \(the Swintormer default\) builds a network_g "
                                          r"that ignores"):
        load(opt, is_train)
    opt["network_g"]["prior"] = "hidiff_latent"
    load(opt, is_train)

    opt["network_g"] = {**tiny_options(tmp_path)["network_g"], "him_levels": [], "film_bottleneck": False}
    with pytest.raises(ConfigError, match=r"network_g.him_levels: \[\] with film_bottleneck: false .* never reads"):
        load(opt, is_train)


def test_the_shipped_demo_refuses_use_prior_false_from_the_command_line():
    load_options(OPTIONS / "demo_stage2.yml")
    with pytest.raises(ConfigError, match=r"demo_stage2.yml: network_g.use_prior: false .*HI_Diff_S2.*PlainRestoration"):
        load_options(OPTIONS / "demo_stage2.yml", ["network_g.use_prior=false"])


def test_plain_restoration_refuses_a_network_g_that_needs_a_prior(tmp_path, is_train=True):
    load(_plain(tmp_path, use_prior=False), is_train)
    with pytest.raises(ConfigError, match=r"network_g.use_prior: true \(the Transformer default\) builds a network_g "
                                          r"that needs HI-Diff's prior, but model_type PlainRestoration gives it "
                                          r"none; set network_g.use_prior: false"):
        load(_plain(tmp_path), is_train)
    with pytest.raises(ConfigError, match=r"network_g.prior: 'hidiff_latent' builds .* set network_g.prior: 'none'"):
        load({**_plain(tmp_path), "network_g": {**SWIN, "prior": "hidiff_latent"}}, is_train)
    load({**_plain(tmp_path), "network_g": SWIN}, is_train)


def test_the_shipped_prior_free_files_still_load():
    for name in ("default_plain.yml", "train_swintormer_gopro.yml", "train_swintormer_dpdd.yml"):
        assert load_options(OPTIONS / name).model_type == "PlainRestoration"
    assert load_options(OPTIONS / "test_swintormer_dpdd.yml", is_train=False).model_type == "PlainRestoration"


def test_a_sweep_variant_that_drops_the_prior_is_refused_at_planning(tmp_path):
    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1, extra={
        "variants": [{"name": "prior"}, {"name": "off", "overrides": {"network_g.use_prior": False}}],
        "baseline": "prior"})
    with pytest.raises(ConfigError, match="network_g.use_prior: false builds a network_g that ignores"):
        load_sweep(sweep_file, base)
    assert not (tmp_path / "experiments").exists()


def test_a_test_file_may_leave_network_g_to_the_runs_settings_but_not_restore_a_wrong_one(tmp_path):
    """A bare ``network_g: {type: Transformer}`` (default use_prior: true) tests a prior-free run: the run's
    recorded use_prior: false restores it; without recorded settings the file's own network is refused before
    any folder is created."""
    data = write_pairs(tmp_path / "data", [(16, 24)])
    net = {k: v for k, v in tiny_options(tmp_path)["network_g"].items()}
    run = options_from_text(yaml.safe_dump(option_raw(tmp_path, data, "run", {**net, "use_prior": False})),
                            is_train=False)
    torch.manual_seed(0)
    params = build_network(run.to_dict()["network_g"]).state_dict()
    CheckpointStore(tmp_path / "exps" / "run").save(1, {"g": (params, params)}, {"config": run.to_dict()})
    bare = tmp_path / "t.yml"
    bare.write_text(yaml.safe_dump(option_raw(tmp_path, data, "t", {"type": "Transformer"})))
    assert hidiff_test(["-opt", str(bare), "--experiment", "run", "--device", "cpu"]) == 0
    assert (tmp_path / "results" / "t" / "run" / "Tiny" / "summary.json").is_file()

    torch.save({"params": params}, tmp_path / "net_g.pth")
    wrong = {**net, "use_prior": True}
    raw = option_raw(tmp_path / "w", data, "w", wrong)
    with pytest.raises(ConfigError, match=r"network_g.use_prior: true builds a network_g that needs HI-Diff's "
                                          r"prior, but model_type PlainRestoration gives it none"):
        run_test(options_from_text(yaml.safe_dump(raw), is_train=False),
                 from_files({"g": tmp_path / "net_g.pth"}), device="cpu")
    assert not (tmp_path / "w").exists()
