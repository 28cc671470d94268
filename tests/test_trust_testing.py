"""Trust in test.py, hidiff-deblur and export: which weights, which settings, what is written, what is refused.

Real tiny networks, real weight files, a real experiment folder written by the
CheckpointStore, and real subprocesses of scripts/test.py and hidiff-deblur.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import PY, REPO, run_env
from hidiff.archs import build_network
from hidiff.cli.deblur import main as deblur_main
from hidiff.cli.export import main as export_main
from hidiff.config import options_from_text
from hidiff.data.build import build_dataset
from hidiff.diffusion import build_diffusion
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.inference.noise import image_seed
from hidiff.inference.pipeline import RestorationPipeline
from hidiff.inference.tiler import restore_image
from hidiff.metrics import psnr_uint8
from hidiff.data.image_io import to_uint8
from procs import run_checked

sys.path.insert(0, str(Path(__file__).parent))
from tiny import NET_D, NET_G, NET_LE_DM  # noqa: E402

NETS = {"g": NET_G, "le_dm": NET_LE_DM, "d": NET_D}


def tiny_state_dicts(seed: int) -> dict:
    torch.manual_seed(seed)
    sds = {s: build_network(b).state_dict() for s, b in NETS.items()}
    sds["g"]["output.weight"] = sds["g"]["output.weight"] * 0.05  # outputs stay near the input
    return sds


def save_release(folder: Path, sds: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s, sd in sds.items():
        torch.save({"params": sd}, folder / f"net_{s}.pth")
    return folder


def write_pairs(folder: Path, sizes, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        gt = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        lq = cv2.GaussianBlur(gt, (5, 5), 1.5)
        for sub, img in (("target", gt), ("input", lq)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / sub / f"img{i:02d}.png"), img)
    return folder


def option_text(root: Path, data: Path, weights: Path, timesteps=None, name="test_tiny") -> str:
    raw = {
        "name": name, "model_type": "HI_Diff_S2", "manual_seed": 7,
        "datasets": {"test_1": {"name": "Tiny", "type": "PairedImageIRDataset", "protocol": "gopro",
                                "dataroot_gt": str(data / "target"), "dataroot_lq": str(data / "input")}},
        **{f"network_{s}": b for s, b in NETS.items()},
        "diffusion_schedule": {"apply_ldm": False, **({"timesteps": timesteps} if timesteps else {})},
        "path": {**{f"pretrain_network_{s}": str(weights / f"net_{s}.pth") for s in NETS},
                 "results_root": str(root / "results"), "experiments_root": str(root / "exps")},
        "val": {"save_img": True, "use_ema": False, "metrics": {"psnr": {"type": "psnr_uint8"}}},
    }
    return yaml.safe_dump(raw)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two releases (A named by the option file, B), a run trained with T=2 whose two newest sets are broken."""
    root = tmp_path_factory.mktemp("trust")
    data = write_pairs(root / "data", [(16, 24), (20, 16)])
    rel_a = save_release(root / "relA", tiny_state_dicts(0))
    save_release(root / "relB", tiny_state_dicts(1))
    opt = root / "test_tiny.yml"
    opt.write_text(option_text(root, data, rel_a))
    run_opts = options_from_text(option_text(root, data, rel_a, timesteps=2, name="run_t2"), is_train=False)
    store = CheckpointStore(root / "exps" / "run_t2")
    good = tiny_state_dicts(2)
    store.save(2, {s: (sd, None) for s, sd in good.items()}, {"config": run_opts.to_dict()})
    # iteration 4: network files written, the process killed before the state file
    store.save(4, {s: (sd, None) for s, sd in tiny_state_dicts(3).items()}, {"config": run_opts.to_dict()})
    store.state_path(4).unlink()
    # iteration 6: complete on disk, then one network file replaced (the state's sha256 no longer matches)
    store.save(6, {s: (sd, None) for s, sd in tiny_state_dicts(4).items()}, {"config": run_opts.to_dict()})
    torch.save({"params": tiny_state_dicts(5)["d"]}, store.net_path("d", 6))
    return {"root": root, "data": data, "opt": opt, "relA": rel_a, "relB": root / "relB", "good": good,
            "exps": root / "exps", "state": store.state_path(2)}


def run_test_py(*args, cwd=REPO, returncode=0):
    return run_checked([PY, REPO / "scripts" / "test.py", *args], cwd=cwd, env=run_env(), timeout=600,
                       returncode=returncode)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expected_outputs(world, sds: dict, timesteps: int) -> dict:
    """What the weights restore, computed here: the whole image, T steps, seeded from the stem."""
    opts = options_from_text(world["opt"].read_text(), is_train=False)
    nets = {s: build_network(NETS[s]) for s in NETS}
    for s, net in nets.items():
        net.load_state_dict(sds[s])
        net.eval()
    pipe = RestorationPipeline(nets["g"], net_le_dm=nets["le_dm"], net_d=nets["d"],
                               diffusion=build_diffusion("hidiff_local", timesteps=timesteps))
    out = {}
    for item in build_dataset(opts.datasets["test_1"], opts.manual_seed):
        with torch.no_grad():
            restored = restore_image(pipe, item["lq"].unsqueeze(0), "whole", seed=image_seed(item["key"], 7))
        out[item["key"]] = (to_uint8(restored), to_uint8(item["gt"]))
    return out


# ------------------------------------------------------------------ test.py
def test_experiment_on_the_command_line_wins_with_its_run_settings_and_complete_set(world):
    """--experiment beats path.pretrain_network_*, takes the newest *complete* set (2, not 4 or 6),
    restores with the run's T=2 (the option file leaves T out), and every summary names the files + sha256.
    The option file's own weight paths are not even needed (here they point at files that do not exist)."""
    raw = yaml.safe_load(world["opt"].read_text())
    raw["path"].update({f"pretrain_network_{s}": str(world["root"] / "gone" / f"net_{s}.pth") for s in NETS})
    opt = world["root"] / "gone.yml"
    opt.write_text(yaml.safe_dump(raw))
    proc = run_test_py("-opt", opt, "--experiment", "run_t2")
    out = world["root"] / "results" / "test_tiny" / "run_t2"
    want = expected_outputs(world, world["good"], timesteps=2)
    rows = {r["name"]: r for r in csv.DictReader(open(out / "Tiny" / "metrics.csv"))}
    for key, (restored, gt) in want.items():
        written = cv2.imread(str(out / "visualization" / "Tiny" / f"{key}.png"))[:, :, ::-1]
        np.testing.assert_array_equal(written, restored)
        # val.metrics is acted on: its own column, the metric it names
        assert float(rows[key]["val_psnr_psnr_uint8"]) == pytest.approx(psnr_uint8(restored, gt), abs=1e-9)
    summary = json.loads((out / "Tiny" / "summary.json").read_text())
    assert summary["meta"]["diffusion_steps"] == 2
    # the summary says which entry of each file was read (a file without params_ema falls back to params)
    files = {s: torch.load(world["exps"] / "run_t2" / "models" / f"net_{s}_2.pth", weights_only=True) for s in NETS}
    asked = summary["meta"]["param_key"]
    assert summary["meta"]["param_keys_read"] == {s: asked if asked in f else "params" for s, f in files.items()}
    for s in NETS:
        f = world["exps"] / "run_t2" / "models" / f"net_{s}_2.pth"
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        assert summary["meta"]["weights"][s] == {"path": str(f), "sha256": sha}
        for name in ("Tiny/summary.md", "summary.md", "summary.csv", "summary.json"):
            text = (out / name).read_text()
            assert str(f) in text and sha in text, name
    assert "iteration 6" in proc.stderr and "sha256 mismatch" in proc.stderr  # the skipped set is reported


def test_explicit_sources_that_disagree_are_refused(world):
    before = snapshot(world["root"] / "results") if (world["root"] / "results").exists() else {}
    proc = run_test_py("-opt", world["opt"], "--experiment", "run_t2", "--weights", world["relB"], returncode=2)
    assert "--experiment run_t2" in proc.stderr and "--weights" in proc.stderr and "differ" in proc.stderr
    proc = run_test_py("-opt", world["opt"], "--weights", world["relB"], "-o",
                   f"path.pretrain_network_g={world['relA'] / 'net_g.pth'}", returncode=2)
    assert "net_g differ" in proc.stderr
    after = snapshot(world["root"] / "results") if (world["root"] / "results").exists() else {}
    assert after == before


def test_explicit_sources_that_agree_are_accepted(world, tmp_path):
    """The run's training state and the run itself are the same weights: fine, tested with the run's settings."""
    proc = run_test_py("-opt", world["opt"], "--checkpoint", world["state"], "--experiment", "run_t2",
                       "-o", f"path.results_root={tmp_path}")
    summary = json.loads((tmp_path / "test_tiny" / "run_t2" / "Tiny" / "summary.json").read_text())
    assert summary["meta"]["diffusion_steps"] == 2


def test_option_file_contradicting_the_run_is_an_error(world):
    proc = run_test_py("-opt", world["opt"], "--experiment", "run_t2", "-o", "diffusion_schedule.timesteps=8",
                   "-o", "network_g.dim=16", returncode=2)
    assert "diffusion_schedule.timesteps" in proc.stderr and "8" in proc.stderr and "2" in proc.stderr
    assert "network_g.dim" in proc.stderr and "16" in proc.stderr
    assert not (world["root"] / "results" / "test_tiny" / "run_t2_contradiction").exists()


def test_rerun_replaces_results_whole_and_a_failed_run_keeps_them(world, tmp_path):
    data = write_pairs(tmp_path / "data", [(16, 16), (24, 16), (8, 8)])
    opt = tmp_path / "t.yml"
    opt.write_text(option_text(tmp_path, data, world["relA"]))
    proc = run_test_py("-opt", opt, "-o", "val.metrics={}")
    out = tmp_path / "results" / "test_tiny" / "relA"
    assert sorted(p.name for p in (out / "visualization" / "Tiny").iterdir()) == ["img00.png", "img01.png",
                                                                                  "img02.png"]
    # a re-run on fewer images: no stale image of the first run is left behind
    (data / "input" / "img01.png").unlink()
    (data / "target" / "img01.png").unlink()
    proc = run_test_py("-opt", opt, "-o", "val.metrics={}")
    assert sorted(p.name for p in (out / "visualization" / "Tiny").iterdir()) == ["img00.png", "img02.png"]
    assert [r["name"] for r in csv.DictReader(open(out / "Tiny" / "metrics.csv"))] == ["img00", "img02"]
    before = snapshot(tmp_path / "results")
    # a run that fails after its first image (BasicSR SSIM cannot score the 8x8 image): nothing changes
    proc = run_test_py("-opt", opt, "-o", "val.metrics.ssim.type=ssim_basicsr", returncode=2)
    assert "val.metrics.ssim" in proc.stderr and "img02" in proc.stderr
    assert snapshot(tmp_path / "results") == before
    # no partial folder left; the 3-image results of the first run were archived by the 2-image rerun
    folders = sorted(os.listdir(tmp_path / "results" / "test_tiny"))
    assert folders[0] == "relA" and len(folders) == 2 and folders[1].startswith("relA_archived_"), folders


def test_results_of_other_weights_are_never_replaced(world, tmp_path):
    """Two runs' checkpoints get their own results folders (not both 'models'), and weights that share a
    label with earlier results (two release folders named alike) move those results aside, not over them."""
    import shutil

    def sha(folder: Path, name: str = "summary.json") -> set:
        return {v["sha256"] for s in json.loads((folder / name).read_text()) for v in s["meta"]["weights"].values()}

    for run, rel in (("runA", world["relA"]), ("runB", world["relB"])):
        (tmp_path / run / "models").mkdir(parents=True)
        for s in NETS:
            shutil.copy(rel / f"net_{s}.pth", tmp_path / run / "models" / f"net_{s}_1000.pth")
        opt = tmp_path / f"{run}.yml"
        opt.write_text(option_text(tmp_path, world["data"], tmp_path / run / "models", name="t").replace(
            ".pth", "_1000.pth"))
        run_test_py("-opt", opt, "-o", "val.save_img=false")
    results = tmp_path / "results" / "t"
    assert sorted(os.listdir(results)) == ["runA_iter1000", "runB_iter1000"]
    assert sha(results / "runA_iter1000") != sha(results / "runB_iter1000")
    # the same label, other weights: the earlier results are archived, then a rerun of the same weights replaces
    for parent, rel in (("p1", world["relA"]), ("p2", world["relB"])):
        shutil.copytree(rel, tmp_path / parent / "rel")
        (tmp_path / f"{parent}.yml").write_text(option_text(tmp_path, world["data"], tmp_path / parent / "rel",
                                                            name="u"))
    run_test_py("-opt", tmp_path / "p1.yml", "-o", "val.save_img=false")
    first = sha(tmp_path / "results" / "u" / "rel")
    proc = run_test_py("-opt", tmp_path / "p2.yml", "-o", "val.save_img=false")
    assert "held results of other weights, test sets or settings" in proc.stderr + proc.stdout
    folders = sorted(os.listdir(tmp_path / "results" / "u"))
    assert len(folders) == 2 and folders[0] == "rel" and folders[1].startswith("rel_archived_"), folders
    assert sha(tmp_path / "results" / "u" / folders[1]) == first != sha(tmp_path / "results" / "u" / "rel")
    run_test_py("-opt", tmp_path / "p2.yml", "-o", "val.save_img=false")
    assert len(os.listdir(tmp_path / "results" / "u")) == 2
    # the same weights on fewer images (--limit) are other results: the full ones are archived, not replaced
    full = json.loads((tmp_path / "results" / "u" / "rel" / "summary.json").read_text())[0]["meta"]["images"]
    proc = run_test_py("-opt", tmp_path / "p2.yml", "-o", "val.save_img=false", "--limit", "1")
    assert "held results of other weights, test sets or settings" in proc.stderr + proc.stdout
    kept = [f for f in os.listdir(tmp_path / "results" / "u") if f.startswith("rel_archived_")]
    images = {json.loads((tmp_path / "results" / "u" / f / "summary.json").read_text())[0]["meta"]["images"]
              for f in kept}
    assert full > 1 and full in images and len(kept) == 2


@pytest.mark.parametrize("broken", ["dataset", "weights"])
def test_a_later_set_that_cannot_run_stops_the_run_before_anything_is_written(world, tmp_path, broken):
    raw = yaml.safe_load(world["opt"].read_text())
    raw["path"]["results_root"] = str(tmp_path / "results")
    second = dict(raw["datasets"]["test_1"], name="Second")
    if broken == "dataset":
        second["dataroot_lq"] = str(tmp_path / "missing" / "input")
    else:
        second["weights"] = {"d": str(tmp_path / "missing_net_d.pth")}
    raw["datasets"]["test_2"] = second
    opt = tmp_path / "t.yml"
    opt.write_text(yaml.safe_dump(raw))
    proc = run_test_py("-opt", opt, returncode=2)
    assert "missing" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_bogus_val_metric_is_refused(world, tmp_path):
    proc = run_test_py("-opt", world["opt"], "-o", "val.metrics.psnr.type=bogus", "-o",
                   f"path.results_root={tmp_path}/results", returncode=2)
    assert "val.metrics.psnr" in proc.stderr and "bogus" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_non_finite_weights_and_outputs_are_refused_by_test_py(world, tmp_path):
    nan = tiny_state_dicts(0)
    nan["d"]["final_layer.0.weight"][0, 0] = float("nan")
    save_release(tmp_path / "nan", nan)
    huge = tiny_state_dicts(0)
    huge["g"]["output.weight"] = torch.full_like(huge["g"]["output.weight"], 3e38)  # finite, output overflows
    save_release(tmp_path / "huge", huge)
    results = tmp_path / "results"
    proc = run_test_py("-opt", world["opt"], "--weights", tmp_path / "nan", "-o", f"path.results_root={results}",
                       returncode=2)
    assert str(tmp_path / "nan" / "net_d.pth") in proc.stderr and "NaN or Inf" in proc.stderr
    assert not results.exists()
    proc = run_test_py("-opt", world["opt"], "--weights", tmp_path / "huge", "-o", f"path.results_root={results}",
                       returncode=2)
    assert "Tiny/img00" in proc.stderr and str(tmp_path / "huge" / "net_g.pth") in proc.stderr
    assert not (results / "test_tiny" / "huge").exists() and not list((results / "test_tiny").iterdir())


def test_numeric_arguments_out_of_range_are_usage_errors(world, tmp_path):
    proc = run_test_py("-opt", world["opt"], "--limit", "0", returncode=2)
    assert "--limit" in proc.stderr and "positive" in proc.stderr
    img = str(world["data"] / "input" / "img00.png")
    res = run_checked([PY, REPO / "scripts" / "deblur.py", img, "-o", tmp_path / "o",
                       "--weights", world["relA"], "--timesteps", "0"], timeout=300, env=run_env(), returncode=2)
    assert "--timesteps" in res.stderr and "got 0" in res.stderr
    assert not (tmp_path / "o").exists()
    for flag, value in (("--tile", "-8"), ("--overlap", "-1"), ("--tile-batch", "0"), ("--seed", "-3")):
        with pytest.raises(SystemExit) as exc:
            deblur_main([img, "-o", str(tmp_path / "o"), "--weights", str(world["relA"]), flag, value])
        assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        export_main(["--weights", str(world["relA"]), "-o", str(tmp_path / "e"), "--height", "0"])
    assert exc.value.code == 2 and not (tmp_path / "e.pt").exists()


# --------------------------------------------------------- deblur and export
def test_training_state_restores_with_the_runs_timesteps(world, tmp_path, capsys):
    img = str(world["data"] / "input" / "img00.png")
    state = str(world["state"])
    res = run_checked([PY, REPO / "scripts" / "deblur.py", img, "-o", tmp_path / "a", "--checkpoint", state,
                       "--quiet"], timeout=300, env=run_env())
    assert "T=2" in res.stderr
    assert deblur_main([img, "-o", str(tmp_path / "b"), "--checkpoint", state, "--timesteps", "2", "--quiet"]) == 0
    assert deblur_main([img, "-o", str(tmp_path / "c"), "--checkpoint", state, "--timesteps", "8", "--quiet"]) == 0
    assert deblur_main([img, "-o", str(tmp_path / "d"), "--experiment", "run_t2", "--experiments-root",
                        str(world["exps"]), "--quiet"]) == 0
    a, b, c, d = ((tmp_path / x / "img00.png").read_bytes() for x in "abcd")
    assert a == b == d and a != c


def test_non_finite_weights_and_outputs_are_refused_by_deblur_and_export(world, tmp_path, capsys):
    img = str(world["data"] / "input" / "img00.png")
    nan = tiny_state_dicts(0)
    nan["le_dm"]["conv1.0.weight"][0] = float("inf")
    save_release(tmp_path / "nan", nan)
    res = run_checked([PY, REPO / "scripts" / "deblur.py", img, "-o", tmp_path / "o", "--weights", tmp_path / "nan"],
                      timeout=300, env=run_env(), returncode=2)
    assert str(tmp_path / "nan" / "net_le_dm.pth") in res.stderr
    assert "NaN or Inf" in res.stderr and not (tmp_path / "o").exists()
    assert export_main(["--weights", str(tmp_path / "nan"), "-o", str(tmp_path / "e" / "m"), "--height", "16",
                        "--width", "16"]) == 2
    assert "net_le_dm.pth" in capsys.readouterr().err and not (tmp_path / "e").exists()

    huge = tiny_state_dicts(0)
    huge["g"]["output.weight"] = torch.full_like(huge["g"]["output.weight"], 3e38)
    save_release(tmp_path / "huge", huge)
    assert deblur_main([img, "-o", str(tmp_path / "o2"), "--weights", str(tmp_path / "huge"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "img00.png" in err and "NaN/Inf" in err and str(tmp_path / "huge" / "net_g.pth") in err
    assert os.listdir(tmp_path / "o2") == []
    assert export_main(["--weights", str(tmp_path / "huge"), "-o", str(tmp_path / "e" / "m"), "--height", "16",
                        "--width", "16"]) == 2
    assert "NaN/Inf" in capsys.readouterr().err and not (tmp_path / "e").exists()


class RunsCode:
    """Unpickling this would call os.system (the global torch sees is 'posix.system')."""

    def __reduce__(self):
        return (os.system, ("true",))


def test_checkpoint_carrying_code_names_the_global_and_a_safe_remedy(tmp_path, world, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"net_g": {"params": {"w": torch.zeros(1)}}, "hook": RunsCode()}, evil)  # saving runs nothing
    img = str(world["data"] / "input" / "img00.png")
    assert deblur_main([img, "-o", str(tmp_path / "o"), "--checkpoint", str(evil), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "posix.system" in err and str(evil) in err and "state_dict" in err
    assert "weights_only" not in err
    assert not (tmp_path / "o").exists()


def test_library_run_test_refuses_options_that_contradict_the_experiment(world, tmp_path):
    """run_test(options, experiment=...) (the demo's call) checks the typed options against the run too."""
    from hidiff.errors import ConfigError
    from hidiff.runners.test_runner import run_test

    text = option_text(tmp_path, world["data"], world["relA"], timesteps=8)
    opts = options_from_text(text, [f"path.experiments_root={world['exps']}"], is_train=False)
    with pytest.raises(ConfigError, match=r"diffusion_schedule.timesteps: .* 8 .*trained with 2"):
        run_test(opts, experiment="run_t2")
    assert not (tmp_path / "results").exists()
