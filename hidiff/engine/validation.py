"""Validation during training: restore each val image, score it, gather over ranks.

The images of a val set are sharded over ranks (rank r takes items r, r+w, ...)
and the per-image scores are gathered, so validation gives the same numbers
with or without a process group and for any world size.  An unreadable image
is reported, skipped and counted (``images_skipped``); it never stops training.  Each image's prior
noise is seeded from its key and ``manual_seed`` (the same code path as
``test.py``), so the numbers do not depend on order or sharding either.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import time
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from hidiff.data.image_io import to_uint8, write_png
from hidiff.engine.best import COUNTS, save_best, update_best
from hidiff.engine.distributed import all_gather_objects, get_rank
from hidiff.engine.seeding import capture_rng_state, restore_rng_state
from hidiff.engine.training_state import network_payloads
from hidiff.errors import ConfigError, DataError
from hidiff.inference.noise import image_seed
from hidiff.inference.self_ensemble import self_ensemble
from hidiff.inference.tiler import restore_image
from hidiff.metrics import get_metric
from hidiff.utils.progress import Progress

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def build_metric_fns(metrics: Mapping[str, Any]) -> dict[str, MetricFn]:
    """``val.metrics`` blocks -> functions of two uint8 RGB images."""
    out: dict[str, MetricFn] = {}
    for name, m in metrics.items():
        try:
            fn = get_metric(m.type)
        except Exception as exc:
            raise ConfigError(f"val.metrics.{name}.type: {exc}") from None
        accepted = inspect.signature(fn).parameters
        kwargs: dict[str, Any] = {}
        for opt_key, arg, default in (("crop_border", "crop_border", 0), ("test_y_channel", "y_channel", False)):
            value = getattr(m, opt_key)
            if arg in accepted:
                kwargs[arg] = value
            elif value != default:
                raise ConfigError(f"val.metrics.{name}.{opt_key}: metric '{m.type}' does not support it")
        out[name] = (lambda f, kw: (lambda a, b: float(f(a, b, **kw))))(fn, kwargs)
    return out


def image_restorer(pipeline, tile, ensemble: bool = False
                   ) -> Callable[[torch.Tensor, Optional[torch.Tensor], int], torch.Tensor]:
    """``fn(lq, gt, seed) -> output`` (float32 on lq's device): the restoration path of validation and ``test.py``.

    A pipeline restoring from the blurry image goes through ``restore_image``
    (prior noise from ``seed``, optional tiling; ``gt`` unused); stage 1's pipeline
    (``needs_gt``) restores with the prior of ``gt``, an oracle number
    (docs/quirks.md, quirk 23).  ``ensemble`` (``val.self_ensemble``) averages
    the x8 dihedral transforms; a given ``gt`` is transformed with its input.
    """
    def once(lq: torch.Tensor, gt: Optional[torch.Tensor], seed: int) -> torch.Tensor:
        if pipeline.needs_gt:
            if gt is None:
                raise ValueError("stage 1 restores with the ground-truth prior: gt is required")
            dev = pipeline.device
            return pipeline.restore(lq.to(dev), gt=gt.to(dev)).to(device=lq.device, dtype=torch.float32)
        return restore_image(pipeline, lq, tile or "whole", seed=seed)

    @torch.no_grad()
    def restore(lq: torch.Tensor, gt: Optional[torch.Tensor], seed: int) -> torch.Tensor:
        if not ensemble:
            return once(lq, gt, seed)
        if gt is None:
            return self_ensemble(lambda x: once(x, None, seed), lq)
        c = lq.shape[1]
        return self_ensemble(lambda both: once(both[:, :c], both[:, c:], seed), torch.cat([lq, gt], 1))

    return restore


def validation_restorer(model, manual_seed: int, tile,
                        ensemble: bool = False) -> Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]:
    """``fn(lq, gt, key) -> output``: :func:`image_restorer` of the model's pipeline, seeded per image key
    (``image_seed(key, manual_seed)``, as ``test.py`` seeds it)."""
    restore = image_restorer(model.pipeline(), tile, ensemble)
    return lambda lq, gt, key: restore(lq, gt, image_seed(key, manual_seed))


def _items(loader, skipped: list[str]):
    """The batches of ``loader``; unreadable ones go to ``skipped``."""
    it = iter(loader)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except DataError as exc:
            skipped.append(str(exc))


@torch.no_grad()
def validate(model, val_sets: Mapping[str, Any], *, metric_fns: Mapping[str, MetricFn], manual_seed: int,
             device: torch.device, tile=None,
             on_image: Callable[[str, str, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
             progress: bool = False, ensemble: bool = False) -> dict[str, dict[str, float]]:
    """Mean of every metric per val set: ``{set name: {metric: mean, 'images': n, 'images_skipped': k}}``.

    ``val_sets`` maps a set name to a loader that yields this rank's share
    (batch 1; ``val.max_images`` is applied when the loaders are built).
    ``on_image(set, key, lq, out, gt)`` is called on every image of this rank
    (e.g. to send a few to TensorBoard).  Unreadable images are logged (rank 0)
    and counted, not scored; ``progress`` shows a bar on a terminal.
    The result is the same on every rank.
    """
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, float]] = {}
    try:
        restore = validation_restorer(model, manual_seed, tile, ensemble)
        for set_name, loader in val_sets.items():
            rows, skipped = [], []
            bar = Progress(len(loader), desc=f"validating {set_name}", unit="img", enabled=progress, leave=False,
                           redraw_each=True)
            try:
                for batch in _items(loader, skipped):
                    lq = batch["lq"].to(device)
                    gt = batch["gt"].to(device)
                    key = batch["key"][0] if isinstance(batch["key"], (list, tuple)) else str(batch["key"])
                    out = restore(lq, gt, key)
                    out_u8, gt_u8 = to_uint8(out), to_uint8(gt)
                    rows.append((key, {m: fn(out_u8, gt_u8) for m, fn in metric_fns.items()}))
                    if on_image is not None:
                        on_image(set_name, key, lq, out, gt)
                    bar.update(1)
            finally:
                bar.close()
            merged, unreadable = {}, {}
            for part, bad in all_gather_objects((rows, skipped)):
                for key, vals in part:
                    merged[key] = vals  # a key seen twice (rank padding) counts once
                unreadable.update(dict.fromkeys(bad))
            if get_rank() == 0:
                for msg in unreadable:
                    logging.getLogger("hidiff").warning("validation set %s: unreadable image skipped: %s",
                                                        set_name, msg)
            results[set_name] = {m: float(np.mean([v[m] for v in merged.values()])) if merged else float("nan")
                                 for m in metric_fns}
            results[set_name]["images"] = float(len(merged))
            results[set_name]["images_skipped"] = float(len(unreadable))
    finally:
        model.train(was_training)
    return results


def log_results(log: logging.Logger, results: Mapping[str, Mapping[str, float]],
                best: Mapping[str, Mapping[str, Any]]) -> None:
    """BasicSR-style validation block with the best value so far."""
    for set_name, vals in results.items():
        skipped = int(vals.get("images_skipped", 0))
        log.info("Validation %s (%d images)%s", set_name, int(vals.get("images", 0)),
                 f"; {skipped} unreadable image(s) skipped" if skipped else "")
        for m, v in vals.items():
            if m in ("images", "images_skipped"):
                continue
            b = best.get(f"{set_name}/{m}")
            tail = f"\tBest: {b['value']:.4f} @ {b['iter']} iter" if b else ""
            log.info("\t # %s: %.4f%s", m, v, tail)


#: how many validation images per set go to TensorBoard
TB_IMAGES_PER_SET = 2


def validate_during_training(t, it: int) -> None:
    """Validate trainer ``t`` at iteration ``it`` (EMA weights if ``val.use_ema``): log, TensorBoard, images, best.

    The training random streams are restored afterwards, so validating never
    changes what training does next.
    """
    o = t.opt
    rng = capture_rng_state()
    shown: dict[str, int] = {}

    def on_image(set_name: str, key: str, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor) -> None:
        if t.is_main and shown.get(set_name, 0) < TB_IMAGES_PER_SET:
            shown[set_name] = shown.get(set_name, 0) + 1
            t.tb.image(f"val/{set_name}/{key}", torch.cat([lq[0, :3], out[0], gt[0]], dim=-1), it)
        if o.val.save_img:  # BasicSR: visualization/<set>/<image>_<iter>.png; each rank writes its share
            name = f"{key.replace('/', '_').replace(chr(92), '_')}_{it}.png"
            write_png(t.exp_dir / "visualization" / set_name / name, to_uint8(out))

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if o.val.use_ema:
            for n, e in t.ema.items():
                stack.enter_context(e.applied_to(t.model.trainable[n]))
        results = validate(t.model, t.val_sets, metric_fns=t.metric_fns, manual_seed=o.manual_seed,
                           device=t.device, tile=o.val.tile_options(),
                           on_image=on_image, progress=o.val.pbar and t.is_main, ensemble=o.val.self_ensemble)
    restore_rng_state(rng)
    t.last_validation = results
    improved = update_best(t.best, results, it, o.val)
    if t.is_main:
        log_results(t.log, results, t.best)
        t.log.info("validation took %.1f s%s", time.perf_counter() - t0,
                   " (EMA weights)" if t.ema and o.val.use_ema else "")
        for set_name, vals in results.items():
            t.tb.scalars({m: v for m, v in vals.items() if m not in COUNTS}, it, prefix=f"metrics/{set_name}/")
    if improved and o.logger.keep_best:
        save_best(t.store, lambda: network_payloads(t), t.best, it, o.val, next(iter(t.val_sets)), t.is_main, t.log)
