"""Checkpoint files: safe loading, key handling, and crash-safe checkpoint sets."""
import os
import pickle

import pytest
import torch
from torch import nn

from hidiff.utils.checkpoint import (BARE_STATE_DICT, load_network, params_entry, safe_load, save_network_file,
                                     save_object, strip_prefixes)
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.errors import CheckpointError


class _Evil:
    """Unpickling this object calls open(marker, 'w'), i.e. creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_checkpoint_is_rejected_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned.txt"
    bad = tmp_path / "evil.pth"
    payload = {"params": {"w": torch.zeros(1)}, "x": _Evil(str(marker))}
    if writer == "torch.save":
        torch.save(payload, bad)
    else:
        bad.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="evil.pth"):
        safe_load(bad)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_network(_net(), bad)
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path):
    good = tmp_path / "net.pth"
    save_network_file(good, _net().state_dict())
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        safe_load(cut)
    with pytest.raises(CheckpointError, match="not found"):
        safe_load(tmp_path / "nope.pth")
    picture = tmp_path / "photo.png"  # a wrong file is named as such, not as a code-execution risk
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*photo\.png: not a torch file"):
        safe_load(picture)


def test_load_network_prefixes_and_param_key_fallback(tmp_path):
    src, dst = _net(), nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    sd = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    path = tmp_path / "net.pth"
    torch.save({"params": sd}, path)
    load_network(dst, path, param_key="params_ema")  # falls back to 'params'
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    # with both keys present, params_ema is chosen
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in src.state_dict().items()}
    save_network_file(path, src.state_dict(), ema)
    load_network(dst, path, param_key="params_ema")
    assert torch.equal(dst[0].weight, src[0].weight + 1)
    # a bare state_dict works too
    torch.save(src.state_dict(), path)
    load_network(dst, path)
    assert torch.equal(dst[0].weight, src[0].weight)
    assert list(strip_prefixes({"module.module.a": 1})) == ["a"]


def test_strict_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    sd = _net().state_dict()
    sd.pop("2.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 3, 3, 3)
    path = tmp_path / "bad.pth"
    save_network_file(path, sd)
    dst = _net()
    with pytest.raises(CheckpointError) as info:
        load_network(dst, path)
    msg = str(info.value)
    assert "bad.pth" in msg and "2.bias" in msg and "extra.weight" in msg
    assert "0.weight: file (5, 3, 3, 3) vs network (4, 3, 3, 3)" in msg
    before = dst[0].weight.clone()
    missing, unexpected, shapes = load_network(dst, path, strict=False)
    assert missing == ["2.bias"] and unexpected == ["extra.weight"] and len(shapes) == 1
    assert torch.equal(dst[0].weight, before)  # shape-mismatched key skipped
    assert torch.equal(dst[2].weight, sd["2.weight"])


def test_failed_save_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="file"):
        save_object(blocker / "sub" / "net.pth", {"a": torch.zeros(1)})


@pytest.mark.parametrize("obj", [{"f": lambda: 1}, {"gen": (i for i in range(2))}])
def test_unserialisable_object_is_a_checkpoint_error(tmp_path, obj):
    """torch.save's own failures (PicklingError, TypeError) name the file too, and nothing is written."""
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*net\.pth: torch\.save could not"):
        save_object(tmp_path / "net.pth", obj)
    assert list(tmp_path.iterdir()) == []


def _nets(scale=1.0):
    n = _net()
    return {"g": ({k: v * scale if v.is_floating_point() else v for k, v in n.state_dict().items()}, None),
            "le": (n[0].state_dict(), n[0].state_dict())}


def test_store_roundtrip_verification_and_skip_incomplete(tmp_path):
    store = CheckpointStore(tmp_path)
    for it in (5, 10, 15):
        store.save(it, _nets(it), {"extra": torch.tensor([it])})
    assert store.iterations() == [5, 10, 15]
    v = store.latest_valid()
    assert v.iteration == 15 and int(v.state["extra"]) == 15
    assert torch.equal(v.networks["g"]["params"]["0.weight"], _nets(15)["g"][0]["0.weight"])
    assert "params_ema" in v.networks["le"]
    # newest set loses a network file -> skipped, 10 is used
    (tmp_path / "models" / "net_le_15.pth").unlink()
    # set 10 gets a modified network file -> skipped too
    f = tmp_path / "models" / "net_g_10.pth"
    save_network_file(f, _nets(3)["g"][0])
    assert store.latest_valid().iteration == 5
    with pytest.raises(CheckpointError, match="net_le_15.pth"):
        store.verify(store.state_path(15))
    # a truncated state file is skipped as well
    p = store.state_path(5)
    p.write_bytes(p.read_bytes()[:100])
    assert store.latest_valid() is None


def test_store_prune_keeps_last_k_and_protected(tmp_path):
    store = CheckpointStore(tmp_path)
    for it in (1, 2, 3, 4, 5):
        store.save(it, _nets(), {})
    assert store.prune(2, protect={1}) == [2, 3]
    assert store.iterations() == [1, 4, 5]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(
        f"net_{n}_{i}.pth" for n in ("g", "le") for i in (1, 4, 5))
    # stale temporary files of a killed writer are removed
    (tmp_path / "models" / ".net_g_6.pth.abc.tmp").write_bytes(b"partial")
    assert len(store.remove_stale_temp_files()) == 1
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "models").iterdir())
    store.save_tagged("best", _nets(), {"iter": 4, "psnr": 30.0})
    assert (tmp_path / "models" / "net_g_best.pth").is_file() and (tmp_path / "models" / "best.json").is_file()
    assert sorted(os.listdir(tmp_path / "training_states")) == [f"{i}.state" for i in (1, 4, 5)]


def test_params_entry_names_the_entry_it_read():
    sd = {"w": torch.zeros(2)}
    assert params_entry({"params": sd, "params_ema": sd}, "params_ema", "f")[0] == "params_ema"
    assert params_entry({"params": sd}, "params_ema", "f")[0] == "params"  # the fallback, named
    assert params_entry(sd, "params_ema", "f")[0] == BARE_STATE_DICT
