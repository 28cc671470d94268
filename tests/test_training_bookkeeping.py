"""What a training run restores on resume, what it refuses, and what its validation uses (each a defect found once)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import PY, REPO, run_env
from engine_tiny_run import _merge, tiny_options, tiny_s2_options, write_pairs
from hidiff.config.load import options_from_text
from hidiff.engine.checkpoint_store import latest_complete
from hidiff.engine.trainer import Trainer
from hidiff.engine.validation import validate, validate_during_training
from hidiff.errors import ConfigError
from hidiff.utils.checkpoint import safe_load
from procs import run_checked


def _opts(d: dict):
    return options_from_text(yaml.safe_dump(d, sort_keys=False))


def _set_up(trainer: Trainer) -> Trainer:
    trainer.stop.install()
    trainer._setup()
    return trainer


def _tear_down(trainer: Trainer) -> None:
    trainer.stop.uninstall()
    trainer._teardown()


def test_an_ignored_network_restarts_its_ema_from_its_weights(tmp_path):
    # before, path.ignore_resume_networks dropped net_le's weights but restored its EMA, which validation,
    # the best files and test.py (params_ema) go on using
    write_pairs(tmp_path / "data")
    base = tiny_options(tmp_path, train={"total_iter": 4, "ema_decay": 0.9},
                        logger={"save_checkpoint_freq": 2, "print_freq": 100})
    Trainer(_opts(base), stop_after=2).fit()
    saved = safe_load(tmp_path / "experiments" / "tiny" / "models" / "net_le_2.pth")
    ignoring = _merge(base, {"path": {"ignore_resume_networks": ["network_le"]}})
    t = _set_up(Trainer(_opts(ignoring), resume="auto", allow_config_change=True))
    try:
        for name, restored in (("le", False), ("g", True)):
            live, ema = t.model.trainable[name].state_dict(), t.ema[name].shadow
            key = next(k for k in live if live[k].is_floating_point())
            saved_net = safe_load(tmp_path / "experiments" / "tiny" / "models" / f"net_{name}_2.pth")
            assert torch.equal(ema[key].cpu(), saved_net["params_ema"][key]) is restored, name
            if not restored:
                assert torch.equal(ema[key].cpu(), live[key].cpu())
                assert not torch.equal(live[key].cpu(), saved["params"][key])
    finally:
        _tear_down(t)


def test_a_changed_learning_rate_and_weight_decay_are_used_after_resume(tmp_path, caplog):
    # before, the checkpoint's optimiser and scheduler states brought lr 1e-3 and weight decay 0.01 back,
    # while the log and config.yml said 5e-4 and 0.5
    write_pairs(tmp_path / "data")
    base = tiny_options(tmp_path, train={"total_iter": 4, "optim_total": {"type": "AdamW", "lr": 1e-3,
                                                                          "weight_decay": 0.01}},
                        logger={"save_checkpoint_freq": 2, "print_freq": 100})
    Trainer(_opts(base), stop_after=2).fit()
    changed = _merge(base, {"train": {"optim_total": {"lr": 5e-4, "weight_decay": 0.5}}})
    t = _set_up(Trainer(_opts(changed), resume="auto", allow_config_change=True))
    try:
        (group,) = t.optimizer.param_groups
        assert (group["lr"], group["initial_lr"], group["weight_decay"]) == (5e-4, 5e-4, 0.5)
        assert t.scheduler.base_lrs == [5e-4] and t.start_iter == 2
        assert t.optimizer.state  # the moments still come from the checkpoint
    finally:
        _tear_down(t)
    assert "weight_decay 0.01 -> 0.5" in caplog.text and "base lr [0.001] -> [0.0005]" in caplog.text


def test_a_short_last_batch_is_saved_and_resumed_exactly(tmp_path):
    # 8 pairs in batches of 3 with drop_last false: a pass is 3 + 3 + 2 samples.  The save at the end of a
    # pass counted 3 x 3 = 9 samples of 8 and failed ("consumed=9 ... outside 0..8")
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, datasets={"train": {"batch_size_per_gpu": 3, "drop_last": False}},
                        train={"total_iter": 5}, logger={"save_checkpoint_freq": 3, "print_freq": 100})
    straight = _merge(opts, {"path": {"experiments_root": str(tmp_path / "straight")}})
    Trainer(_opts(straight)).fit()
    Trainer(_opts(opts), stop_after=3).fit()
    Trainer(_opts(opts), resume="auto").fit()
    for name in ("g", "le"):
        a = safe_load(tmp_path / "straight" / "tiny" / "models" / f"net_{name}_5.pth")["params"]
        b = safe_load(tmp_path / "experiments" / "tiny" / "models" / f"net_{name}_5.pth")["params"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_resuming_from_an_earlier_set_moves_the_later_ones_aside(tmp_path, caplog):
    # before, the later sets stayed: keep_last deleted the resumed set, and --resume auto, stage-2 links and
    # test.py took the abandoned iteration 10
    write_pairs(tmp_path / "data")
    base = tiny_options(tmp_path, train={"total_iter": 10, "ema_decay": 0.9},
                        val={"val_freq": 2}, with_val=True,
                        logger={"save_checkpoint_freq": 2, "print_freq": 100, "keep_last": 3})
    Trainer(_opts(base)).fit()
    run = tmp_path / "experiments" / "tiny"
    states = run / "training_states"
    assert sorted(p.name for p in states.iterdir()) == ["10.state", "6.state", "8.state"]
    before = {p.name: p.read_bytes() for p in (run / "models").iterdir()}
    r = Trainer(_opts(base), resume=str(states / "6.state"), stop_after=1).fit()
    assert r.last_iter == 7
    assert sorted(p.name for p in states.iterdir()) == ["6.state", "7.state"]
    (aside,) = run.glob("abandoned_after_6_*")
    moved = {p.name: p.read_bytes() for p in (aside / "models").iterdir()}
    assert sorted(p.name for p in (aside / "training_states").iterdir()) == ["10.state", "8.state"]
    assert {n for n in moved if not n.endswith(("_best.pth", "best.json"))} == {
        "net_g_8.pth", "net_le_8.pth", "net_g_10.pth", "net_le_10.pth",
        "latest.json", "net_g_latest.pth", "net_le_latest.pth"}  # the 'latest' tag was iteration 10's
    assert all(moved[n] == before[n] for n in moved)  # moved whole, not rewritten
    assert "the later sets and tags (8, 10, " in caplog.text
    assert latest_complete(run).iteration == 7
    assert Trainer(_opts(base), resume="auto", stop_after=1).fit().last_iter == 8


def test_a_stage2_resume_refuses_a_frozen_encoder_file_that_changed(tmp_path, capsys):
    # stage 2's frozen net_le is not in its checkpoints: every resume loads it again from its file.  A stage-1
    # run retrained under the same name changed the target prior mid-run without a word
    write_pairs(tmp_path / "data")
    opts = tiny_s2_options(tmp_path, train={"total_iter": 4}, logger={"save_checkpoint_freq": 2, "print_freq": 100})
    Trainer(_opts(opts), stop_after=2).fit()
    le_file = Path(opts["path"]["pretrain_network_le"])
    original = le_file.read_bytes()
    run = tmp_path / "experiments" / "tiny_s2"
    weights = safe_load(le_file)
    weights["params"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights["params"].items()}
    torch.save(weights, le_file)
    files_before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"net_le is not in the checkpoint .* --allow-config-change"):
        Trainer(_opts(opts), resume="auto").fit()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files_before
    capsys.readouterr()
    assert Trainer(_opts(opts), resume="auto", allow_config_change=True, stop_after=1).fit().last_iter == 3
    assert "going on with the new file (--allow-config-change)" in capsys.readouterr().err
    # the set saved since records the new file: it resumes from it without a word, and not from the old one
    assert Trainer(_opts(opts), resume="auto", stop_after=1).fit().last_iter == 4
    assert "net_le is not in the checkpoint" not in capsys.readouterr().err
    le_file.write_bytes(original)
    with pytest.raises(ConfigError, match=r"net_le is not in the checkpoint"):
        Trainer(_opts(opts), resume=str(run / "training_states" / "4.state")).fit()


def test_a_second_start_of_a_training_run_is_refused_while_it_trains(tmp_path):
    # before, a fresh start of the same name archived the running run's folder, and the running trainer went
    # on writing its checkpoints into the newcomer's folder
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, train={"total_iter": 4}, logger={"save_checkpoint_freq": 2, "print_freq": 100})
    first = _set_up(Trainer(_opts(opts)))  # a real trainer, set up: it holds its run folder
    run = tmp_path / "experiments" / "tiny"
    try:
        files_before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        for resume in (None, "auto"):
            with pytest.raises(ConfigError, match="another training is using this run folder now"):
                Trainer(_opts(_merge(opts, {"manual_seed": 99})), resume=resume).fit()
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files_before
        assert not list(run.parent.glob("tiny_archived_*"))
    finally:
        _tear_down(first)
    assert Trainer(_opts(opts), stop_after=2).fit().last_iter == 2  # the lock ends with the run
    # a fresh start archives the previous folder and locks its own new one
    second = _set_up(Trainer(_opts(opts)))
    try:
        assert list(run.parent.glob("tiny_archived_*"))
        with pytest.raises(ConfigError, match="another training is using this run folder now"):
            Trainer(_opts(opts), resume="auto").fit()
    finally:
        _tear_down(second)


def test_a_metric_that_cannot_score_stops_the_start_before_the_run_folder(tmp_path):
    # LPIPS without its backbone weights used to stop the training at its first validation, after the run
    # folder was written (a same-named run archived) and before that iteration's checkpoint
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, with_val=True, train={"total_iter": 2},
                        val={"val_freq": 2, "metrics": {"lp": {"type": "lpips_alex"}}})
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(opts, sort_keys=False))
    env = {**run_env(), "TORCH_HOME": str(tmp_path / "empty_torch"), "HIDIFF_CACHE": str(tmp_path / "empty_cache")}
    proc = run_checked([PY, str(REPO / "scripts" / "train.py"), "-opt", str(cfg)], env=env, timeout=300,
                       returncode=2)
    assert "val.metrics.lp (lpips_alex)" in proc.stderr and "weights not found" in proc.stderr, proc.stderr
    assert not (tmp_path / "experiments").exists()


def test_val_self_ensemble_is_used_by_the_validation_during_training(tmp_path):
    # before, val.self_ensemble was accepted in a training file and ignored by its validation (test.py used it)
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, with_val=True, train={"total_iter": 1},
                        val={"val_freq": 1, "max_images": 2, "self_ensemble": True})
    t = _set_up(Trainer(_opts(opts)))
    try:
        def psnr(ensemble):
            return validate(t.model, t.val_sets, metric_fns=t.metric_fns, manual_seed=11, device=t.device,
                            ensemble=ensemble)["tinyval"]["psnr"]

        validate_during_training(t, 1)
        assert t.last_validation["tinyval"]["psnr"] == psnr(True) != psnr(False)
    finally:
        _tear_down(t)
