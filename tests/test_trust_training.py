"""Training runs lose, move or mislabel nothing: a refused start changes no file; checkpoints are units."""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from engine_tiny_run import tiny_options, tiny_s2_options, write_pairs
from hidiff.cli.train import main
from hidiff.engine.checkpoint_store import latest_complete
from hidiff.models.stage_link import resolve_pretrained


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
