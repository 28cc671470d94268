"""Checkpoint writes and reads that fail part-way: the previous unit survives, every error is a CheckpointError."""
import errno
import io
import json
import logging

import pytest
import torch

import hidiff.engine.checkpoint_store as cs
from hidiff.engine.checkpoint_store import CheckpointStore, latest_complete
from hidiff.errors import CheckpointError
from hidiff.utils.checkpoint import safe_load


def _nets(value: float):
    return {"g": ({"w": torch.full((3, 4), value)}, {"w": torch.full((3, 4), value + 0.5)}),
            "le": ({"w": torch.full((2,), -value)}, None)}


def _temporaries(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def _failing_on_second_file(monkeypatch, exc):
    """Make the network-file writer of the store write a partial file, then fail, on its 2nd call."""
    real, calls = cs.save_network_file, []

    def writer(path, params, ema=None):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as fh:  # what a full disk leaves behind
                fh.write(b"PK\x03\x04partial")
            raise exc
        real(path, params, ema)

    monkeypatch.setattr(cs, "save_network_file", writer)
    return calls


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 CheckpointError("failed to write checkpoint: No space left on device")])
def test_failed_tagged_save_keeps_the_previous_best(tmp_path, monkeypatch, exc):
    store = CheckpointStore(tmp_path)
    store.save_tagged("best", _nets(1.0), {"iter": 100, "psnr": 30.0})
    models = tmp_path / "models"
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    assert sorted(before) == ["best.json", "net_g_best.pth", "net_le_best.pth"]

    calls = _failing_on_second_file(monkeypatch, exc)
    with pytest.raises(CheckpointError, match="No space left"):
        store.save_tagged("best", _nets(2.0), {"iter": 200, "psnr": 31.0})
    assert len(calls) == 2 and all(p.name.endswith(".tmp") for p in calls)  # never the final names

    # the previous unit: marker and files unchanged, complete, loadable with its old values
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before
    assert _temporaries(tmp_path) == []
    unit = latest_complete(tmp_path, "best")
    assert unit is not None and unit.iteration == 100 and unit.state is None
    assert unit.networks == {n: models / f"net_{n}_best.pth" for n in ("g", "le")}
    g, le = safe_load(unit.networks["g"]), safe_load(unit.networks["le"])
    assert torch.equal(g["params"]["w"], torch.full((3, 4), 1.0))
    assert torch.equal(g["params_ema"]["w"], torch.full((3, 4), 1.5))
    assert torch.equal(le["params"]["w"], torch.full((2,), -1.0)) and "params_ema" not in le
    assert json.loads((models / "best.json").read_text())["psnr"] == 30.0

    # the next save that works replaces the whole unit
    monkeypatch.undo()
    store.save_tagged("best", _nets(3.0), {"iter": 300, "psnr": 32.0})
    unit = latest_complete(tmp_path, "best")
    assert unit.iteration == 300 and _temporaries(tmp_path) == []
    assert torch.equal(safe_load(unit.networks["le"])["params"]["w"], torch.full((2,), -3.0))


def test_first_tagged_save_that_fails_leaves_no_unit(tmp_path, monkeypatch):
    _failing_on_second_file(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointError):
        CheckpointStore(tmp_path).save_tagged("latest", _nets(1.0), {"iter": 7})
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == []
    assert latest_complete(tmp_path) is None


def test_temporaries_of_a_killed_tagged_save_are_stale_temp_files(tmp_path, monkeypatch):
    """A SIGKILL before the renames leaves the old unit and temporary files that the next start removes."""
    store = CheckpointStore(tmp_path)
    store.save_tagged("best", _nets(1.0), {"iter": 100})
    monkeypatch.setattr(CheckpointStore, "_discard", staticmethod(lambda pending: None))  # as if killed
    _failing_on_second_file(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointError):
        store.save_tagged("best", _nets(2.0), {"iter": 200})
    assert len(_temporaries(tmp_path)) == 2
    assert latest_complete(tmp_path, "best").iteration == 100
    assert len(store.remove_stale_temp_files()) == 2 and _temporaries(tmp_path) == []
    assert latest_complete(tmp_path, "best").iteration == 100


def _legacy_bytes() -> bytes:
    buf = io.BytesIO()
    payload = {"params": {"0.weight": torch.randn(4, 3, 3, 3), "0.bias": torch.randn(4), "n": torch.tensor(3)},
               "params_ema": {"a": torch.randn(2).half()}}
    torch.save(payload, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def test_truncated_legacy_file_is_a_checkpoint_error_naming_it(tmp_path):
    data = _legacy_bytes()
    assert data[:2] == b"\x80\x02" and len(data) > 400
    path = tmp_path / "legacy_net.pth"
    for n in list(range(0, 400, 7)) + [len(data) - 1]:
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as info:
            safe_load(path)
        msg = str(info.value)
        assert "legacy_net.pth" in msg and "truncated" in msg, (n, msg)
        assert "could run code" not in msg, (n, msg)  # a name cut mid-way is not foreign code
    path.write_bytes(data)
    assert torch.equal(safe_load(path)["params"]["n"], torch.tensor(3))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_legacy_header_is_a_checkpoint_error(tmp_path):
    data = _legacy_bytes()
    path = tmp_path / "flipped.pth"
    for i in range(400):
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        try:
            safe_load(path)  # some bytes are tensor data or names the loader does not check
        except CheckpointError as exc:
            assert "flipped.pth" in str(exc)


def _rewrite_state(path, change):
    state = torch.load(path, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, path)


MALFORMED = {
    "manifest entry without sha256": (lambda s: s["networks"]["g"].pop("sha256"), "'sha256'"),
    "manifest entry without file": (lambda s: s["networks"]["le"].pop("file"), "'file'"),
    "manifest entry not a dict": (lambda s: s["networks"].update(g="net_g_10.pth"), "network 'g'"),
    "size not a number": (lambda s: s["networks"]["g"].update(size="big"), "network 'g'"),
    "networks not a dict": (lambda s: s.update(networks=["g", "le"]), "'networks'"),
    "version not a number": (lambda s: s.update(version="one"), "'version'"),
    "no iteration": (lambda s: s.pop("iter"), "'iter'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_state_is_skipped_with_its_reason(tmp_path, caplog, case):
    change, reason = MALFORMED[case]
    log = logging.getLogger("hidiff.test.checkpoint_failures")
    store = CheckpointStore(tmp_path, log)
    for it in (5, 10):
        store.save(it, _nets(float(it)), {"extra": it})
    _rewrite_state(store.state_path(10), change)
    with pytest.raises(CheckpointError) as info:
        store.verify(store.state_path(10))
    assert "10.state" in str(info.value) and reason in str(info.value)
    with caplog.at_level(logging.WARNING, logger=log.name):
        v = store.latest_valid()
    assert v is not None and v.iteration == 5 and v.state["extra"] == 5
    skipped = [r.getMessage() for r in caplog.records if r.name == log.name]
    assert len(skipped) == 1 and "iteration 10" in skipped[0] and "10.state" in skipped[0] and reason in skipped[0]
