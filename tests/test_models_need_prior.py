"""A HI-Diff stage refuses a network_g that ignores the prior, and PlainRestoration one that needs it, at load."""
from __future__ import annotations

import pytest
import yaml

from conftest import OPTIONS
from engine_tiny_run import tiny_options, tiny_s2_options
from hidiff.config import load_options, options_from_text
from hidiff.errors import ConfigError
from hidiff.sweep.spec import load_sweep
from sweep_tiny import write_tiny_sweep

SWIN = {"type": "Swintormer", "inp_channels": 3, "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
        "heads": [1, 1, 2, 2], "residual_from": "first3", "embed_dim": 16}


def load(opt: dict, is_train: bool = True):
    return options_from_text(yaml.safe_dump(opt, sort_keys=False), is_train=is_train)


def _plain(root, **g):
    opt = tiny_options(root, model_type="PlainRestoration", name="tiny_plain")
    del opt["network_le"]
    opt["network_g"].update(g)
    return opt


@pytest.mark.parametrize("is_train", [True, False])
@pytest.mark.parametrize("stage", ["HI_Diff_S1", "HI_Diff_S2"])
def test_a_hidiff_stage_refuses_a_network_g_without_the_prior(tmp_path, stage, is_train):
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
    load_options(OPTIONS / "demo_test.yml", is_train=False)
    with pytest.raises(ConfigError, match=r"demo_test.yml: network_g.use_prior: false .*HI_Diff_S2.*PlainRestoration"):
        load_options(OPTIONS / "demo_test.yml", ["network_g.use_prior=false"], is_train=False)


@pytest.mark.parametrize("is_train", [True, False])
def test_plain_restoration_refuses_a_network_g_that_needs_a_prior(tmp_path, is_train):
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
