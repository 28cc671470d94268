"""The Python API: ``hidiff.load(source)`` -> a :class:`Restorer` with ``deblur(x, seed=)``.

    import hidiff
    r = hidiff.load("experiments/pretrained_models/HI_Diff_GoPro")
    sharp = r.deblur("photo.jpg", seed=0)          # H x W x 3 array in the file's sample type

The source is read by the same functions as ``hidiff-deblur``'s
``--weights/--checkpoint/--experiment`` (:mod:`hidiff.runners.weights`), and
``deblur`` runs the same per-image seeding and tiler
(:func:`hidiff.inference.tiler.restore_image`).  So for the same weights, seed
and tiling (key: the file's stem), a path deblurred here equals the pixels the
command writes for a colour file without alpha, in any output format but JPEG:
``deblur(path)`` returns the upright RGB result before encoding, while the
command writes a gray file as gray (luma), keeps alpha, and re-encodes a JPEG
output (quality 95).
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np
import torch

from hidiff.errors import ConfigError, DataError
from hidiff.inference.image_io import quantize, read_photo, to_tensor
from hidiff.inference.noise import image_seed
from hidiff.inference.self_ensemble import self_ensemble as dihedral_mean
from hidiff.inference.tiler import TileOptions, restore_image
from hidiff.runners.default_model import default_model_folder
from hidiff.runners.test_runner import select_device
from hidiff.runners.weights import from_checkpoint, from_experiment, from_release, inference_pipeline

def load(source: Union[str, "os.PathLike[str]", None] = None, *, device: Union[str, torch.device] = "auto",
         timesteps: Optional[int] = None, experiments_root: Union[str, "os.PathLike[str]"] = "experiments"
         ) -> "Restorer":
    """A :class:`Restorer` from a weights folder, a checkpoint file, a run folder or an experiment name.

    * nothing: hidiff's default model (``hidiff/pretrained/default/``, or the folder ``$HIDIFF_DEFAULT_MODEL``);
    * a model folder (``net_<x>.pth`` + ``model.yml``, from ``hidiff-export --format model``);
    * a folder holding ``net_<x>.pth`` files: released HI-Diff weights (GoPro/RealBlur), recognised from
      their tensor shapes (Swintormer weights need a model folder: their shapes are not recognised);
    * a file: a training state (``training_states/N.state``) or one file holding the networks
      (``net_g_*.pth``);
    * a run folder (with ``models/`` or ``training_states/``), or the name of a run in ``experiments_root``:
      its newest complete checkpoint, restored with the settings the run recorded.

    ``device``: 'auto' (CUDA if available), 'cpu', 'cuda' or a torch.device.
    ``timesteps`` overrides the number of diffusion steps.
    """

    if source is None:
        try:
            source = default_model_folder()
        except ConfigError as exc:
            raise ConfigError(f"hidiff.load(): {exc}; here: a model folder or a folder with the released "
                              f"net_<x>.pth files, a checkpoint file, a run folder or the name of a run in "
                              f"experiments/") from None
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"hidiff.load(): expected a path or a run name, got {type(source).__name__} {source!r}")
    path = Path(source).expanduser()
    if path.is_dir() and path.name == "models" and not (path / "net_g.pth").is_file() and \
            any(path.glob("net_g_*.pth")):
        path = path.parent  # a run's models/ folder: the run's newest checkpoint, with its settings
    if path.is_file():
        weights = from_checkpoint(path)
    elif path.is_dir() and any(path.glob("net_*.pth")):
        weights = from_release(path)
    elif path.is_dir() and ((path / "models").is_dir() or (path / "training_states").is_dir()):
        weights = from_experiment(path.parent, path.name)
    elif not path.exists() and (Path(experiments_root) / str(source)).is_dir():
        weights = from_experiment(experiments_root, str(source))
        path = Path(experiments_root) / str(source)
    else:
        found = "a folder without net_*.pth, models/ or training_states/" if path.is_dir() else "nothing there"
        raise ConfigError(f"hidiff.load('{source}'): {found}; expected a folder with released net_<x>.pth files, "
                          f"a checkpoint file, a run folder, or the name of a run in '{experiments_root}'")
    if isinstance(device, str):
        device = select_device(device)
    pipeline, description = inference_pipeline(weights, torch.device(device), timesteps)
    return Restorer(pipeline, weights, description, path)


class Restorer:
    """A loaded model: ``deblur`` images given as tensors, arrays or files."""

    def __init__(self, pipeline, weights, description: str, source: Path) -> None:
        self.pipeline = pipeline
        self.weights = weights
        self.description = description
        self.source = source

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    def to(self, device: Union[str, torch.device]) -> "Restorer":
        """Move the networks to ``device``; returns self."""
        self.pipeline.to(select_device(device) if isinstance(device, str) else torch.device(device))
        return self

    @property
    def sha256(self) -> dict:
        """``{network: sha256 of the file it came from}``."""
        return {f"net_{s}": h for s, h in sorted(self.weights.sha256.items())}

    def __repr__(self) -> str:
        digests = ", ".join(f"{n}={h[:12]}" for n, h in self.sha256.items())
        return f"hidiff.Restorer({self.description}; source '{self.source}'; sha256 {digests}; on {self.device})"

    def deblur(self, image: Any, *, seed: int = 0, key: Optional[str] = None, tile: Any = None,
               self_ensemble: bool = False) -> Any:
        """Deblur ``image`` and return the same kind of thing.

        * a float tensor (C,H,W) or (B,C,H,W) in [0,1] -> a float tensor of that shape, dtype and device;
          each image of a batch is restored as if given alone;
        * an H x W x 3 (or H x W gray, or H x W x 4 RGBA) array, uint8/uint16 or float in [0,1] -> an array
          of that shape and dtype (gray comes back as ITU-R 601 luma, alpha unchanged);
        * a path to an image file -> an upright H x W x 3 RGB array in the file's sample type (uint8/uint16).

        The prior noise comes from ``seed`` and ``key`` (default: the file's stem for a path, '' otherwise),
        as in ``hidiff-deblur --seed``: the same seed gives bitwise the same output.  ``tile``: None
        (automatic, as hidiff-deblur: tiled when large), 'whole', a tile size in pixels or a TileOptions.
        ``self_ensemble``: average the restorations of the 8 flips/rotations of the image (each with the same
        prior seed), as ``hidiff-deblur --self-ensemble`` and ``val.self_ensemble``; 8x the time.
        """
        if not isinstance(self_ensemble, (bool, np.bool_)):
            raise ConfigError(f"deblur(self_ensemble={self_ensemble!r}): expected True or False")
        if self_ensemble and self.pipeline.in_channels != 3:
            raise ConfigError(f"deblur(self_ensemble=True): this model ({self.description}) takes a dual-pixel pair, "
                              f"which the 8 flips and rotations do not keep valid (a mirror swaps which view is "
                              f"left, a quarter turn makes the disparity vertical)")
        def request(default_key: str) -> _Request:
            return _Request(default_key if key is None else key, seed, tile, bool(self_ensemble))

        if isinstance(image, (str, os.PathLike)):
            self._check_rgb_model("an image file")
            photo = read_photo(image)
            out = self._restore(to_tensor(photo.rgb), request(Path(image).stem))
            return _to_samples(out[0].permute(1, 2, 0).numpy(), np.dtype(photo.dtype))
        if isinstance(image, torch.Tensor):
            return self._deblur_tensor(image, request(""))
        if isinstance(image, np.ndarray):
            return self._deblur_array(image, request(""))
        raise DataError(f"deblur(): expected a tensor, a numpy array or a path to an image file, "
                        f"got {type(image).__name__}")

    # ------------------------------------------------------------ helpers
    def _check_rgb_model(self, what: str) -> None:
        """DataError before any work when the model does not take RGB (a dual-pixel model takes 6 channels)."""
        n = self.pipeline.in_channels
        if n != 3:
            raise DataError(f"deblur(): {what} is restored as RGB, but this model ({self.description}) takes "
                            f"{n}-channel input (a dual-pixel pair of views); pass a ({n},H,W) or (B,{n},H,W) tensor")

    def _restore(self, lq: torch.Tensor, how: "_Request") -> torch.Tensor:
        """(B,C,H,W) float32 CPU/any device -> (B,3,H,W) float32 in [0,1], one image at a time."""
        tile = how.tile
        if isinstance(tile, numbers.Integral) and not isinstance(tile, (bool, np.bool_)):
            tile = TileOptions(size=int(tile))
        elif tile is not None and not isinstance(tile, (str, TileOptions)):
            raise ConfigError(f"deblur(tile={tile!r}): expected None (automatic), 'whole', a size or TileOptions")
        if isinstance(tile, TileOptions) and tile.size % self.pipeline.pad_multiple:
            raise ConfigError(f"deblur(tile={tile.size}): must be a multiple of {self.pipeline.pad_multiple} "
                              f"for this model")
        seed_of_image = image_seed(how.key, int(how.seed))
        outs = []
        with torch.inference_mode():
            for b in range(lq.shape[0]):
                def once(x: torch.Tensor) -> torch.Tensor:
                    return restore_image(self.pipeline, x, tile, seed=seed_of_image)
                out = dihedral_mean(once, lq[b:b + 1]) if how.ensemble else once(lq[b:b + 1])
                if not bool(torch.isfinite(out).all()):
                    raise DataError(f"deblur(): the restored image holds NaN/Inf values with the weights "
                                    f"{self.weights.describe()}")
                outs.append(out.clamp_(0.0, 1.0))
        return torch.cat(outs)

    def _deblur_tensor(self, x: torch.Tensor, how: "_Request") -> torch.Tensor:
        if x.numel() == 0:
            raise DataError(f"deblur(): the tensor holds no pixels (shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise DataError(f"deblur(): expected a float tensor in [0,1], got {x.dtype}")
        if x.dim() not in (3, 4) or x.shape[-3] != self.pipeline.in_channels:
            raise DataError(f"deblur(): expected a ({self.pipeline.in_channels},H,W) or "
                            f"(B,{self.pipeline.in_channels},H,W) tensor, got shape {tuple(x.shape)}")
        _check_range(x.detach().float())
        lq = x.detach().float()
        out = self._restore(lq[None] if x.dim() == 3 else lq, how)
        out = out.to(device=x.device, dtype=x.dtype)
        return out[0] if x.dim() == 3 else out

    def _deblur_array(self, a: np.ndarray, how: "_Request") -> np.ndarray:
        self._check_rgb_model("an array")
        if a.size == 0:
            raise DataError(f"deblur(): the array holds no pixels (shape {a.shape})")
        if a.ndim == 3 and a.shape[2] == 1:  # H x W x 1: restored as gray, returned in the same shape
            return self._deblur_array(a[:, :, 0], how)[:, :, None]
        if a.ndim == 3 and a.shape[2] == 4:  # RGBA: the colour is restored, the alpha kept unchanged
            rgb = self._deblur_array(a[:, :, :3], how)
            return np.concatenate([rgb, a[:, :, 3:]], axis=2)
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
            raise DataError(f"deblur(): expected an H x W x 3, H x W x 4 (RGBA) or H x W array, got shape {a.shape}")
        if a.dtype in (np.uint8, np.uint16):
            rgb = a.astype(np.float32) / np.iinfo(a.dtype).max
        elif np.issubdtype(a.dtype, np.floating):
            rgb = a.astype(np.float32)
            _check_range(torch.from_numpy(rgb))
        else:
            raise DataError(f"deblur(): expected uint8, uint16 or float samples, got {a.dtype}")
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        out = self._restore(to_tensor(rgb), how)[0].permute(1, 2, 0).numpy()
        if a.ndim == 2:
            out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2GRAY)
        return _to_samples(out, a.dtype)


@dataclass(frozen=True)
class _Request:
    """How one ``deblur`` call restores: the prior noise's key and seed, the tiling and the self-ensemble."""
    key: str
    seed: int
    tile: Any
    ensemble: bool


def _check_range(x: torch.Tensor) -> None:
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise DataError(f"deblur(): expected values in [0,1], got [{lo:.9g}, {hi:.9g}] (scale 8-bit data by 1/255, "
                        f"or pass the uint8 array itself)")


def _to_samples(rgb: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float pixels in [0,1] as ``dtype`` (integers rounded like hidiff-deblur writes them)."""
    if dtype in (np.uint8, np.uint16):
        return quantize(rgb, dtype)
    return np.ascontiguousarray(rgb).astype(dtype)
