"""A dual-pixel (6-channel) model cannot deblur RGB photos: hidiff-deblur and the API say so before any work."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import hidiff
from hidiff.archs import build_network
from hidiff.cli.deblur import main as deblur_main
from hidiff.config import options_from_text
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.errors import ConfigError, DataError

# window 2: inputs are padded to multiples of 32, which keeps it fast on a CPU
NET_G = {"type": "Swintormer", "inp_channels": 6, "dim": 8, "num_blocks": [1, 1, 1, 2], "num_refinement_blocks": 1,
         "heads": [1, 1, 2, 2], "window_size": 2}


@pytest.fixture(scope="module")
def dual_pixel_state(tmp_path_factory) -> Path:
    """The training state of a tiny 6-channel PlainRestoration run, with its recorded options."""
    root = tmp_path_factory.mktemp("dp")
    raw = {"name": "dp_tiny", "model_type": "PlainRestoration", "manual_seed": 0, "network_g": NET_G,
           "datasets": {"test_1": {"name": "Tiny", "type": "PairedImageIRDataset", "dataroot_gt": str(root),
                                   "dataroot_lq": str(root)}},
           "val": {"window_size": 32, "metrics": {}}}
    options = options_from_text(yaml.safe_dump(raw), is_train=False)
    torch.manual_seed(0)
    store = CheckpointStore(root / "exps" / "dp_tiny")
    store.save(1, {"g": (build_network(NET_G).state_dict(), None)}, {"config": options.to_dict()})
    return store.state_path(1)


@pytest.fixture()
def photo(tmp_path) -> Path:
    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(path)
    return path


def test_deblur_refuses_a_six_channel_model_before_creating_the_output(tmp_path, dual_pixel_state, photo, capsys):
    """It was accepted, then every photo failed with a raw ValueError, after -o had been created."""
    out = tmp_path / "out"
    assert deblur_main([str(photo), "-o", str(out), "--checkpoint", str(dual_pixel_state), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "takes 6-channel input (a dual-pixel pair of views), but photos are RGB" in err, err
    assert "hidiff-test" in err and "ValueError" not in err
    assert not out.exists()


def test_the_api_refuses_photos_and_arrays_but_restores_six_channel_tensors(dual_pixel_state, photo):
    restorer = hidiff.load(dual_pixel_state, device="cpu")
    assert restorer.pipeline.in_channels == 6
    for image, what in ((photo, "an image file"), (np.zeros((16, 16, 3), np.uint8), "an array"),
                        (np.zeros((16, 16), np.uint16), "an array"), (np.zeros((16, 16, 4), np.uint8), "an array")):
        with pytest.raises(DataError, match=f"{what} is restored as RGB, but this model .* takes 6-channel input"):
            restorer.deblur(image)
    out = restorer.deblur(torch.rand(6, 16, 16))  # the dual-pixel input it does take
    assert out.shape == (3, 16, 16) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="takes a dual-pixel pair, which the 8 flips and rotations do not keep"):
        restorer.deblur(torch.rand(6, 16, 16), self_ensemble=True)
