"""Training runs lose, move or mislabel nothing: a refused start changes no file; checkpoints are units."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from engine_tiny_run import tiny_options, tiny_s2_options, write_pairs
from hidiff.cli.train import main
from hidiff.engine.checkpoint_store import latest_complete
from hidiff.engine.stage_link import resolve_pretrained


def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> sha256 of its bytes ('dir' for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _write(tmp_path: Path, opts: dict) -> Path:
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(opts, sort_keys=False))
    return cfg


def _finished_run(tmp_path: Path) -> Path:
    write_pairs(tmp_path / "data")
    cfg = _write(tmp_path, tiny_options(tmp_path, train={"total_iter": 2}, logger={"save_checkpoint_freq": 1}))
    assert main(["-opt", str(cfg)]) == 0
    return cfg


def test_refused_starts_and_resumes_change_no_file(tmp_path, capsys):
    _finished_run(tmp_path)
    exp = tmp_path / "experiments"
    before = _tree(exp)
    assert "tiny/config.yml" in before and "tiny/training_states/2.state" in before
    capsys.readouterr()

    bad_path = tiny_options(tmp_path, train={"total_iter": 2})
    bad_path["datasets"]["train"]["dataroot_lq"] += "_typo"
    assert main(["-opt", str(_write(tmp_path, bad_path))]) == 2
    assert "input_typo" in capsys.readouterr().err
    assert _tree(exp) == before

    bad_metric = tiny_options(tmp_path, with_val=True, train={"total_iter": 2},
                              val={"metrics": {"psnr": {"type": "psnr_nonexistent"}}})
    assert main(["-opt", str(_write(tmp_path, bad_metric))]) == 2
    assert "psnr_nonexistent" in capsys.readouterr().err
    assert _tree(exp) == before

    # a resume refused for changed options leaves config.yml (and everything else) as it was
    changed = tiny_options(tmp_path, train={"total_iter": 4, "optim_total": {"type": "AdamW", "lr": 5e-4}},
                           logger={"save_checkpoint_freq": 1})
    assert main(["-opt", str(_write(tmp_path, changed)), "--resume", "auto"]) == 2
    assert "--allow-config-change" in capsys.readouterr().err
    assert _tree(exp) == before

    # a corrupt state named explicitly is refused before anything is written
    state = exp / "tiny" / "training_states" / "1.state"
    state.write_bytes(state.read_bytes()[:100])
    before = _tree(exp)
    assert main(["-opt", str(_write(tmp_path, changed)), "--resume", str(state)]) == 2
    assert "1.state" in capsys.readouterr().err
    assert _tree(exp) == before


def test_fresh_start_says_where_the_previous_run_went(tmp_path, capsys):
    cfg = _finished_run(tmp_path)
    capsys.readouterr()
    assert main(["-opt", str(cfg)]) == 0
    archived = list((tmp_path / "experiments").glob("tiny_archived_*"))
    assert len(archived) == 1 and (archived[0] / "training_states" / "2.state").is_file()
    assert f"was moved to {archived[0]}" in capsys.readouterr().out
    log = next((tmp_path / "experiments" / "tiny").glob("train_tiny_*.log")).read_text()
    assert f"the previous run folder was moved to {archived[0]}" in log
    # lines logged while the start was being checked, before the log file existed, are in it too
    assert main(["-opt", str(cfg), "-o", "name=other", "--resume", "auto"]) == 0
    log = next((tmp_path / "experiments" / "other").glob("train_other_*.log")).read_text()
    assert log.index("--resume auto: no complete checkpoint") < log.index("experiment other in")


def _stage2(tmp_path: Path, stage1: str):
    from hidiff.config import options_from_text
    opts = tiny_s2_options(tmp_path)
    del opts["path"]["pretrain_network_g"], opts["path"]["pretrain_network_le"]
    opts["path"]["stage1"] = stage1
    return options_from_text(yaml.safe_dump(opts, sort_keys=False))


def test_a_save_killed_between_two_networks_is_never_read(tmp_path):
    """The disk as a SIGKILL after net_g_4.pth and before net_le_4.pth leaves it: readers take iteration 3."""
    write_pairs(tmp_path / "data")
    cfg = _write(tmp_path, tiny_options(tmp_path, train={"total_iter": 4}, logger={"save_checkpoint_freq": 1}))
    assert main(["-opt", str(cfg)]) == 0
    run = tmp_path / "experiments" / "tiny"
    unit = latest_complete(run)
    assert unit.iteration == 4 and unit.state == run / "training_states" / "4.state"
    assert unit.networks == {n: run / "models" / f"net_{n}_4.pth" for n in ("g", "le")}
    for f in ("models/latest.json", "models/net_g_latest.pth", "models/net_le_latest.pth", "models/net_le_4.pth",
              "training_states/4.state"):
        (run / f).unlink()
    (run / "models" / ".net_le_4.pth.k1ll.tmp").write_bytes(b"PK\x03\x04partial")
    assert (run / "models" / "net_g_4.pth").is_file()

    unit = latest_complete(run)
    assert unit.iteration == 3 and unit.state == run / "training_states" / "3.state"
    assert unit.networks == {n: run / "models" / f"net_{n}_3.pth" for n in ("g", "le")}
    assert latest_complete(run, 4) is None and latest_complete(run, 2).iteration == 2
    specs = resolve_pretrained(_stage2(tmp_path, "tiny"))
    assert {n: s.path for n, s in specs.items()} == unit.networks

    # a network file of the newest set replaced or truncated after the fact: that set is not complete either
    (run / "models" / "net_le_3.pth").write_bytes((run / "models" / "net_le_2.pth").read_bytes())
    assert latest_complete(run).iteration == 2
    specs = resolve_pretrained(_stage2(tmp_path, "tiny"))
    assert {n: s.path.name for n, s in specs.items()} == {"g": "net_g_2.pth", "le": "net_le_2.pth"}


def test_tagged_sets_are_units_too(tmp_path):
    import torch

    from hidiff.engine.checkpoint_store import CheckpointStore
    store = CheckpointStore(tmp_path)
    nets = {n: ({"w": torch.full((2,), float(i))}, None) for i, n in enumerate(("g", "le"))}
    store.save_tagged("latest", nets, {"iter": 7})
    unit = latest_complete(tmp_path)
    assert unit.iteration == 7 and unit.state is None
    assert unit.networks == {n: tmp_path / "models" / f"net_{n}_latest.pth" for n in ("g", "le")}
    # killed while rewriting the tag: the marker is gone first, so the half-new pair is never taken
    (tmp_path / "models" / "latest.json").unlink()
    assert latest_complete(tmp_path) is None


def _val_run_options(tmp_path: Path, **val):
    from hidiff.config import options_from_text
    write_pairs(tmp_path / "data")
    lq, gt = write_pairs(tmp_path / "valdata", n=4)
    opts = tiny_options(tmp_path, with_val=True, train={"total_iter": 2},
                        val={"val_freq": 1, **val}, logger={"save_checkpoint_freq": 1})
    opts["datasets"]["val"].update(dataroot_lq=str(lq), dataroot_gt=str(gt))
    return options_from_text(yaml.safe_dump(opts, sort_keys=False)), lq


def test_corrupt_val_image_is_skipped_counted_and_costs_no_checkpoint(tmp_path):
    from hidiff.engine.trainer import Trainer
    options, lq = _val_run_options(tmp_path)
    bad = lq / "im02.png"
    bad.write_bytes(bad.read_bytes()[:120])  # a truncated PNG: the header is intact, the pixels are not
    result = Trainer(options).fit()
    assert result.last_iter == 2
    assert result.last_validation["tinyval"]["images"] == 3 and result.last_validation["tinyval"]["images_skipped"] == 1
    run = result.experiment_dir
    assert (run / "training_states" / "1.state").is_file() and (run / "training_states" / "2.state").is_file()
    log = next(run.glob("train_tiny_*.log")).read_text()
    assert "Validation tinyval (3 images); 1 unreadable image(s) skipped" in log
    assert log.count("validation set tinyval: unreadable image skipped") == 2 and "im02.png" in log


def test_save_img_writes_the_visualization_folder(tmp_path):
    import cv2
    import numpy as np

    from hidiff.engine.trainer import Trainer
    options, _ = _val_run_options(tmp_path, save_img=True)
    run = Trainer(options).fit().experiment_dir
    vis = run / "visualization" / "tinyval"
    assert sorted(p.name for p in vis.iterdir()) == sorted(f"im{i:02d}_{it}.png" for i in range(4) for it in (1, 2))
    img = cv2.imread(str(vis / "im01_2.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (40, 40, 3) and img.dtype == np.uint8
    off, _ = _val_run_options(tmp_path / "off")
    assert not (Trainer(off).fit().experiment_dir / "visualization").exists()


def test_val_pbar_draws_on_a_terminal_only(tmp_path, monkeypatch):
    import fcntl
    import os
    import re
    import pty
    import select
    import struct
    import sys
    import termios

    import torch

    from hidiff.data.build import build_dataset
    from hidiff.data.loader import build_dataloader
    from hidiff.engine.validation import validate
    from hidiff.models import build_model
    options, _ = _val_run_options(tmp_path, pbar=True)
    ds = options.datasets["val"]
    loader = build_dataloader(build_dataset(ds, 0), phase="val", batch_size=1, num_workers=0, seed=0, rank=0,
                              world_size=1)
    model = build_model(options)

    def run(stream, progress=True):
        monkeypatch.setattr(sys, "stderr", stream)
        return validate(model, {"tinyval": loader}, metric_fns={}, manual_seed=0, device=torch.device("cpu"),
                        progress=progress)

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    with os.fdopen(slave, "w") as term:
        assert run(term)["tinyval"]["images"] == 4
        term.flush()
        drawn = ""
        while select.select([master], [], [], 2)[0]:
            drawn += os.read(master, 65536).decode(errors="replace")
    os.close(master)
    assert "validating tinyval:   0%" in drawn and re.search(r" [1-4]/4 \[", drawn), drawn
    with open(tmp_path / "stderr.txt", "w") as plain:  # not a terminal: silent
        run(plain)
    assert (tmp_path / "stderr.txt").read_text() == ""


def _register_test_losses():
    import torch
    from torch import nn

    from hidiff.registry import LOSS_REGISTRY

    class NaNValueLoss(nn.Module):
        """A loss whose value is NaN (as a NaN in the data would make it)."""

        def forward(self, pred, target):
            return (pred - target).abs().mean() * float("nan")

    class InfGradLoss(nn.Module):
        """A finite loss (0) whose gradient is infinite: d sqrt(x)/dx at x = 0."""

        def forward(self, pred, target):
            return torch.sqrt((pred - pred.detach()).float().mean())

    for cls in (NaNValueLoss, InfGradLoss):
        if cls.__name__ not in LOSS_REGISTRY:
            LOSS_REGISTRY.register(cls.__name__)(cls)


def _nonfinite_run(tmp_path: Path, loss: str):
    from hidiff.config import options_from_text
    from hidiff.engine.trainer import Trainer
    _register_test_losses()
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, train={"total_iter": 2, "pixel_opt": {"type": loss},
                                         "max_consecutive_nonfinite": 0})
    result = Trainer(options_from_text(yaml.safe_dump(opts, sort_keys=False))).fit()
    assert result.skipped_steps == 2
    return next(result.experiment_dir.glob("train_tiny_*.log")).read_text()


def test_skipped_step_names_the_nonfinite_loss_term(tmp_path):
    log = _nonfinite_run(tmp_path, "NaNValueLoss")
    assert "iteration 1: non-finite loss or gradient, step skipped (1 skipped so far); first non-finite: " \
           "loss term l_pix = nan" in log


def test_skipped_step_names_the_first_parameter_with_a_nonfinite_gradient(tmp_path):
    import re

    from hidiff.archs import build_network
    log = _nonfinite_run(tmp_path, "InfGradLoss")
    m = re.search(r"iteration 1: non-finite loss or gradient, step skipped \(1 skipped so far\); first non-finite: "
                  r"gradient of net_g\.(\S+)\n", log)
    assert m, log
    net_g = build_network(dict(tiny_options(tmp_path)["network_g"]))
    assert m.group(1) in dict(net_g.named_parameters())


@pytest.mark.slow
def test_refused_start_under_torchrun_changes_no_file_and_no_rank_hangs(tmp_path):
    from conftest import REPO, run_env
    from procs import explain, run_checked, torchrun
    _finished_run(tmp_path)
    exp = tmp_path / "experiments"
    before = _tree(exp)
    bad = tiny_options(tmp_path, train={"total_iter": 2})
    bad["datasets"]["train"]["dataroot_lq"] += "_typo"
    res = run_checked(torchrun(2, REPO / "scripts" / "train.py", "-opt", _write(tmp_path, bad), "--launcher", "pytorch",
                               log_dir=tmp_path / "logs"), env=run_env(), cwd=tmp_path, timeout=180, returncode=None)
    assert res.returncode != 0, explain(res.args, res.returncode, res.stdout, res.stderr, "expected a refusal")
    assert res.stderr.count("input_typo") >= 2, res.stderr  # both ranks report it
    assert _tree(exp) == before
