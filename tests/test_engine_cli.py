"""scripts/train.py front end: overrides, legacy launcher arguments, run-folder layout, errors."""
from __future__ import annotations

import re

import torch
import yaml

from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import load_options
from hidiff.utils.checkpoint import safe_load
from hidiff.cli.train import main




def test_train_cli_run_folder_layout(tmp_path):
    write_pairs(tmp_path / "data")
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(tiny_options(tmp_path, with_val=True, logger={"use_tb_logger": True}),
                                  sort_keys=False))
    code = main(["-opt", str(cfg), "--local_rank=0", "-o", "train.total_iter=3", "--force_yml",
                 "logger:save_checkpoint_freq=1", "-o", "logger.keep_last=2", "-o", "val.val_freq=2"])
    assert code == 0
    run = tmp_path / "experiments" / "tiny"
    assert sorted(p.name for p in (run / "training_states").iterdir()) == ["2.state", "3.state"]  # keep_last 2
    models = sorted(p.name for p in (run / "models").iterdir())
    assert models == sorted(["best.json", "latest.json"]
                            + [f"net_{n}_{t}.pth" for n in ("g", "le") for t in (2, 3, "best", "latest")])
    assert re.fullmatch(r"train_tiny_\d{8}_\d{6}\.log", next(run.glob("train_*.log")).name)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(run / "tb_logger"), size_guidance={"images": 0, "scalars": 0})
    tb.Reload()
    scalars = set(tb.Tags()["scalars"])
    assert {"losses/l_pix", "losses/total", "train/lr", "train/it/s", "train/samples/s", "train/data_s",
            "train/skipped", "train/grad_norm", "metrics/tinyval/psnr"} <= scalars
    images = tb.Tags()["images"]
    assert len(images) == 2 and all(t.startswith("val/tinyval/") for t in images)  # 2 validation samples
    resolved = load_options(run / "config.yml")  # the saved resolved options load again
    assert resolved.train.total_iter == 3 and resolved.logger.keep_last == 2
    latest, last = safe_load(run / "models" / "net_g_latest.pth"), safe_load(run / "models" / "net_g_3.pth")
    assert all(torch.equal(latest["params"][k], last["params"][k]) for k in last["params"])
    # --auto_resume of a finished run trains nothing and succeeds
    assert main(["-opt", str(cfg), "--auto_resume", "-o", "train.total_iter=3", "--force_yml",
                 "logger:save_checkpoint_freq=1", "-o", "logger.keep_last=2", "-o", "val.val_freq=2"]) == 0
    assert not list(run.parent.glob("tiny_archived_*"))
    # a fresh start never overwrites a run: the old folder is archived
    assert main(["-opt", str(cfg), "-o", "train.total_iter=1"]) == 0
    archived = list(run.parent.glob("tiny_archived_*"))
    assert len(archived) == 1 and (archived[0] / "training_states" / "3.state").is_file()
    assert sorted(p.name for p in (run / "training_states").iterdir()) == ["1.state"]


def test_train_cli_errors(tmp_path, capsys):
    write_pairs(tmp_path / "data")
    cfg = tmp_path / "tiny.yml"
    opts = tiny_options(tmp_path)
    opts["train"]["totl_iter"] = opts["train"].pop("total_iter")
    cfg.write_text(yaml.safe_dump(opts, sort_keys=False))
    assert main(["-opt", str(cfg)]) == 2
    assert "totl_iter" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump(tiny_options(tmp_path), sort_keys=False))
    assert main(["-opt", str(cfg), "--resume", str(tmp_path / "nope.state")]) == 2
    assert "state file not found" in capsys.readouterr().err


def test_auto_resume_and_another_resume_are_a_usage_error(tmp_path, capsys):
    """``--auto_resume --resume none`` started fresh and dropped --auto_resume without a word."""
    import pytest

    opt = tmp_path / "tiny.yml"
    opt.write_text(yaml.safe_dump(tiny_options(tmp_path)))
    with pytest.raises(SystemExit) as exc:
        main(["-opt", str(opt), "--auto_resume", "--resume", "none"])
    assert exc.value.code == 2 and "--auto_resume contradicts --resume none" in capsys.readouterr().err
    assert not (tmp_path / "experiments").exists()
