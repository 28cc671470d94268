"""A weights folder's spare ``net_*.pth`` (a backup such as ``net_g_old.pth``) is neither read nor recorded.

Real tiny networks in a real release folder and a real model folder (written from a tiny training state).
"""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
import yaml

import hidiff
from hidiff.archs import build_network
from hidiff.config import options_from_text
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.runners import model_folder
from hidiff.runners.weights import from_checkpoint, from_release
from test_trust_testing import option_text, save_release, tiny_state_dicts
from tiny import NET_G

RELEASE = ["d", "g", "le_dm"]


def _image() -> torch.Tensor:
    return model_folder.check_image(seed=1)


def _add_spares(folder) -> None:
    shutil.copy(folder / "net_g.pth", folder / "net_g_old.pth")
    (folder / "net_g_broken.pth").write_bytes(b"not a torch file")


@pytest.mark.parametrize("kind", ["release", "model folder"])
def test_spare_network_files_are_ignored_with_a_warning(tmp_path, kind, caplog):
    sds = tiny_state_dicts(5)
    if kind == "release":
        folder = save_release(tmp_path / "rel", sds)
        loads = "a release folder holds only"
    else:
        opts = options_from_text(option_text(tmp_path, tmp_path / "data", tmp_path / "rel", name="run"),
                                 is_train=False)
        store = CheckpointStore(tmp_path / "exps" / "run")
        store.save(1, {s: (sd, None) for s, sd in sds.items()}, {"config": opts.to_dict()})
        folder = tmp_path / "model"
        model_folder.write_model_folder(from_checkpoint(store.state_path(1)), folder)
        loads = "model_type HI_Diff_S2 loads only"
    clean = from_release(folder)
    before = hidiff.load(folder, device="cpu")
    _add_spares(folder)

    with caplog.at_level(logging.WARNING, logger="hidiff"):
        weights = from_release(folder)
    assert sorted(weights.files) == sorted(weights.sha256) == sorted(weights.param_keys) == RELEASE
    assert sorted(weights.info()) == RELEASE and weights.sha256 == clean.sha256
    assert "g_old" not in weights.describe()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("net_g_broken.pth, net_g_old.pth" in m and loads in m for m in warned), warned

    after = hidiff.load(folder, device="cpu")
    assert sorted(after.sha256) == ["net_d", "net_g", "net_le_dm"] and after.sha256 == before.sha256
    noise = before.pipeline.noise(1, seed=0)
    with torch.inference_mode():
        a = before.pipeline.restore(_image(), noise=noise)
        b = after.pipeline.restore(_image(), noise=noise)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_plain_model_folder_reads_only_net_g(tmp_path, caplog):
    """A prior-free model folder loads net_g alone: release-named files beside it are not its weights."""
    plain_g = {**NET_G, "use_prior": False}
    folder = save_release(tmp_path / "plain", {"g": build_network(plain_g).state_dict()})
    (folder / "model.yml").write_text(yaml.safe_dump({"name": "plain", "model_type": "PlainRestoration",
                                                      "network_g": plain_g}))
    before = hidiff.load(folder, device="cpu")
    shutil.copy(folder / "net_g.pth", folder / "net_le_dm.pth")
    with caplog.at_level(logging.WARNING, logger="hidiff"):
        weights = from_release(folder)
    assert sorted(weights.files) == ["g"]
    assert any("net_le_dm.pth" in r.getMessage() and "PlainRestoration loads only net_g.pth" in r.getMessage()
               for r in caplog.records)
    after = hidiff.load(folder, device="cpu")
    assert after.sha256 == before.sha256 == {"net_g": weights.sha256["g"]}
    with torch.inference_mode():
        np.testing.assert_array_equal(before.pipeline.restore(_image()).numpy(),
                                      after.pipeline.restore(_image()).numpy())
