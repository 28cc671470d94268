"""``scripts/test.py``: restore every test set of an option file, save outputs, score, report.

Each image's prior noise is seeded from its file stem and ``manual_seed``
(docs/quirks.md, quirk 13, fixed), so outputs do not depend on processing order or device.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from hidiff.data.build import build_dataset
from hidiff.data.image_io import write_png
from hidiff.errors import ConfigError
from hidiff.inference.pipeline import seed_from_key

log = logging.getLogger("hidiff")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) or (3,H,W) float [0,1] -> HxWx3 uint8 RGB (clamp, x255, round), as BasicSR's tensor2img."""
    if img.dim() == 4:
        img = img[0]
    arr = img.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def to_uint16(img: torch.Tensor) -> np.ndarray:
    """Like ``to_uint8`` with 16-bit precision (DPDD is scored on 16-bit images, as Restormer does)."""
    if img.dim() == 4:
        img = img[0]
    arr = img.detach().double().clamp(0, 1).mul(65535.0).round().cpu().numpy().astype(np.uint16)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


def run_test(options, *, device: str = "auto", experiment: Optional[str] = None,
             limit: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    """Run every ``test*``/``val*`` set of ``options``; returns ``{set name: summary}``."""
    from hidiff.evaluation.protocols import default_protocol_for, get_protocol
    from hidiff.evaluation.report import write_comparison_grid, write_set_report, write_summary_table
    from hidiff.inference.self_ensemble import self_ensemble
    from hidiff.inference.tiler import restore_image
    from hidiff.models import build_model
    from hidiff.runners.weights import experiment_weights, load_weights

    dev = select_device(device)
    torch.manual_seed(options.manual_seed)
    model = build_model(options)
    suffixes = list(model.save_names)
    param_key = "params_ema" if options.val.use_ema else "params"
    base_files: Dict[str, Any] = {}
    if experiment is not None:
        base_files.update(experiment_weights(options.path.experiments_root, experiment, suffixes))
    base_files.update({k: v for k, v in options.path.pretrain.items() if v and k in suffixes})
    tile = options.val.tile_options()
    results_root = Path(options.path.results_root) / options.name
    sets = [(k, d) for k, d in sorted(options.datasets.items()) if d.phase in ("test", "val")]
    if not sets:
        raise ConfigError(f"{options.source}: no test_<n> dataset block to run")
    summaries: Dict[str, Dict[str, Any]] = {}
    loaded: Optional[Dict[str, Any]] = None  # the weight files now in the model (sets often share them)
    for key, ds_opts in sets:
        files = dict(base_files)
        files.update(ds_opts.weights or {})
        missing = [s for s in suffixes if s not in files]
        if missing:
            raise ConfigError(f"datasets.{key}: no weights for {', '.join('net_' + m for m in missing)}; set "
                              f"path.pretrain_network_<x>, datasets.{key}.weights or --experiment")
        if files != loaded:
            hashes = load_weights(model, files, param_key=param_key, strict=options.path.strict_load)
            loaded = files
            model.to(dev).eval()
            pipeline = model.pipeline()
        dataset = build_dataset(ds_opts, options.manual_seed)
        protocol = get_protocol(ds_opts.protocol or default_protocol_for(ds_opts.name))
        vis_dir = results_root / "visualization" / ds_opts.name
        rows: List[Dict[str, Any]] = []
        n = len(dataset) if limit is None else min(limit, len(dataset))
        t0 = time.perf_counter()
        grid_done = False
        for i in range(n):
            item = dataset[i]
            lq = item["lq"].unsqueeze(0)
            seed = seed_from_key(item["key"], options.manual_seed)
            with torch.inference_mode():
                if options.val.self_ensemble:
                    out = self_ensemble(lambda x: restore_image(pipeline, x, tile or "whole", seed=seed), lq)
                else:
                    out = restore_image(pipeline, lq, tile or "whole", seed=seed)
            quantise = to_uint16 if protocol.name == "dpdd" else to_uint8
            out_q, gt_q = quantise(out), quantise(item["gt"])
            out_u8 = to_uint8(out)
            suffix = f"_{options.val.suffix}" if options.val.suffix else ""
            if options.val.save_img:
                write_png(vis_dir / f"{item['key']}{suffix}.png", out_q)
            row: Dict[str, Any] = {"name": item["key"], **protocol.score_pair(out_q, gt_q)}
            if options.val.score_input:
                lq_q = quantise(item["lq"][:3])
                row.update({f"input_{k}": v for k, v in protocol.score_pair(lq_q, gt_q).items()})
            rows.append(row)
            if options.val.comparison_grid and not grid_done:
                write_comparison_grid(results_root / ds_opts.name / f"comparison_{item['key']}.png",
                                      to_uint8(item["lq"][:3]), out_u8, to_uint8(item["gt"]))
                grid_done = True
            log.info("%s %d/%d %s %s", ds_opts.name, i + 1, n, item["key"],
                     " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
        meta = {
            "set": ds_opts.name, "model": options.name, "model_type": options.model_type,
            "protocol": protocol.name, "seed": options.manual_seed, "seeding": "per image: sha256(seed, stem)",
            "padding": f"mirror to multiple of {options.val.window_size}",
            "tiling": tile.describe() if tile is not None else "whole image",
            "self_ensemble": options.val.self_ensemble, "weights_sha256": hashes,
            "param_key": param_key, "device": str(dev), "images": n,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        summaries[ds_opts.name] = write_set_report(results_root / ds_opts.name, rows, meta)
    write_summary_table(results_root / "summary.md", list(summaries.values()))
    return summaries
