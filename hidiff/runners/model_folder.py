"""A model folder: a trained model's networks with the options that rebuild them, nothing else needed.

    <folder>/net_g.pth, net_le_dm.pth, net_d.pth   {"params": state_dict}, float32 or float16
    <folder>/model.yml                             the run's network blocks, model_type, diffusion_schedule
    <folder>/MODEL_CARD.md                         optional: data, recipe, figures

It is the authors' release layout plus ``model.yml``, so ``--weights FOLDER`` and ``hidiff.load(FOLDER)``
read it (:func:`hidiff.runners.weights.from_release`) and restore with the recorded options instead of
recognising the architecture from tensor shapes.  ``hidiff-export --format model`` writes one from any
weights source; float16 storage (``--half``) is verified to change no output by more than 1/255.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from hidiff.config.yaml_io import dump_yaml
from hidiff.errors import CheckpointError, ConfigError
from hidiff.runners.weights import MODEL_FILE, Weights, from_release, inference_options, inference_pipeline
from hidiff.utils.hashing import sha256_file

CARD_FILE = "MODEL_CARD.md"
# Largest change of a restored pixel (on [0, 1]) that float16 storage may cause.
HALF_TOLERANCE = 1 / 255
# The verification input: a deterministic image of this size (a multiple of every model's divisor).
CHECK_SIZE = 64


def check_image(seed: int = 0, channels: int = 3) -> torch.Tensor:
    """A smooth, deterministic (1, channels, CHECK_SIZE, CHECK_SIZE) image in [0, 1]: blurred random blobs."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, CHECK_SIZE // 8, CHECK_SIZE // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(CHECK_SIZE, CHECK_SIZE), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


def restore_check(pipeline, seed: int = 0) -> torch.Tensor:
    """The pipeline's output on :func:`check_image` with a fixed initial noise (float32, CPU)."""
    image = check_image(seed, pipeline.in_channels).to(pipeline.device)
    noise = pipeline.noise(1, seed=seed) if pipeline.needs_prior else None
    with torch.inference_mode():
        return pipeline.restore(image, noise=noise).float().cpu()


def write_model_folder(weights: Weights, out: Any, *, half: bool = False, card: Optional[str] = None,
                       device: torch.device = torch.device("cpu")) -> Dict[str, Any]:
    """Write ``weights`` as a model folder at ``out`` (which must not exist); returns a report.

    Needs the run's recorded options (a training state, an experiment or a model folder).  The folder
    is written beside ``out`` under a hidden name, read back, checked against the source on
    :func:`check_image` (exact in float32, within :data:`HALF_TOLERANCE` in float16) and only then
    renamed into place; on any failure nothing is left behind.
    """
    out = Path(out)
    if weights.config is None:
        raise ConfigError(f"{weights.describe()}: these weights record no run options (released weights are "
                          "recognised from their shapes); a model folder needs a training state, an experiment "
                          "or another model folder")
    if out.exists():
        raise ConfigError(f"{out}: already exists; a model folder is written to a new path")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder (the model folder's parent must exist)")
    source, _ = inference_pipeline(weights, device)
    reference = restore_check(source)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        dtype = torch.float16 if half else None
        for suffix, sd in sorted(weights.state_dicts.items()):
            stored = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).clone()
                      for k, v in sd.items()}
            torch.save({"params": stored}, staging / f"net_{suffix}.pth")
        (staging / MODEL_FILE).write_text(dump_yaml(inference_options(weights.config)), encoding="utf-8")
        if card is not None:
            (staging / CARD_FILE).write_text(card, encoding="utf-8")
        written, _ = inference_pipeline(from_release(staging), device)
        diff = float((restore_check(written) - reference).abs().max())
        limit = HALF_TOLERANCE if half else 0.0
        if not diff <= limit:
            raise CheckpointError(f"{out}: the stored {'float16' if half else 'float32'} weights change the "
                                  f"check image's output by {diff:.3g} (allowed {limit:.3g}); nothing was written")
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir())
    return {"folder": str(out), "files": files, "dtype": "float16" if half else "float32",
            "bytes": sum((out / f).stat().st_size for f in files if f.endswith(".pth")),
            "max_abs_diff_vs_source": diff, "source": weights.describe(),
            "sha256": {f: sha256_file(out / f) for f in files if f.endswith(".pth")}}
