"""What an option file says is read once, as written, and every value the run could not use fails at load.

Each case here loaded before and then misbehaved: an alias shared by two blocks changed both, NaN reached a
loss, YAML 1.1 read 0100 as 64, a value the network's constructor refuses failed only at build (naming
neither file nor block), a block nothing builds was silently ignored, '~' became a folder named '~'.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
import yaml

from engine_tiny_run import tiny_options
from test_config_validation import edited_load_error, load_error, write
from hidiff.config import load_options, options_from_text, save_resolved
from hidiff.config.schema import TRAIN_LOADER_KEYS, DatasetOptions
from hidiff.config.yaml_io import dump_yaml, load_yaml, load_yaml_text
from hidiff.errors import ConfigError


def stage2(tmp_path: Path) -> dict:
    opt = tiny_options(tmp_path, with_val=True)
    opt.update(model_type="HI_Diff_S2", diffusion_schedule={"timesteps": 3},
               network_le_dm={"type": "latent_encoder_gelu", "in_chans": 3, "embed_dim": 16, "block_num": 1,
                              "stage": 2},
               network_d={"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                          "block_num": 3})
    opt["train"]["pixel_opt"]["loss_weight"] = 1.0
    opt["train"]["pixel_diff_opt"] = opt["train"]["pixel_opt"]     # one object: safe_dump writes &id001/*id001
    return opt


def synthetic_train(tmp_path: Path, **params) -> dict:
    opt = tiny_options(tmp_path)
    opt["datasets"]["train"] = {"name": "syn", "type": "SyntheticBlurDataset", "sharp_root": str(tmp_path),
                                "gt_size": 32, "batch_size_per_gpu": 2, **params}
    return opt


# ------------------------------------------------------------------------------------------------ YAML
def test_an_alias_is_a_copy_of_its_anchor(tmp_path):
    path = write(tmp_path, stage2(tmp_path))
    assert "&id001" in path.read_text() and "*id001" in path.read_text()
    opt = load_options(path, ["train.pixel_opt.loss_weight=0.5"])
    assert opt.train.pixel_opt.kwargs["loss_weight"] == 0.5
    assert opt.train.pixel_diff_opt.kwargs["loss_weight"] == 1.0
    data = load_yaml_text("a: &x {w: [1]}\nb: *x\n")
    assert data["a"] is not data["b"] and data["a"]["w"] is not data["b"]["w"]


@pytest.mark.parametrize("text, value", [
    ("01700", 1700), ("0100", 100), ("-007", -7), ("1_000", 1000), ("0x1F", 31), ("0o17", 15), ("14:10", "14:10"),
    ("1:30.5", "1:30.5"), ("yes", "yes"), ("No", "No"), ("on", "on"), ("OFF", "OFF"), ("y", "y"), ("True", True),
    ("false", False), ("2024-01-01", "2024-01-01"), ("=", "="), ("0b101", "0b101"), ("~", None), ("null", None),
])
def test_scalars_read_as_yaml_1_2(text, value):
    """YAML 1.1 (PyYAML) reads 0100 as 64, 14:10 as 850 and yes/on as true."""
    assert load_yaml_text(f"x: {text}\n")["x"] == value


def test_yaml_1_1_forms_in_overrides(tmp_path):
    path = write(tmp_path, tiny_options(tmp_path))
    opt = load_options(path, ["train.total_iter=01700", "manual_seed=0100", "logger.print_freq=010"])
    assert (opt.train.total_iter, opt.manual_seed, opt.logger.print_freq) == (1700, 100, 10)
    with pytest.raises(ConfigError, match=r"val.val_freq: expected an integer, got '14:10'"):
        load_options(path, ["val.val_freq=14:10"])
    with pytest.raises(ConfigError, match=r"logger.use_tb_logger: expected true or false, got 'yes' \(yes/no/on/off "
                                          r"are strings"):
        load_options(path, ["logger.use_tb_logger=yes"])


def test_merge_keys_resolve_and_the_mapping_s_own_keys_win():
    text = "base: &b {x: 1, y: 2}\nt:\n  <<: *b\n  x: 3\nu: {<<: [{x: 5}, *b]}\n"
    assert load_yaml_text(text) == {"base": {"x": 1, "y": 2}, "t": {"x": 3, "y": 2}, "u": {"x": 5, "y": 2}}
    with pytest.raises(ConfigError, match=r"f.yml: duplicate key 'x' at line 4 \(first defined at line 3\)"):
        load_yaml_text("b: &b {x: 1}\nt:\n  x: 3\n  x: 4\n  <<: *b\n", "f.yml")
    with pytest.raises(ConfigError, match=r"f.yml: duplicate key '<<' at line 4 .*'<<: \[\*a, \*b\]'"):
        load_yaml_text("b: &b {x: 1}\nt:\n  <<: *b\n  <<: *b\n", "f.yml")


def test_merge_keys_in_an_option_file(tmp_path):
    opt = tiny_options(tmp_path)
    del opt["val"]
    text = yaml.safe_dump(opt, sort_keys=False) + (
        "val:\n"
        "  metrics:\n"
        "    psnr: &m {type: psnr_uint8, crop_border: 2}\n"
        "    ssim:\n"
        "      <<: *m\n"
        "      type: ssim_basicsr\n")
    path = tmp_path / "merge.yml"
    path.write_text(text)
    ssim = load_options(path).val.metrics["ssim"]
    assert (ssim.type, ssim.crop_border) == ("ssim_basicsr", 2)


@pytest.mark.parametrize("text, kind", [("? [1, 2]\n: x\n", "list"), ("? {a: 1}\n: x\n", "mapping"),
                                        ("a: 1\nb:\n  ? [x]\n  : 2\n", "list")])
def test_a_list_or_mapping_as_key_names_file_and_line(tmp_path, text, kind):
    path = tmp_path / "f.yml"
    path.write_text(text)
    line = text.splitlines().index(next(l for l in text.splitlines() if "?" in l)) + 1
    with pytest.raises(ConfigError, match=rf"^{path}: line {line}: a {kind} cannot be a key"):
        load_yaml(path)


@pytest.mark.parametrize("value", ["1e3", "2e-4", "0100", "14:10", "yes", "off", "true", "null", "~", "1_000",
                                   ".5", ".inf", "0x10", "2024-01-01", "<<", "="])
def test_saved_strings_read_back_as_strings(tmp_path, value):
    """safe_dump wrote 1e3 plain, which this loader reads as a float: the saved config.yml could not load."""
    path = write(tmp_path, tiny_options(tmp_path))
    opt = load_options(path, [f"name='{value}'", f"val.suffix='{value}'"])
    save_resolved(opt, tmp_path / "config.yml")
    again = options_from_text((tmp_path / "config.yml").read_text(), source="config.yml")
    assert again.val.suffix == value and again.name == value
    data = {"s": value, "n": [1, 2.5, 2e-5, math.inf, True, None]}
    assert load_yaml_text(dump_yaml(data)) == data == yaml.safe_load(dump_yaml(data))


# ------------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize("edit, expected", [
    (lambda o: o["train"].update(pixel_opt={"type": "CharbonnierLoss", "eps": math.nan}),
     "train.pixel_opt.eps: expected a value > 0, got nan"),
    (lambda o: o["train"].update(pixel_opt={"type": "CharbonnierLoss", "eps": -1.0}),
     "train.pixel_opt.eps: expected a value > 0, got -1.0"),
    (lambda o: o["train"].update(optim_total={"type": "ASGD", "lr": 1e-3, "t0": math.nan}),
     "train.optim_total.t0: expected a finite number, got nan"),
    (lambda o: o["train"].update(optim_total={"type": "RMSprop", "lr": 1e-3, "centered": "false"}),
     "train.optim_total.centered: expected true or false, got 'false'"),
    (lambda o: o["train"].update(optim_total={"type": "Adam", "lr": 1e-3, "decoupled_weight_decay": "no"}),
     "train.optim_total.decoupled_weight_decay: expected true or false, got 'no'"),
    (lambda o: o["train"].update(optim_total={"type": "Rprop", "lr": 1e-3, "etas": [2.0, 0.5, 7]}),
     "train.optim_total.etas: expected 2 values, got 3"),
    (lambda o: o["train"].update(optim_total={"type": "Adagrad", "lr": 1e-3, "lr_decay": -5.0}),
     "train.optim_total: Invalid lr_decay value: -5.0"),
    (lambda o: o["network_g"].update(heads=[1, 2, 4]), "network_g.heads: expected a list of 4 positive integers"),
    (lambda o: o["network_g"].update(LayerNorm_type="Foo"), "network_g.LayerNorm_type: unknown value 'Foo'"),
    (lambda o: o["network_g"].update(ffn_expansion_factor=math.inf),
     "network_g.ffn_expansion_factor: expected a finite value > 0, got inf"),
    (lambda o: o["train"]["pixel_opt"].update(reduction="meen"),
     "train.pixel_opt.reduction: expected one of 'mean', 'sum', got 'meen' (did you mean 'mean'?)"),
    (lambda o: o["train"].update(scheduler={"type": "CosineAnnealingRestartCyclicLR", "periods": [20],
                                            "eta_mins": [1e-5, 1e-6]}),
     "train.scheduler.eta_mins: expected 1 values (one per period)"),
    (lambda o: o["train"].update(scheduler={"type": "MultiStepRestartLR", "milestones": [10], "restarts": [0, 10],
                                            "restart_weights": [1]}),
     "train.scheduler: restarts [0, 10] and restart_weights [1] must have the same length"),
])
def test_values_refused_at_load_not_at_build(tmp_path, edit, expected):
    msg = edited_load_error(tmp_path, edit)
    assert expected in msg, msg


@pytest.mark.parametrize("params, expected", [
    ({"noise_sigma": [0.1, 0.0]}, "datasets.train.noise_sigma: noise_sigma range must satisfy 0 <= min <= max"),
    ({"noise_sigma": [0.1, 0.2, 0.3]}, "datasets.train.noise_sigma: noise_sigma must be a number or a [min, max] "
                                       "pair"),
    ({"kernel_size": 12}, "datasets.train.kernel_size: kernel_size must be an odd integer >= 7, got 12"),
    ({"kernel_size": 11, "kernel_size_min": 13}, "datasets.train.kernel_size_min: kernel_size_min must be an odd "
                                                 "integer in [7, kernel_size=11]"),
])
def test_dataset_values_refused_at_load(tmp_path, params, expected):
    msg = load_error(tmp_path, synthetic_train(tmp_path, **params))
    assert expected in msg, msg


def test_converted_values_are_what_the_components_receive(tmp_path):
    """dim 16.0 passed the loader, which then gave 16.0 to the network: 'dim: expected an integer >= 1'."""
    import torch

    from hidiff.archs import build_network

    opt = synthetic_train(tmp_path, kernel_size=11.0)
    opt["network_g"]["dim"] = 16.0
    opt["datasets"]["train"]["gt_size"] = 32.0
    loaded = load_options(write(tmp_path, opt))
    assert type(loaded.networks["g"].kwargs["dim"]) is int
    assert type(loaded.datasets["train"].params["gt_size"]) is int
    assert type(loaded.datasets["train"].params["kernel_size"]) is int
    with torch.device("meta"):
        build_network(loaded.networks["g"], "network_g")
    # an int where a number is expected stays as written (the resolved options and their hash do not change)
    assert loaded.train.optim_total.kwargs["lr"] == 1e-3
    assert tiny_options(tmp_path)["network_g"]["heads"] == loaded.to_dict()["network_g"]["heads"]


def test_an_error_an_override_caused_names_the_override(tmp_path):
    path = write(tmp_path, tiny_options(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_options(path, ["train.total_iter=0"])
    assert str(err.value) == f"{path}: train.total_iter: expected a value >= 1, got 0 (from -o train.total_iter=0)"
    opt = tiny_options(tmp_path)
    opt["logger"]["print_freq"] = 0
    msg = load_error(tmp_path, opt, ["network_g.heads=[1,1]"])
    assert "\n  - network_g.heads: expected a list of 4 positive integers, got [1, 1] (from -o network_g.heads=[1,1])" \
        in msg, msg
    assert msg.endswith("\n  - logger.print_freq: expected a value >= 1, got 0"), msg


# ---------------------------------------------------------------------------------------- unused blocks
@pytest.mark.parametrize("edit, expected", [
    (lambda o: o.update(network_d={"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32,
                                   "block_num": 3}),
     "network_d: model_type HI_Diff_S1 builds no network_d (it builds network_g, network_le)"),
    (lambda o: o.update(model_type="PlainRestoration"), "network_le: model_type PlainRestoration builds no "
                                                         "network_le"),
    (lambda o: o["datasets"].update(train_2=dict(o["datasets"]["train"], name="other")),
     "datasets.train_2: training reads one training set, datasets.train"),
    (lambda o: o["datasets"]["val"].update(batch_size_per_gpu=4),
     "datasets.val.batch_size_per_gpu: only the training loader reads it"),
    (lambda o: o["datasets"].update(test_1=dict(o["datasets"]["val"], name="t1", use_shuffle=False)),
     "datasets.test_1.use_shuffle: only the training loader reads it"),
    (lambda o: o["datasets"]["val"].update(dataset_enlarge_ratio=4),
     "datasets.val.dataset_enlarge_ratio: only the training loader reads it"),
    (lambda o: o["datasets"]["val"].update(prefetch_mode="cpu"),
     "datasets.val.prefetch_mode: only the training loader reads it"),
])
def test_blocks_nothing_reads_are_refused(tmp_path, edit, expected):
    msg = edited_load_error(tmp_path, edit)
    assert expected in msg, msg


def test_stage2_may_carry_its_stage1_encoder_also_when_testing(tmp_path):
    opt = stage2(tmp_path)
    path = write(tmp_path, opt)
    assert set(load_options(path).networks) == {"g", "le", "le_dm", "d"}
    assert set(load_options(path, is_train=False).networks) == {"g", "le", "le_dm", "d"}


def test_a_val_set_at_the_loader_defaults_loads(tmp_path):
    """A saved config.yml lists every loader key at its default; it must load again."""
    opt = tiny_options(tmp_path, with_val=True)
    opt["datasets"]["val"].update(batch_size_per_gpu=1, use_shuffle=True, prefetch_mode=None)
    loaded = load_options(write(tmp_path, opt))
    defaults = {f.name: f.default for f in dataclasses.fields(DatasetOptions)}
    val = loaded.datasets["val"]
    assert val.phase == "val" and {k: getattr(val, k) for k in TRAIN_LOADER_KEYS} == \
        {k: defaults[k] for k in TRAIN_LOADER_KEYS}
    saved = loaded.to_dict()                       # what config.yml holds: every loader key, at its default
    assert {k: saved["datasets"]["val"][k] for k in TRAIN_LOADER_KEYS} == {k: defaults[k] for k in TRAIN_LOADER_KEYS}
    again = options_from_text(dump_yaml(saved))
    assert again.to_dict() == saved and again.datasets["val"] == val


# -------------------------------------------------------------------------------------------- paths, tile
def test_home_in_output_roots_is_expanded_once_at_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, tiny_options(tmp_path))
    opt = load_options(path, ["path.experiments_root=~/exp", "path.results_root=~/res"])
    assert opt.path.experiments_root == os.path.join(str(tmp_path / "home"), "exp")
    assert opt.path.results_root == os.path.join(str(tmp_path / "home"), "res")


@pytest.mark.parametrize("value", ["false", "null"])
def test_tile_false_means_whole_image(tmp_path, value):
    path = write(tmp_path, tiny_options(tmp_path))
    opt = load_options(path, [f"val.tile={value}"])
    assert opt.val.tile is None and opt.val.tile_options() is None


@pytest.mark.parametrize("value", ["true", "5", "[256]"])
def test_tile_of_another_type_says_what_it_takes(tmp_path, value):
    path = write(tmp_path, tiny_options(tmp_path))
    with pytest.raises(ConfigError, match=r"val.tile: expected a mapping such as \{size: 256, overlap: 32\}, or "
                                          r"null or false for whole-image inference, got"):
        load_options(path, [f"val.tile={value}"])


def test_test_command_reads_weight_overrides_as_yaml():
    from hidiff.cli.test import _override_files

    files = _override_files(['path.pretrain_network_g="weights/net g.pth"', "path.pretrain_network_le=null",
                             "path:pretrain_network_d='d.pth'", "path.pretrain_network_x=x.pth",
                             "path.pretrain_network_x=~", "val.suffix=y"])
    assert files == {"g": "weights/net g.pth", "d": "d.pth"}
