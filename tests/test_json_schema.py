"""The shipped JSON Schema is the generated one, accepts every shipped option file, and rejects what the loader rejects."""
from __future__ import annotations

import copy
import json

import pytest

from conftest import OPTIONS, PY, REPO, run_env
from hidiff.config.yaml_io import load_yaml
from procs import run_checked

jsonschema = pytest.importorskip("jsonschema")

SCHEMA_FILE = OPTIONS / "hidiff.schema.json"
OPTION_FILES = sorted(OPTIONS.glob("*.yml"))


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_one_the_command_writes(tmp_path):
    # A fresh process: other tests register throw-away datasets and losses in this one's registries.
    out = tmp_path / "s.json"
    run_checked([PY, str(REPO / "scripts" / "schema.py"), "-o", str(out)], env=run_env(), timeout=300)
    assert out.read_text() == SCHEMA_FILE.read_text(), \
        "options/hidiff.schema.json is stale: python scripts/schema.py -o options/hidiff.schema.json"


@pytest.mark.parametrize("path", OPTION_FILES, ids=[p.name for p in OPTION_FILES])
def test_every_shipped_file_is_valid_and_points_at_the_schema(path, validator):
    assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=hidiff.schema.json"
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(load_yaml(path))]
    assert not errors, errors


def _set(d, dotted, value):
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    d[last] = value


@pytest.mark.parametrize("key, value, fragment", [
    ("logger.print_freq", 0, "less than the minimum of 1"),
    ("train.grad_clip_norm", -0.5, "less than or equal to the minimum of 0"),
    ("manual_seed", 2 ** 70, "greater than the maximum of 4294967295"),
    ("train.optim_total.lr", "fast", "'fast' is not of type 'number'"),
    ("network_g.dimm", 8, "'dimm' was unexpected"),
    ("datasets.train.dataroot_lq", 5, "5 is not of type 'string'"),
    ("datasets.train.use_hflip", True, "False schema"),
    ("val.metrics.psnr.type", "psnr", "is not one of"),
    ("train.pixel_opt.type", "L1Los", "is not one of"),
    ("path.pretrain_netwrk_g", "x.pth", "does not match any of the regexes"),
    ("loger", {}, "'loger' does not match"),
    ("name", "../other", "does not match"),
    ("train.pixel_opt.reduction", "meen", "'meen' is not one of ['mean', 'sum']"),
    ("datasets.val.batch_size_per_gpu", 4, "1 was expected"),
    ("datasets.train_2", {"name": "x", "type": "PairedImageIRDataset"}, "'train_2' does not match any of the regexes"),
])
def test_schema_rejects_what_the_loader_rejects(validator, key, value, fragment):
    data = copy.deepcopy(load_yaml(OPTIONS / "stage2_gopro.yml"))
    _set(data, key, value)
    messages, todo = [], list(validator.iter_errors(data))
    while todo:  # errors inside anyOf branches (nullable blocks) are in each error's context
        err = todo.pop()
        messages.append(err.message)
        todo += err.context or []
    assert any(fragment in m for m in messages), messages


def test_schema_accepts_basicsr_metric_names_and_describes_fields(validator):
    data = load_yaml(OPTIONS / "stage2_gopro.yml")
    data["val"]["metrics"]["psnr"]["type"] = "calculate_psnr"
    assert not list(validator.iter_errors(data))
    schema = json.loads(SCHEMA_FILE.read_text())
    freq = schema["$defs"]["LoggerOptions"]["properties"]["print_freq"]
    assert freq["minimum"] == 1 and freq["description"] and freq["default"] == 100


@pytest.mark.parametrize("tile, valid", [(False, True), (None, True), ({"size": 256}, True), (True, False),
                                         (5, False)])
def test_schema_and_loader_agree_on_val_tile(validator, tile, valid):
    """``val.tile: false`` (off, like null) passed the schema but failed the loader."""
    from hidiff.config import options_from_text
    from hidiff.config.yaml_io import dump_yaml
    from hidiff.errors import ConfigError

    data = load_yaml(OPTIONS / "test_gopro.yml")
    data["val"]["tile"] = tile
    assert (not list(validator.iter_errors(data))) is valid
    if valid:
        options_from_text(dump_yaml(data), is_train=False)
    else:
        with pytest.raises(ConfigError, match="val.tile: expected a mapping"):
            options_from_text(dump_yaml(data), is_train=False)
