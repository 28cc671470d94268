"""Training runs lose, move or mislabel nothing: a refused start changes no file; checkpoints are units."""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from engine_tiny_run import tiny_options, write_pairs
from hidiff.cli.train import main


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
