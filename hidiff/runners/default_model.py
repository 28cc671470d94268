"""The model hidiff ships (``hidiff/pretrained/default/``): what ``hidiff-deblur`` and ``hidiff.load()`` use
when no weights are named.

``HIDIFF_DEFAULT_MODEL=<model folder>`` replaces it (a site's own default, or a test's).  The folder is a
model folder (:mod:`hidiff.runners.model_folder`); its ``MODEL_CARD.md`` says how it was trained.
"""
from __future__ import annotations

import os
from pathlib import Path

from hidiff.errors import ConfigError

PACKAGED = Path(__file__).resolve().parents[1] / "pretrained" / "default"
ENV = "HIDIFF_DEFAULT_MODEL"


def ships_default_model() -> bool:
    """Whether this copy of hidiff holds the packaged default model (``hidiff/pretrained/default/``)."""
    return (PACKAGED / "net_g.pth").is_file()


def default_model_folder() -> Path:
    """The default model's folder, or a ConfigError that says what to pass instead."""
    chosen = os.environ.get(ENV)
    if chosen:
        folder = Path(chosen).expanduser()
        if not (folder / "net_g.pth").is_file():
            raise ConfigError(f"{ENV}={chosen}: expected a model folder holding net_g.pth (and model.yml)")
        return folder
    if ships_default_model():
        return PACKAGED
    raise ConfigError("no default model ships with this copy of hidiff (hidiff/pretrained/default/ is empty); "
                      "name the weights to use: --weights DIR (released net_<x>.pth files or a model folder), "
                      "--checkpoint FILE or --experiment NAME")
