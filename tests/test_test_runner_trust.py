"""``run_test`` as a library and as ``hidiff-test``: one way to restore a run, results never lost, bad pairs and
prior-seed arguments refused before anything is written.

A tiny real Swintormer run (``PlainRestoration``, no diffusion) trained with the non-default, shape-neutral
``residual_from: none`` and saved by the CheckpointStore with both ``params`` and ``params_ema``.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import needs_shipped_default_model
from hidiff.archs import build_network
from hidiff.cli.test import main as hidiff_test
from hidiff.config import options_from_text
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.errors import ConfigError, DataError
from hidiff.runners.test_runner import run_test

sys.path.insert(0, str(Path(__file__).parent))
from test_trust_testing import option_text, save_release, tiny_state_dicts, write_pairs  # noqa: E402

NET_G = {"type": "Swintormer", "inp_channels": 3, "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
         "heads": [1, 1, 1, 1], "window_size": 4}


def option_raw(root: Path, data: Path, name: str, net_g: dict, protocol: str = "gopro") -> dict:
    return {"name": name, "model_type": "PlainRestoration", "manual_seed": 7,
            "datasets": {"test_1": {"name": "Tiny", "type": "PairedImageIRDataset", "protocol": protocol,
                                    "dataroot_gt": str(data / "target"), "dataroot_lq": str(data / "input")}},
            "network_g": net_g,
            "path": {"results_root": str(root / "results"), "experiments_root": str(root / "exps")},
            "val": {"save_img": True, "use_ema": True, "metrics": {"psnr": {"type": "psnr_uint8"}}}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The run 'run' (residual_from: none; params and params_ema differ) and a test file that leaves the key out."""
    root = tmp_path_factory.mktemp("runner_trust")
    data = write_pairs(root / "data", [(16, 24), (20, 16)])
    run_opts = options_from_text(yaml.safe_dump(option_raw(root, data, "run", {**NET_G, "residual_from": "none"})),
                                 is_train=False)
    torch.manual_seed(0)
    params = build_network(run_opts.to_dict()["network_g"]).state_dict()
    torch.manual_seed(1)
    ema = build_network(run_opts.to_dict()["network_g"]).state_dict()
    CheckpointStore(root / "exps" / "run").save(2, {"g": (params, ema)}, {"config": run_opts.to_dict()})
    return {"root": root, "data": data, "raw": option_raw(root, data, "t", NET_G)}


def write_options(world, folder: Path, **changes) -> Path:
    raw = json.loads(json.dumps(world["raw"]))
    raw["path"]["results_root"] = str(folder / "results")
    raw.update(changes)
    opt = folder / "t.yml"
    opt.write_text(yaml.safe_dump(raw))
    return opt


def summary(folder: Path) -> dict:
    return json.loads((folder / "Tiny" / "summary.json").read_text())


def test_library_call_restores_with_the_runs_settings_as_hidiff_test_does(world, tmp_path):
    """run_test(options, experiment=...) built the model from the test file (residual_from: first3) and only
    checked the run's settings: other numbers than hidiff-test, under a summary claiming the run's settings."""
    opt = write_options(world, tmp_path)
    lib = run_test(options_from_text(opt.read_text(), is_train=False), experiment="run", device="cpu")["Tiny"]
    lib_dir = tmp_path / "lib"
    (tmp_path / "results" / "t" / "run").rename(lib_dir)
    assert hidiff_test(["-opt", str(opt), "--experiment", "run", "--device", "cpu"]) == 0
    cli_dir = tmp_path / "results" / "t" / "run"
    assert summary(cli_dir)["means"] == lib["means"] == summary(lib_dir)["means"]
    for meta in (summary(cli_dir)["meta"], lib["meta"]):
        assert meta["restored_with"]["network_g"]["residual_from"] == "none"
    for f in sorted((cli_dir / "visualization" / "Tiny").glob("*.png")):
        assert f.read_bytes() == (lib_dir / "visualization" / "Tiny" / f.name).read_bytes()


def test_results_of_the_other_checkpoint_entry_are_archived_not_replaced(world, tmp_path):
    """params_ema, then params of the same file (val.use_ema=false): the EMA results were deleted."""
    opt = write_options(world, tmp_path)
    args = ["-opt", str(opt), "--experiment", "run", "--device", "cpu", "-o", "val.save_img=false"]
    assert hidiff_test(args) == 0
    final = tmp_path / "results" / "t" / "run"
    ema = summary(final)
    assert ema["meta"]["param_keys_read"] == {"g": "params_ema"}
    assert hidiff_test(args + ["-o", "val.use_ema=false"]) == 0
    archived, = (tmp_path / "results" / "t").glob("run_archived_*")
    assert summary(archived) == ema
    assert summary(final)["meta"]["param_keys_read"] == {"g": "params"}
    assert summary(final)["means"] != ema["means"]
    assert hidiff_test(args + ["-o", "val.use_ema=false", "-o", "val.metrics={}"]) == 0  # another metric set
    assert len(list((tmp_path / "results" / "t").glob("run_archived_*"))) == 2
    assert hidiff_test(args + ["-o", "val.use_ema=false", "-o", "val.metrics={}"]) == 0  # the same: replaced
    assert len(list((tmp_path / "results" / "t").glob("run_archived_*"))) == 2


def test_a_bad_later_pair_stops_the_run_before_any_folder_is_created(world, tmp_path):
    """Input and target of two sizes, or a target too small for the protocol, stopped the run only when that
    image was reached; the headers are read up front, upright as the dataset reads them (EXIF orientation)."""
    data = write_pairs(tmp_path / "data", [(16, 24), (20, 16), (16, 16), (8, 20)])
    gt = cv2.imread(str(data / "target" / "img00.png"))[..., ::-1]  # stored turned, tagged to be shown upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(gt, 1))).save(data / "target" / "img00.png", exif=exif.tobytes())
    cv2.imwrite(str(data / "input" / "img02.png"), np.zeros((16, 20, 3), np.uint8))
    raw = option_raw(tmp_path, data, "t", NET_G, protocol="basic")
    raw["path"]["experiments_root"] = str(world["root"] / "exps")
    with pytest.raises(DataError) as err:
        run_test(options_from_text(yaml.safe_dump(raw), is_train=False), experiment="run", device="cpu")
    msg = str(err.value)
    assert "img00" not in msg and "img01" not in msg
    assert f"Tiny/img02: input '{data / 'input' / 'img02.png'}' is 20x16 but target " \
           f"'{data / 'target' / 'img02.png'}' is 16x16 (WxH)" in msg
    assert f"Tiny/img03 ('{data / 'target' / 'img03.png'}') is 20x8 (WxH)" in msg
    assert "the basic protocol needs at least 11x11 pixels" in msg
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kwargs, match", [({"std_map": True}, "--std-map needs --prior-seeds"),
                                           ({"prior_seeds": 2, "prior_image": "median"}, "'median'.*mean, first")])
def test_library_refuses_prior_seed_arguments_the_command_line_refuses(tmp_path, kwargs, match):
    """A model with a prior (stage 2): std_map with one seed wrote all-zero maps; an unknown prior_image wrote
    the mean, recorded as the image asked for."""
    data = write_pairs(tmp_path / "data", [(16, 24)])
    options = options_from_text(option_text(tmp_path, data, save_release(tmp_path / "rel", tiny_state_dicts(0))),
                                is_train=False)
    with pytest.raises(ConfigError, match=match):
        run_test(options, device="cpu", **kwargs)
    assert not (tmp_path / "results").exists()


def test_a_synthetic_test_set_runs_through_the_pre_run_checks(world, tmp_path):
    """A SyntheticBlurDataset set (the default model's and the demo's val sets) made hidiff-test fail with an
    AttributeError in the pre-run size check: its pairs are made from one photo each, nothing to compare."""
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(24, 32), (20, 28)]):
        cv2.imwrite(str(sharp / f"photo{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    opt = write_options(world, tmp_path, datasets={"test_1": {
        "name": "Tiny", "type": "SyntheticBlurDataset", "sharp_root": str(sharp), "kernel_size": 7,
        "noise_sigma": 0.01}})
    args = ["-opt", str(opt), "--experiment", "run", "--device", "cpu"]
    assert hidiff_test(args) == 0
    run = tmp_path / "results" / "t" / "run"
    assert sorted(p.stem for p in (run / "visualization" / "Tiny").glob("*.png")) == ["photo0", "photo1"]
    means = summary(run)["means"]
    assert means and all(np.isfinite(v) for v in means.values()), means


@needs_shipped_default_model()
def test_library_call_takes_the_schedule_keys_the_file_leaves_to_the_run(tmp_path):
    """run_test merged the options with every default filled in, so a schedule key the test file never set
    (linear_end) contradicted the run's recorded value, where hidiff-test (which merges the file as written)
    took the run's: both must take it."""
    from hidiff.config import load_options
    from hidiff.runners.default_model import PACKAGED
    from hidiff.runners.weights import from_release

    model = tmp_path / "model"
    shutil.copytree(PACKAGED, model)
    recorded = yaml.safe_load((model / "model.yml").read_text())
    recorded["diffusion_schedule"]["linear_end"] = 0.5
    (model / "model.yml").write_text(yaml.safe_dump(recorded, sort_keys=False))
    data = write_pairs(tmp_path / "data", [(24, 32), (32, 24)])
    raw = {"name": "t", "model_type": "HI_Diff_S2", "manual_seed": 3,
           "datasets": {"test_1": {"name": "Tiny", "type": "PairedImageIRDataset", "protocol": "basic",
                                   "dataroot_gt": str(data / "target"), "dataroot_lq": str(data / "input")}},
           "diffusion_schedule": {"apply_ldm": False, "timesteps": 4},
           "path": {"results_root": str(tmp_path / "results")}}
    for net in ("network_g", "network_le_dm", "network_d"):  # as the run's, network_g without zero_init_output
        raw[net] = {k: v for k, v in recorded[net].items() if k != "zero_init_output"}
    opt = tmp_path / "t.yml"
    opt.write_text(yaml.safe_dump(raw))
    options = load_options(str(opt), [], is_train=False)
    assert options.as_given() == raw                    # as written, no defaults filled in
    moved = load_options(str(opt), [], is_train=False)
    moved.path.results_root = str(tmp_path / "moved")   # changed after loading: the resolved options are merged
    assert moved.as_given() == moved.to_dict()
    lib = run_test(options, from_release(str(model), "params_ema"), device="cpu")["Tiny"]
    assert lib["meta"]["restored_with"]["diffusion_schedule"]["linear_end"] == 0.5
    assert lib["meta"]["restored_with"]["network_g"]["zero_init_output"] is True
    lib_dir = tmp_path / "lib"
    (tmp_path / "results" / "t").rename(lib_dir)
    assert hidiff_test(["-opt", str(opt), "--weights", str(model), "--device", "cpu"]) == 0
    (cli_dir,) = (tmp_path / "results" / "t").iterdir()
    (lib_run,) = lib_dir.iterdir()
    assert summary(cli_dir)["means"] == lib["means"] == summary(lib_run)["means"]
