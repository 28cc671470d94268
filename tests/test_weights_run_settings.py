"""An option file's network keys against the settings a run recorded (hidiff.runners.weights.merge_run_options):
a key the run left at its default is compared with that default, and a key the network does not have is named."""
from __future__ import annotations

import pytest

from hidiff.errors import ConfigError
from hidiff.runners.weights import Weights, merge_run_options

RUN = {"model_type": "HI_Diff_S2", "network_g": {"type": "HIDiffUNet", "dim": 16}}


def _weights() -> Weights:
    return Weights(kind="experiment", label="run", state_dicts={}, files={}, config=dict(RUN),
                   config_source="run/config.yml")


def test_equal_given_or_default_values_merge_with_the_run():
    merged = merge_run_options({"network_g": {"dim": 16, "bias": False}}, _weights(), "test.yml")
    assert merged["network_g"]["dim"] == 16


@pytest.mark.parametrize("mine, expected", [
    ({"dim": 32}, "network_g.dim: test.yml says 32, the run was trained with 16"),
    ({"bias": True}, "network_g.bias: test.yml says True, the run was trained with False"),   # the default
    ({"no_such": 1}, "network_g.no_such: test.yml says 1, the run was trained with no such key"),
])
def test_a_contradicting_network_key_names_both_values(mine, expected):
    with pytest.raises(ConfigError) as info:
        merge_run_options({"network_g": mine}, _weights(), "test.yml")
    assert expected in str(info.value)
