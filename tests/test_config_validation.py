"""Every value of an option file is checked at load time, and every problem is reported at once.

Each case writes a real option file, loads it, and checks that the message names the key, the
value and what was expected (these files used to load, or crashed later with a traceback).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine_tiny_run import tiny_options
from hidiff.config import load_options
from hidiff.errors import ConfigError


def write(tmp_path: Path, opt: dict, name: str = "opt.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def load_error(tmp_path: Path, opt: dict, overrides=(), is_train: bool = True) -> str:
    """The ConfigError of loading ``opt`` from a file; it must start with the file's path."""
    path = write(tmp_path, opt)
    with pytest.raises(ConfigError) as err:
        load_options(path, overrides, is_train=is_train)
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    return msg


def edited_load_error(tmp_path: Path, edit) -> str:
    """The load error of the tiny option file (with a validation set) after ``edit``."""
    opt = tiny_options(tmp_path, with_val=True)
    edit(opt)
    return load_error(tmp_path, opt)


def edited(tmp_path: Path, section: str, key: str, value) -> dict:
    opt = tiny_options(tmp_path, with_val=True)
    node = opt
    for part in section.split(".") if section else []:
        node = node.setdefault(part, {})
    node[key] = value
    return opt


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "grad_clip_norm", -0.5, "expected a value > 0, got -0.5"),
    ("logger", "print_freq", 0, "expected a value >= 1, got 0"),
    ("logger", "save_checkpoint_freq", 0, "expected a value >= 1, got 0"),
    ("logger", "keep_last", -1, "expected a value >= 0, got -1"),
    ("train.optim_total", "lr", "fast", "expected a number, got 'fast'"),
    ("train.optim_total", "lr", -1e-4, "expected a value >= 0, got -0.0001"),
    ("train.optim_total", "betas", [0.9, 1.5], "betas[1]: expected a value >= 0 and < 1, got 1.5"),
    ("datasets.train", "dataroot_lq", 5, "expected a string, got 5"),
    ("datasets.train", "batch_size_per_gpu", 0, "expected a value >= 1, got 0"),
    ("datasets.train", "num_worker_per_gpu", -1, "expected a value >= 0, got -1"),
    ("datasets.train", "seed", -3, "expected a value >= 0 and <= 4294967295, got -3"),
    ("datasets.train", "gt_size", 0, "expected a value >= 1, got 0"),
    ("datasets.val", "protocol", "gopr", "did you mean 'gopro'"),
    ("", "manual_seed", 2 ** 70, f"expected a value >= 0 and <= 4294967295, got {2 ** 70}"),
    ("", "manual_seed", -1, "expected a value >= 0"),
    ("train", "warmup_iter", -2, "expected a value >= -1, got -2"),
    ("train", "ema_decay", 1.0, "expected a value >= 0 and < 1, got 1.0"),
    ("train", "max_consecutive_nonfinite", -1, "expected a value >= 0"),
    ("val", "max_images", 0, "expected a value >= 1, got 0"),
    ("val.metrics.psnr", "crop_border", -2, "expected a value >= 0, got -2"),
    ("dist_params", "port", 70000, "expected a value >= 1 and <= 65535, got 70000"),
    ("network_g", "dim", -8, "expected a value >= 1, got -8"),
    ("network_g", "dim", "big", "expected an integer, got 'big'"),
    ("train.pixel_opt", "loss_weight", -1.0, "expected a value >= 0, got -1.0"),
])
def test_type_and_range_of_every_value(tmp_path, section, key, value, expected):
    msg = load_error(tmp_path, edited(tmp_path, section, key, value))
    where = f"{section}.{key}" if section else key
    assert f"{where}" in msg and expected in msg, msg


@pytest.mark.parametrize("name", ["", ".", "..", "../other", "runs/x", "/tmp/abs", "C:x", "a\\b"])
def test_name_is_a_plain_folder_name(tmp_path, name):
    """A fresh start archives/creates <experiments_root>/<name>: it must stay inside the root."""
    msg = load_error(tmp_path, edited(tmp_path, "", "name", name))
    assert f"name: expected a plain folder name" in msg and repr(name) in msg, msg


def test_dataset_name_is_a_plain_folder_name(tmp_path):
    msg = load_error(tmp_path, edited(tmp_path, "datasets.val", "name", "../../elsewhere"))
    assert "datasets.val.name: expected a plain folder name" in msg, msg


@pytest.mark.parametrize("edit, expected", [
    (lambda o: o["train"]["optim_total"].update(lr=float("inf")), "lr: expected a finite value >= 0, got inf"),
    (lambda o: o["train"].update(grad_clip_norm=float("inf")), "grad_clip_norm: expected a finite value > 0"),
    (lambda o: o["train"].pop("optim_total"), "train.optim_total: a training file needs an optimiser"),
    (lambda o: o["train"].update(warmup_iter=20), "train.warmup_iter: 20 is not below train.total_iter 20"),
    (lambda o: o["train"].update(scheduler={"type": "CosineAnnealingRestartLR", "periods": [20],
                                            "restart_weights": [1, 0.5]}),
     "train.scheduler.restart_weights: 2 weight(s) for 1 period(s)"),
    (lambda o: o.update(diffusion_schedule={"timesteps": 3}),
     "diffusion_schedule: model_type HI_Diff_S1 has no diffusion prior"),
    (lambda o: o.update(scale=2), "scale: expected a value >= 1 and <= 1, got 2"),
    (lambda o: o["path"].update(ignore_resume_networks=["network_dm"]),
     "path.ignore_resume_networks: there is no network_dm block"),
    (lambda o: o["datasets"]["train"].update(batch_size_per_gpus=4), "did you mean 'batch_size_per_gpu'"),
    (lambda o: o["train"]["optim_total"].update(type="LBFGS"), "train.optim_total.type"),
    (lambda o: o["val"].update(tile={"size": 20, "overlap": 4}), "val.tile.size: 20 is not a multiple of 8"),
    (lambda o: o["val"].update(tile={"size": 16, "overlap": 4}), "val.tile: stage 1 restores with the prior"),
    (lambda o: o["val"].update(window_size=16, tile={"size": 24, "overlap": 8}),
     "val.tile.size: 24 is not a multiple of 16 (val.window_size, the size divisor of tiled inference); use 16 or 32"),
])
def test_values_the_run_could_not_use_are_refused_at_load(tmp_path, edit, expected):
    """Each of these loaded before and failed later (an infinite lr at the first step, a missing optimiser when
    it was built) or was silently ignored (a stage-1 diffusion_schedule, scale 2)."""
    msg = edited_load_error(tmp_path, edit)
    assert expected in msg, msg


def test_a_network_prefix_in_ignore_resume_networks_is_the_network(tmp_path):
    opt = tiny_options(tmp_path)
    opt["path"]["ignore_resume_networks"] = ["network_le", "g"]
    assert load_options(write(tmp_path, opt)).path.ignore_resume_networks == ["network_le", "g"]


def test_a_falling_linear_beta_schedule_is_refused(tmp_path):
    from engine_tiny_run import tiny_s2_options

    opt = tiny_s2_options(tmp_path)
    opt["diffusion_schedule"].update(linear_start=0.9, linear_end=0.1)
    msg = load_error(tmp_path, opt)
    assert "diffusion_schedule.linear_start: 0.9 is above linear_end 0.1" in msg, msg
    opt["diffusion_schedule"].update(schedule="cosine")
    load_options(write(tmp_path, opt))


def test_is_train_is_the_commands(tmp_path):
    """`is_train: false` in a training file (or `-o is_train=false`) would switch off the training checks."""
    opt = dict(tiny_options(tmp_path), is_train=False)
    msg = load_error(tmp_path, opt)
    assert "is_train: False contradicts the command, which trains" in msg, msg
    with pytest.raises(ConfigError, match="contradicts the command, which tests"):
        load_options(write(tmp_path, dict(opt, is_train=True)), is_train=False)
    assert load_options(write(tmp_path, dict(opt, is_train=True))).is_train is True
    with pytest.raises(ConfigError, match="is_train: False contradicts"):
        load_options(write(tmp_path, tiny_options(tmp_path)), ["is_train=false"])


def test_val_and_test_set_names_are_unique(tmp_path):
    """A set's name is its results folder and report row: two sets named alike would replace each other."""
    opt = tiny_options(tmp_path, with_val=True)
    opt["datasets"]["val_2"] = dict(opt["datasets"]["val"], name="TinyVal", protocol="basic")
    opt["datasets"]["train"]["name"] = "tinyval"     # a training set may share it: it has no results
    msg = load_error(tmp_path, opt)
    assert "datasets.val_2.name: 'TinyVal' is also the name of datasets.val;" in msg, msg
    opt["datasets"]["val_2"]["name"] = "other"
    load_options(write(tmp_path, opt))


def test_gt_size_must_suit_the_networks(tmp_path):
    """The U-Net halves the crop three times: 31 fails at load, with the sizes that would work."""
    msg = load_error(tmp_path, edited(tmp_path, "datasets.train", "gt_size", 31))
    assert "datasets.train.gt_size: 31 is not a multiple of 8" in msg, msg
    assert "network_g Transformer needs multiples of 8" in msg and "use 24 or 32" in msg, msg


def test_progressive_sizes_and_window_size_must_suit_the_networks(tmp_path):
    opt = edited(tmp_path, "datasets.train", "gt_sizes", [16, 20])
    opt["datasets"]["train"].update(mini_batch_sizes=[2, 1], iters=[10, 10])
    opt["val"]["window_size"] = 4
    msg = load_error(tmp_path, opt)
    assert "datasets.train.gt_sizes[1]: 20 is not a multiple of 8" in msg, msg
    assert "val.window_size: 4 is not a multiple of 8" in msg, msg
    assert "datasets.train.gt_sizes[0]" not in msg, msg


def test_swintormer_pads_itself_so_any_crop_loads(tmp_path):
    opt = edited(tmp_path, "datasets.train", "gt_size", 36)
    opt["model_type"] = "PlainRestoration"
    del opt["network_le"]
    opt["network_g"] = {"type": "Swintormer", "inp_channels": 3, "dim": 8, "num_blocks": [1, 1, 1, 1],
                        "num_refinement_blocks": 1, "heads": [1, 1, 1, 1], "window_size": 4}
    assert load_options(write(tmp_path, opt)).datasets["train"].params["gt_size"] == 36


def test_non_utf8_file_names_the_file_and_byte(tmp_path):
    path = tmp_path / "latin1.yml"
    text = yaml.safe_dump(tiny_options(tmp_path), sort_keys=False).replace("name: tiny", "name: tiny  # caf\u00e9")
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xe9")
    with pytest.raises(ConfigError) as err:
        load_options(path)
    msg = str(err.value)
    assert str(path) in msg and f"byte {offset}" in msg and "UTF-8" in msg, msg


@pytest.mark.parametrize("section, key, value, expected", [
    ("val.metrics.psnr", "type", "psnr_unit8", "val.metrics.psnr.type: unknown metric 'psnr_unit8' "
                                               "(did you mean 'psnr_uint8'?)"),
    ("train.scheduler", "type", "CosineAnnealingRestartCyclicL",
     "train.scheduler.type: unknown scheduler 'CosineAnnealingRestartCyclicL' (did you mean "
     "'CosineAnnealingRestartCyclicLR'?)"),
    ("train.optim_total", "type", "Adamw", "train.optim_total.type: unknown optimizer 'Adamw' (did you mean "),
    ("datasets.train", "type", "PairedImageDatset", "(did you mean 'PairedImageDataset'?)"),
    ("network_le", "type", "latent_encoder_gel", "(did you mean 'latent_encoder_gelu'?)"),
    ("", "model_type", "HI_Diff_S", "model_type: unknown model 'HI_Diff_S' (did you mean"),
])
def test_registry_names_with_did_you_mean(tmp_path, section, key, value, expected):
    msg = load_error(tmp_path, edited(tmp_path, section, key, value))
    assert expected in msg, msg


def test_scheduler_options_checked_at_load(tmp_path):
    opt = edited(tmp_path, "train", "scheduler", {"type": "CosineAnnealingRestartCyclicLR", "periods": [5, 5],
                                                  "eta_mins": [1e-4, -1e-6], "restart_weight": [1, 1]})
    msg = load_error(tmp_path, opt)
    assert "train.scheduler.eta_mins[1]: expected a value >= 0" in msg, msg
    assert "train.scheduler.restart_weight: unknown option" in msg and "did you mean 'restart_weights'" in msg, msg


def test_schedule_must_cover_the_run_at_load(tmp_path):
    """This used to be found only when the trainer built the scheduler."""
    opt = edited(tmp_path, "train", "scheduler", {"type": "CosineAnnealingRestartCyclicLR", "periods": [5, 5]})
    msg = load_error(tmp_path, opt)
    assert "train.scheduler.periods: the periods sum to 10 but train.total_iter is 20" in msg, msg


@pytest.mark.parametrize("alias, variant", [("calculate_psnr", "psnr_uint8"), ("calculate_ssim", "ssim_basicsr")])
def test_basicsr_metric_names_are_aliases(tmp_path, alias, variant):
    opt = edited(tmp_path, "val.metrics.m", "type", alias)
    assert load_options(write(tmp_path, opt)).val.metrics["m"].type == variant


def test_registry_aliases_resolve_and_stay_unique():
    from hidiff.errors import RegistryError
    from hidiff.metrics import get_metric, psnr_uint8
    from hidiff.registry import Registry

    assert get_metric("calculate_psnr") is psnr_uint8
    reg = Registry("thing")
    reg.register("real")(psnr_uint8)
    reg.alias("other", "real")
    assert reg.get("other") is psnr_uint8 and reg.canonical("other") == "real" and reg.names() == ["real"]
    with pytest.raises(RegistryError, match="already taken"):
        reg.alias("real", "real")
    with pytest.raises(RegistryError, match="unregistered 'nothing'"):
        reg.alias("x", "nothing")
    with pytest.raises(RegistryError, match="did you mean 'other'"):
        reg.get("othr")


def test_every_problem_is_reported_at_once(tmp_path):
    opt = tiny_options(tmp_path, with_val=True)
    opt["name"] = "../escape"
    opt["manual_seed"] = 2 ** 70
    opt["datasets"]["train"]["dataroot_lq"] = 5
    opt["datasets"]["train"]["gt_size"] = 31
    opt["network_g"]["dimm"] = 8
    opt["train"]["grad_clip_norm"] = -0.5
    opt["train"]["optim_total"]["lr"] = "fast"
    opt["logger"]["print_freq"] = 0
    opt["val"]["metrics"]["psnr"]["type"] = "psnr_unit8"
    msg = load_error(tmp_path, opt)
    expected = ["name:", "manual_seed:", "datasets.train.dataroot_lq:", "datasets.train.gt_size:",
                "network_g.dimm:", "train.grad_clip_norm:", "train.optim_total.lr:", "logger.print_freq:",
                "val.metrics.psnr.type:"]
    assert f"{len(expected)} problems:" in msg, msg
    for key in expected:
        assert f"\n  - {key}" in msg, (key, msg)


def test_valid_files_still_load_unchanged(tmp_path):
    opt = tiny_options(tmp_path, with_val=True)
    loaded = load_options(write(tmp_path, opt))
    assert loaded.name == "tiny" and loaded.manual_seed == 11 and loaded.train.grad_clip_norm == 0.01
    assert loaded.datasets["train"].params["dataroot_lq"] == opt["datasets"]["train"]["dataroot_lq"]


def test_overrides_name_themselves_and_follow_the_files_spelling(tmp_path):
    path = write(tmp_path, tiny_options(tmp_path))
    with pytest.raises(ConfigError, match=r"override 'datasets.train.dataroot_lq=@data/x': the value is not valid "
                                          r"YAML .*quote it"):
        load_options(path, ["datasets.train.dataroot_lq=@data/x"])
    opt = tiny_options(tmp_path)
    opt["train"]["optim_g"] = opt["train"].pop("optim_total")        # BasicSR's spelling in the file
    path = write(tmp_path, opt)
    assert load_options(path, ["train.optim_total.lr=5e-4"]).train.optim_total.kwargs["lr"] == 5e-4
    assert load_options(write(tmp_path, tiny_options(tmp_path)),
                        ["train.optim_g.lr=2e-4"]).train.optim_total.kwargs["lr"] == 2e-4


@pytest.mark.parametrize("window, size, accepted", [(16, 24, False), (16, 32, True), (8, 24, True)])
def test_tile_size_and_window_size_agree_at_load_as_the_tiler_needs_at_run_time(tmp_path, window, size, accepted):
    """window_size 16 with 24-px tiles loaded and passed preflight, then stopped the first validation, val_freq
    iterations in: the tiler needs tiles that are a multiple of the pipeline's padding (val.window_size)."""
    import torch

    from engine_tiny_run import tiny_s2_options
    from hidiff.inference.tiler import restore_image
    from hidiff.models import build_model

    opt = tiny_s2_options(tmp_path, with_val=True)
    opt["val"].update(window_size=window, tile={"size": size, "overlap": 8})
    if not accepted:
        msg = load_error(tmp_path, opt)
        assert f"val.tile.size: {size} is not a multiple of {window} (val.window_size" in msg, msg
        return
    options = load_options(write(tmp_path, opt))
    pipeline = build_model(options).pipeline()
    with torch.no_grad():
        out = restore_image(pipeline, torch.rand(1, 3, 40, 40), options.val.tile_options(), seed=0)
    assert out.shape == (1, 3, 40, 40)
