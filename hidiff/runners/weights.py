"""Loading the weights a test run (or deblur command) uses into a stage model's networks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Mapping, Optional

from hidiff.errors import ConfigError

log = logging.getLogger("hidiff")


def load_weights(model, files: Mapping[str, str | Path], *, param_key: str = "params",
                 strict: Optional[Mapping[str, bool]] = None) -> Dict[str, str]:
    """Load ``{suffix: file}`` into ``model``'s networks; returns ``{suffix: sha256}``.

    ``param_key='params_ema'`` takes the EMA weights when the file has them and
    falls back to ``params`` otherwise.
    """
    from hidiff.engine.checkpoint import load_network
    from hidiff.evaluation.report import sha256_file

    nets = model.networks()
    hashes: Dict[str, str] = {}
    for suffix, path in files.items():
        if suffix not in nets:
            raise ConfigError(f"weights for network '{suffix}' given, but the model has only "
                              f"{', '.join(sorted(nets))}")
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"weights file for net_{suffix} not found: {p}")
        load_network(nets[suffix], p, param_key=param_key, strict=(strict or {}).get(suffix, True))
        hashes[suffix] = sha256_file(p)
        log.info("loaded net_%s from %s", suffix, p)
    return hashes


def experiment_weights(experiments_root: str | Path, name: str, suffixes, which="latest") -> Dict[str, Path]:
    """``{suffix: models/net_<x>_<which>.pth}`` of a finished run, or a clear error."""
    from hidiff.models.stage_link import find_model_file
    models = Path(experiments_root) / name / "models"
    if not models.is_dir():
        raise ConfigError(f"experiment '{name}' has no models folder: {models}")
    out = {}
    for s in suffixes:
        f = find_model_file(models, s, which)
        if f is None:
            raise ConfigError(f"experiment '{name}': no net_{s} checkpoint ({which}) in {models}")
        out[s] = f
    return out


def experiment_pipeline(name: str, device, experiments_root: str | Path = "experiments",
                        timesteps: Optional[int] = None):
    """``(RestorationPipeline, description)`` of a finished run, built from its saved ``config.yml``.

    The resolved config carries everything the weights cannot (e.g. the number
    of diffusion steps); runs without one fall back to recognising the networks
    from their state_dict shapes.
    """
    from hidiff.config import load_options
    from hidiff.models import build_model

    run = Path(experiments_root) / name
    config = run / "config.yml"
    if not config.is_file():
        from hidiff.inference.official_weights import load_experiment
        pipeline, rec = load_experiment(name, device, experiments_root=experiments_root, timesteps=timesteps)
        return pipeline, rec.describe()
    overrides = [f"diffusion_schedule.timesteps={int(timesteps)}"] if timesteps else []
    options = load_options(config, overrides, is_train=False)
    model = build_model(options)
    if not hasattr(model, "pipeline"):
        raise ConfigError(f"experiment '{name}' is a {options.model_type} run, which restores with the ground-truth "
                          f"prior; deblur with its stage-2 run instead")
    files = experiment_weights(experiments_root, name, model.save_names)
    hashes = load_weights(model, files, param_key="params_ema" if options.val.use_ema else "params")
    pipeline = model.to(device).eval().pipeline()
    return pipeline, {"experiment": name, "model_type": options.model_type, "config": str(config),
                      "weights_sha256": hashes}
