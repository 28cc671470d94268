"""LPIPS and VGG16 features without internet: weight conversion, safe unpickling, cache location, values."""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import PY, REPO, run_env
from hidiff.errors import HidiffError
from hidiff.metrics import lpips_weights
from hidiff.metrics.backbones import (TORCHVISION_FILES, _empty_features, cache_dir, converted_weights_path, find_weights,
                                      load_vgg16_features, torchvision_weights_path)
from procs import run_checked

# A development machine's IQA fixtures (Kodak pairs with published LPIPS values); absent in CI.
FIXTURES = Path(os.environ.get("HIDIFF_IQA_FIXTURES") or REPO.parent / "shared" / "fixtures" / "iqa")


def needs_weights(net: str):
    """Skip without the converted/downloaded backbone, except under `make test`, which obtains it first."""
    if os.environ.get("HIDIFF_REQUIRE_LPIPS") == "1":
        return pytest.mark.skipif(False, reason="")
    return pytest.mark.skipif(find_weights(net) is None,
                              reason=f"{net} weights not installed: run scripts/get_lpips_weights.py")


def test_missing_weights_fail_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setenv("HIDIFF_CACHE", str(tmp_path / "empty_cache"))
    assert find_weights("vgg16") is None
    assert load_vgg16_features(required=False) is None
    with pytest.raises(HidiffError, match=r"python scripts/get_lpips_weights\.py"):
        load_vgg16_features()
    from hidiff.metrics.lpips_metric import build_lpips

    with pytest.raises(HidiffError, match=r"get_lpips_weights"):
        build_lpips("alex")
    assert sorted(tmp_path.iterdir()) == []  # nothing was downloaded or created


def test_cache_is_hidiffs_own_never_torchvisions_file_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HIDIFF_CACHE", str(tmp_path / "hc"))
    assert cache_dir() == tmp_path / "hc" / "lpips"
    assert converted_weights_path("alexnet") == tmp_path / "hc" / "lpips" / "alexnet_features.pth"
    monkeypatch.delenv("HIDIFF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hidiff" / "lpips"
    for net, name in TORCHVISION_FILES.items():
        assert converted_weights_path(net).name != name
        assert torchvision_weights_path(net) == tmp_path / "torch" / "hub" / "checkpoints" / name


def test_torchvision_download_is_used_when_the_cache_is_empty(tmp_path, monkeypatch):
    """A torchvision download (features and classifier keys) serves as is and is never written."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HIDIFF_CACHE", str(tmp_path / "hc"))
    gen = torch.Generator().manual_seed(0)
    full = {f"features.{k}": torch.randn(v.shape, generator=gen)
            for k, v in _empty_features("alexnet").state_dict().items()}
    full["classifier.1.weight"] = torch.randn(3, 5, generator=gen)  # stands for the 58 M-parameter classifier
    path = torchvision_weights_path("alexnet")
    path.parent.mkdir(parents=True)
    torch.save(full, path)
    assert find_weights("alexnet") == path
    feats = lpips_weights.load_features_file(path, "alexnet")
    assert all(torch.equal(v, full[f"features.{k}"]) for k, v in feats.state_dict().items())
    state = {k: v + 1 for k, v in full.items() if k.startswith("features.")}
    lpips_weights.install_backbone(state, "alexnet")
    assert find_weights("alexnet") == converted_weights_path("alexnet")  # hidiff's own conversion comes first
    assert torch.equal(torch.load(path, weights_only=True)["classifier.1.weight"], full["classifier.1.weight"])


def test_restricted_unpickler_loads_numpy_trees_and_refuses_other_globals():
    tree = {"VGG16_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3),
                                   "bias": np.ones(3, np.float32)}}}
    back = lpips_weights.restricted_loads(pickle.dumps(tree, protocol=4))
    assert np.array_equal(back["VGG16_0"]["Conv_0"]["kernel"], tree["VGG16_0"]["Conv_0"]["kernel"])

    class Sneaky:
        def __reduce__(self):
            return (os.getcwd, ())

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        lpips_weights.restricted_loads(pickle.dumps({"x": Sneaky()}, protocol=4))


def test_flax_kernel_conversion_computes_the_same_convolution():
    """A Flax (kh, kw, in, out) cross-correlation computed in numpy equals torch conv2d with the converted weight."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 5, 2, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    img = rng.normal(size=(7, 9, 2)).astype(np.float32)  # HWC
    out = np.zeros((5, 5, 4), np.float64)
    for i in range(5):
        for j in range(5):
            out[i, j] = np.einsum("abc,abcd->d", img[i:i + 3, j:j + 5], kernel) + bias
    w = lpips_weights.flax_conv_to_torch(kernel)
    got = F.conv2d(torch.from_numpy(img.transpose(2, 0, 1))[None], w, torch.from_numpy(bias))[0].numpy()
    np.testing.assert_allclose(got.transpose(1, 2, 0), out, atol=1e-4)


def test_feature_indices_are_torchvision_convs():
    import torchvision

    for net, idx in lpips_weights.FEATURE_INDICES.items():
        with torch.device("meta"):  # structure only, no 100 M-parameter random init
            feats = getattr(torchvision.models, net)(weights=None).features
        convs = [i for i, m in enumerate(feats) if isinstance(m, torch.nn.Conv2d)]
        assert tuple(convs) == idx


@needs_weights("vgg16")
def test_vgg16_features_load_the_installed_weights():
    feats = load_vgg16_features()
    assert isinstance(feats, torch.nn.Sequential) and len(feats) == 31
    state = torch.load(find_weights("vgg16"), map_location="cpu", weights_only=True)
    assert all(torch.equal(v, state[f"features.{k}"]) for k, v in feats.state_dict().items())


@pytest.mark.skipif(not (FIXTURES / "reference_values.csv").is_file(), reason=f"IQA fixtures absent ({FIXTURES})")
@needs_weights("alexnet")
def test_lpips_alex_reproduces_published_values():
    lines = [ln for ln in (FIXTURES / "reference_values.csv").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    official = next(r for r in csv.DictReader(lines) if r["method"] == "lpips_alex_v0.1" and r["variant"] == "official")
    results = lpips_weights.fixture_lpips_alex(FIXTURES)
    assert [name for name, _, _ in results] == ["I03", "I04", "I06", "I08", "I19"]
    for name, ours, _ in results:
        assert ours == pytest.approx(float(official[name]), abs=1e-3), name


def _distorted_pair():
    rng = np.random.default_rng(0)
    base = np.clip(np.cumsum(rng.normal(size=(48, 48, 3)), axis=1) * 8 + 128, 0, 255).astype(np.uint8)
    mild = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    strong = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    return base, mild, strong


@needs_weights("vgg16")
def test_lpips_vgg_runs_offline_and_orders_distortions():
    from hidiff.metrics import lpips_vgg

    base, mild, strong = _distorted_pair()
    assert lpips_vgg(base, base) == pytest.approx(0.0, abs=1e-6)
    assert 0 < lpips_vgg(mild, base) < lpips_vgg(strong, base)


@needs_weights("alexnet")
def test_lpips_alex_runs_offline_and_orders_distortions():
    from hidiff.metrics import lpips_alex

    base, mild, strong = _distorted_pair()
    assert lpips_alex(base, base) == pytest.approx(0.0, abs=1e-6)
    assert 0 < lpips_alex(mild, base) < lpips_alex(strong, base)


@needs_weights("alexnet")
@needs_weights("vgg16")
def test_get_lpips_weights_returns_at_once_when_cached_and_leaves_torch_hub_alone(tmp_path):
    env = run_env()
    env["TORCH_HOME"] = str(tmp_path / "torch")
    proc = run_checked([PY, REPO / "scripts" / "get_lpips_weights.py"], env=env, timeout=300)
    assert "downloading" not in proc.stdout and proc.stdout.count("already installed") == 2
    assert not (tmp_path / "torch").exists()


def test_install_is_atomic_idempotent_and_keeps_different_files(tmp_path):
    from hidiff.errors import CheckpointError

    state = {"features.0.weight": torch.ones(2, 3, 1, 1), "features.0.bias": torch.zeros(2)}
    path, action = lpips_weights.install_backbone(state, "alexnet", folder=tmp_path)
    assert action == "installed" and path == tmp_path / "alexnet_features.pth"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind
    assert lpips_weights.install_backbone(state, "alexnet", folder=tmp_path)[1].startswith("already installed")
    other = {k: v + 1 for k, v in state.items()}
    with pytest.raises(CheckpointError, match="--force"):
        lpips_weights.install_backbone(other, "alexnet", folder=tmp_path)
    lpips_weights.install_backbone(other, "alexnet", folder=tmp_path, force=True)
    assert torch.equal(torch.load(path, weights_only=True)["features.0.weight"], other["features.0.weight"])


def test_legacy_features_only_copy_under_torchvisions_name_is_removed_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = {"features.0.weight": torch.ones(2, 3, 1, 1), "features.0.bias": torch.zeros(2)}
    converted, _ = lpips_weights.install_backbone(state, "alexnet", folder=tmp_path / "cache")
    legacy = torchvision_weights_path("alexnet")
    legacy.parent.mkdir(parents=True)
    for kept in ({**state, "classifier.1.weight": torch.ones(1)},          # a genuine torchvision download
                 {k: v + 1 for k, v in state.items()}):                    # features-only, but other weights
        torch.save(kept, legacy)
        assert lpips_weights.remove_legacy_copy("alexnet", converted) is None and legacy.is_file()
    torch.save(state, legacy)                                              # what earlier hidiff versions wrote
    assert lpips_weights.remove_legacy_copy("alexnet", converted) == legacy and not legacy.exists()
    assert converted.is_file()
