"""DPDD checks made before a run starts: image sizes of every view (start-up scan) and the order of the views
the dataset stacks against the order network_g reads (load time)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import OPTIONS
from hidiff.config import load_options, options_from_text
from hidiff.data.dual_pixel_dataset import DualPixelDataset
from hidiff.engine.setup import check_training_images
from hidiff.errors import ConfigError, DataError

ROLES = ("inputC", "inputL", "inputR", "target")


def write_dpdd(root: Path, sizes: dict) -> Path:
    """``sizes``: {key: {role: (h, w)}} (a role left out is 40x40), 16-bit PNGs under root/train."""
    for key, roles in sizes.items():
        for role in ROLES:
            folder = root / "train" / role
            folder.mkdir(parents=True, exist_ok=True)
            h, w = roles.get(role, (40, 40))
            cv2.imwrite(str(folder / f"{key}.png"), np.full((h, w, 3), 1000, np.uint16))
    return root


# ------------------------------------------------------------------------------------------ size scan
def test_every_view_and_target_is_scanned_before_the_run(tmp_path):
    root = write_dpdd(tmp_path, {"a": {}, "b": {role: (20, 20) for role in ROLES},
                                 "c": {"inputR": (40, 36)}, "d": {"target": (44, 40)}})
    ds = DualPixelDataset(str(root), "train", gt_size=32)
    problems = ds.size_problems()
    assert len(problems) == 3, problems
    assert f"'{root}/train/target/b.png' is 20x20, smaller than the crop size 32" in problems[0]
    assert "the images of 'c' differ in size" in problems[1] and "inputR/c.png' is 40x36" in problems[1]
    assert "inputL/c.png' is 40x40" in problems[1] and "target/c.png' is 40x40" in problems[1]
    assert "the images of 'd' differ in size" in problems[2] and "target/d.png' is 44x40" in problems[2]
    with pytest.raises(DataError, match=r"training set 'dpdd': 3 image\(s\) cannot give a training sample"):
        check_training_images(ds, "dpdd")
    # what the scan reports is what the read would have failed on, later
    with pytest.raises(DataError, match="smaller than the crop size 32"):
        ds[(ds.keys.index("b"), 0)]
    with pytest.raises(DataError, match="differ in size"):
        ds[(ds.keys.index("c"), 0)]


def test_the_combined_view_is_scanned_when_it_is_the_input(tmp_path):
    root = write_dpdd(tmp_path, {"a": {"inputC": (40, 30)}, "b": {"inputL": (30, 30)}})
    combined = DualPixelDataset(str(root), "train", gt_size=16, dual_pixel=False).size_problems()
    assert len(combined) == 1 and "inputC/a.png' is 40x30" in combined[0]      # inputL is not read
    dual = DualPixelDataset(str(root), "train", gt_size=16).size_problems()
    assert len(dual) == 1 and "inputL/b.png' is 30x30" in dual[0]              # inputC is not read


def test_a_good_set_has_no_problem(tmp_path):
    root = write_dpdd(tmp_path, {"a": {}, "b": {role: (48, 36) for role in ROLES}})
    assert DualPixelDataset(str(root), "train", gt_size=32, view_order="RL").size_problems() == []
    check_training_images(DualPixelDataset(str(root), "train", gt_size=36), "dpdd")


# ------------------------------------------------------------------------------------------ view order
def swintormer_options(dataset: dict, net: dict) -> dict:
    return {"name": "dp", "model_type": "PlainRestoration",
            "network_g": {"type": "Swintormer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                          "heads": [1, 1, 1, 1], "window_size": 4, **net},
            "datasets": {"test_1": {"name": "dpdd", "type": "DualPixelDataset", "dataroot": ".",
                                    "protocol": "dpdd", **dataset}}}


def load_test(opts: dict):
    return options_from_text(yaml.safe_dump(opts, sort_keys=False), is_train=False)


@pytest.mark.parametrize("dataset, net, expected", [
    ({}, {}, "datasets.test_1.view_order: the set stacks its views as 'LR' (the DualPixelDataset default) but "
             "network_g.dual_pixel_order is 'RL' (the Swintormer default)"),
    ({"view_order": "LR"}, {}, "datasets.test_1.view_order: the set stacks its views as 'LR' but "
                               "network_g.dual_pixel_order is 'RL' (the Swintormer default)"),
    ({"view_order": "RL"}, {"dual_pixel_order": "LR"}, "datasets.test_1.view_order: the set stacks its views as "
                                                       "'RL' but network_g.dual_pixel_order is 'LR'"),
    ({}, {"dual_pixel_order": "RL"}, "'LR' (the DualPixelDataset default) but network_g.dual_pixel_order is 'RL',"),
])
def test_views_in_another_order_than_the_network_reads_are_refused(dataset, net, expected):
    with pytest.raises(ConfigError) as err:
        load_test(swintormer_options(dataset, net))
    assert expected in str(err.value) and "would read the two views swapped" in str(err.value), err.value


@pytest.mark.parametrize("dataset, net", [
    ({"view_order": "RL"}, {}),
    ({"view_order": "LR"}, {"dual_pixel_order": "LR"}),
    ({"dual_pixel": False}, {"inp_channels": 3}),                      # the combined view: no order
])
def test_agreeing_orders_load(dataset, net):
    assert load_test(swintormer_options(dataset, net)).datasets["test_1"].type == "DualPixelDataset"


def test_every_val_and_train_set_is_compared(tmp_path):
    opts = swintormer_options({"view_order": "RL"}, {})
    opts["datasets"]["val_2"] = {"name": "dpdd_val", "type": "DualPixelDataset", "dataroot": "."}
    with pytest.raises(ConfigError, match="datasets.val_2.view_order: the set stacks its views as 'LR'"):
        load_test(opts)


@pytest.mark.parametrize("name", ["train_swintormer_dpdd.yml", "test_swintormer_dpdd.yml"])
def test_the_shipped_dpdd_files_agree(name):
    opt = load_options(OPTIONS / name, is_train=name.startswith("train"))
    assert {ds.params.get("view_order") for ds in opt.datasets.values()} == {"RL"}
    assert opt.networks["g"].kwargs["dual_pixel_order"] == "RL"


def test_self_ensemble_is_refused_on_a_dual_pixel_set_but_not_on_its_combined_view():
    opts = swintormer_options({"view_order": "RL"}, {})
    opts["val"] = {"self_ensemble": True}
    with pytest.raises(ConfigError, match="val.self_ensemble: datasets.test_1 is a dual-pixel set, whose pairs the 8 "
                                          "flips and rotations do not keep valid"):
        load_test(opts)
    combined = swintormer_options({"dual_pixel": False}, {"inp_channels": 3})
    combined["val"] = {"self_ensemble": True}
    assert load_test(combined).val.self_ensemble
