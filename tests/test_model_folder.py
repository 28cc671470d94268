"""Model folders (hidiff-export --format model) and the default model that hidiff-deblur / hidiff.load() use."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import hidiff
from hidiff.cli.deblur import main as deblur_main
from hidiff.cli.export import main as export_main
from hidiff.config import options_from_text
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.errors import CheckpointError, ConfigError
from hidiff.runners import model_folder
from hidiff.runners.default_model import ENV, PACKAGED
from hidiff.runners.weights import from_checkpoint, from_release
from test_deblur_cli import SKIMAGE_DATA
from test_trust_testing import option_text, save_release, tiny_state_dicts

from conftest import needs_shipped_default_model, run_env
from procs import run_checked

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A training state of a tiny stage-2 run that recorded T=2 (not the default)."""
    root = tmp_path_factory.mktemp("mf")
    sds = tiny_state_dicts(3)
    release = save_release(root / "rel", sds)
    opts = options_from_text(option_text(root, root / "data", release, timesteps=2, name="run_t2"), is_train=False)
    store = CheckpointStore(root / "exps" / "run_t2")
    store.save(2, {s: (sd, None) for s, sd in sds.items()}, {"config": opts.to_dict()})
    return store.state_path(2)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "cat.png"
    Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB").crop((150, 100, 222, 156)).save(path)
    return path


def test_half_model_folder_restores_like_its_training_state(tmp_path, state, photo, capsys):
    card = tmp_path / "card.md"
    card.write_text("# tiny\ntrained for two iterations\n", encoding="utf-8")
    out = tmp_path / "models" / "tiny"
    out.parent.mkdir()
    assert export_main(["--checkpoint", str(state), "-o", str(out), "--format", "model", "--half",
                        "--card", str(card)]) == 0
    assert "float16" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "model.yml", "net_d.pth", "net_g.pth",
                                                     "net_le_dm.pth"]
    assert (out / "MODEL_CARD.md").read_text(encoding="utf-8") == card.read_text(encoding="utf-8")
    recorded = yaml.safe_load((out / "model.yml").read_text())
    assert recorded["model_type"] == "HI_Diff_S2" and recorded["diffusion_schedule"]["timesteps"] == 2
    assert "path" not in recorded and "datasets" not in recorded
    stored = torch.load(out / "net_g.pth", weights_only=True)["params"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert not list(out.parent.glob(".*partial*"))

    folder = hidiff.load(out, device="cpu")
    source = hidiff.load(state, device="cpu")
    assert folder.weights.kind == "model" and folder.pipeline.diffusion.timesteps == 2
    a, b = folder.deblur(photo).astype(int), source.deblur(photo).astype(int)
    assert np.abs(a - b).max() <= 1  # float16 storage: within one 8-bit level
    # the command reads the folder the same way
    assert deblur_main([str(photo), "-o", str(tmp_path / "cli"), "--weights", str(out), "--quiet"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cli" / "cat.png")), folder.deblur(photo))


def test_float32_folder_is_exact_and_refusals_leave_nothing(tmp_path, state, monkeypatch):
    weights = from_checkpoint(state)
    report = model_folder.write_model_folder(weights, tmp_path / "f32")
    assert report["max_abs_diff_vs_source"] == 0.0 and report["dtype"] == "float32"
    again = from_release(tmp_path / "f32")
    assert again.same_tensors(weights) == []
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match="already exists"):
        model_folder.write_model_folder(weights, tmp_path / "f32")
    with pytest.raises(ConfigError, match="record no run options"):
        model_folder.write_model_folder(from_release(_release_of(state)), tmp_path / "rel_out")
    monkeypatch.setattr(model_folder, "HALF_TOLERANCE", 0.0)  # float16 cannot be exact: refused, nothing left
    with pytest.raises(CheckpointError, match="nothing was written"):
        model_folder.write_model_folder(weights, tmp_path / "f16", half=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _release_of(state):
    """The release folder the ``state`` fixture was made from (released weights record no options)."""
    return state.parents[3] / "rel"


def test_a_broken_model_yml_is_named(tmp_path, state):
    model_folder.write_model_folder(from_checkpoint(state), tmp_path / "m")
    (tmp_path / "m" / "model.yml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"m/model.yml: expected a mapping with 'model_type'"):
        from_release(tmp_path / "m")


def test_no_weights_named_uses_the_default_model_and_says_so(tmp_path, state, photo):
    folder = tmp_path / "site_default"
    model_folder.write_model_folder(from_checkpoint(state), folder, half=True)
    env = {**run_env(), ENV: str(folder)}
    proc = run_checked([sys.executable, "-m", "hidiff.cli.deblur", str(photo), "-o", str(tmp_path / "out"),
                        "--quiet"], env=env, timeout=300)
    assert f"using hidiff's default model, {folder}" in proc.stderr
    want = hidiff.load(folder, device="cpu").deblur(photo)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "cat.png")), want)
    code = ("import sys, numpy as np, hidiff; r = hidiff.load(device='cpu'); "
            f"np.save(sys.argv[1], r.deblur({str(photo)!r})); print(r.weights.kind, r.source)")
    proc = run_checked([sys.executable, "-c", code, str(tmp_path / "api.npy")], env=env, timeout=300)
    assert proc.stdout.split() == ["model", str(folder)]
    np.testing.assert_array_equal(np.load(tmp_path / "api.npy"), want)


def test_without_a_default_model_the_command_says_what_to_pass_before_writing(tmp_path, photo, monkeypatch,
                                                                              capsys):
    monkeypatch.delenv(ENV, raising=False)
    from hidiff.runners import default_model
    monkeypatch.setattr(default_model, "PACKAGED", tmp_path / "empty")   # a copy of hidiff without the weights
    assert deblur_main([str(photo), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert "no default model ships" in capsys.readouterr().err and not (tmp_path / "out").exists()
    monkeypatch.setenv(ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=f"{ENV}=.*nowhere: expected a model folder holding net_g.pth"):
        hidiff.load()


def test_before_after_picture_shows_the_default_model_output_of_the_real_photo(tmp_path, state):
    """benchmarks/before_after.py: clock_motion (gray, real shake) beside the default model's output."""
    folder = tmp_path / "site_default"
    model_folder.write_model_folder(from_checkpoint(state), folder)
    env = {**run_env(), ENV: str(folder)}
    out = tmp_path / "ba.png"
    script = str(REPO / "benchmarks" / "before_after.py")
    proc = run_checked([sys.executable, script, "--crop", "100,150,60,80", "-o", str(out)], env=env, timeout=300)
    assert f"written: {out}" in proc.stdout and "clock_motion.png: blurry photo, default" in proc.stdout
    grid = np.asarray(Image.open(out).convert("RGB"))
    photo = SKIMAGE_DATA / "clock_motion.png"
    before = np.asarray(Image.open(photo).convert("RGB"))
    h, w = before.shape[:2]
    header, gap = 28, 4                                      # comparison_grid's layout
    assert grid.shape[1] == 2 * w + gap and grid.shape[0] == header + gap + h + gap + round(60 * w / 80)
    panel = grid[header + gap:header + gap + h]
    want = hidiff.load(folder, device="cpu").deblur(str(photo))
    # the crop's outline is drawn on both panels; everywhere else they are the photo and the output
    inside = np.ones((h, w), bool)
    inside[98:163, 148:233] = False
    np.testing.assert_array_equal(panel[:, :w][inside], before[inside])
    np.testing.assert_array_equal(panel[:, w + gap:][inside], want[inside])
    bad = subprocess.run([sys.executable, script, "--model", "x", "-o", str(tmp_path / "no.png")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "expected NAME=SOURCE" in bad.stderr and not (tmp_path / "no.png").exists()



STORED = REPO / "tests" / "data" / "default_model"


def stored_output_difference(stored: Path, restorer) -> int:
    """Largest difference, in 8-bit levels, between the restorer's output on the stored input and the stored output."""
    want = np.asarray(Image.open(stored / "output.png").convert("RGB")).astype(int)
    got = restorer.deblur(str(stored / "input.png"), seed=0).astype(int)
    assert got.shape == want.shape
    return int(np.abs(got - want).max())


def test_stored_default_check_is_written_once_and_catches_a_changed_model(tmp_path, state):
    folder = tmp_path / "site_default"
    model_folder.write_model_folder(from_checkpoint(state), folder)
    env = {**run_env(), ENV: str(folder)}
    out = tmp_path / "check"
    cmd = [sys.executable, str(REPO / "scripts" / "store_default_check.py"), "--out", str(out), "--size", "40"]
    proc = run_checked(cmd, env=env, timeout=300)
    assert f"stored: {out} (40x40 crop of chelsea.png" in proc.stdout
    record = json.loads((out / "record.json").read_text())
    restorer = hidiff.load(folder, device="cpu")
    assert record["weights_sha256"] == restorer.sha256 and record["tolerance_levels"] == 1
    assert stored_output_difference(out, restorer) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "pass --force" in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a change that breaks the model (here: one U-Net weight tensor altered) moves the stored output
    sd = torch.load(folder / "net_g.pth", weights_only=True)
    key = next(k for k, v in sd["params"].items() if k.endswith("output.weight"))
    sd["params"][key] = sd["params"][key] * 1.5 + 0.05
    torch.save(sd, folder / "net_g.pth")
    assert stored_output_difference(out, hidiff.load(folder, device="cpu")) > 1


@needs_shipped_default_model()
def test_shipped_default_model_reproduces_its_stored_output(tmp_path, monkeypatch):
    """The weights in hidiff/pretrained/default, reached as a new user does (no weights named)."""
    monkeypatch.delenv(ENV, raising=False)
    from hidiff.runners.default_model import default_model_folder
    assert default_model_folder() == PACKAGED
    assert (STORED / "record.json").is_file(), \
        f"{PACKAGED} ships weights but {STORED} holds no stored output: run scripts/store_default_check.py"
    record = json.loads((STORED / "record.json").read_text())
    restorer = hidiff.load(device="cpu")
    assert restorer.sha256 == record["weights_sha256"], \
        "the shipped weights changed: store their output again with scripts/store_default_check.py --force"
    assert stored_output_difference(STORED, restorer) <= record["tolerance_levels"]
    env = {k: v for k, v in run_env().items() if k != ENV}
    proc = run_checked([sys.executable, "-m", "hidiff.cli.deblur", str(STORED / "input.png"), "-o",
                        str(tmp_path / "out")], env=env, timeout=300)
    assert "using hidiff's default model" in proc.stderr
    want = np.asarray(Image.open(STORED / "output.png").convert("RGB")).astype(int)
    got = np.asarray(Image.open(tmp_path / "out" / "input.png").convert("RGB")).astype(int)
    assert np.abs(got - want).max() <= record["tolerance_levels"]


@needs_shipped_default_model()
def test_shipped_default_model_card_is_the_docs_card():
    """The card beside the shipped weights is docs/default_model.md, so the two cannot drift apart."""
    shipped = (PACKAGED / model_folder.CARD_FILE).read_text(encoding="utf-8")
    assert shipped == (REPO / "docs" / "default_model.md").read_text(encoding="utf-8"), \
        f"{PACKAGED / model_folder.CARD_FILE} differs from docs/default_model.md: copy the docs card over it"
