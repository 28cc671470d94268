"""Does a trained HI-Diff model use its prior?  Swap the prior and see what the output does.

    python benchmarks/prior_use.py --run experiments/default_stage1 [--iter 3000]
    python benchmarks/prior_use.py --run experiments/default_stage2

On the run's own validation set (``datasets.val`` of its ``config.yml``; no
test data) every image is restored with its own prior and with priors that
should not fit it:

* stage 1 (the prior is encoded from the blurry and the *sharp* image): its
  own sharp image (the oracle the run validates with), the blurry image in the
  sharp one's place, and the pair of the next validation image;
* stage 2 (the prior is sampled by the latent DDPM from the blurry image):
  its own prior, the prior of the next validation image, and its own prior
  from another initial noise x_T.

For each, the mean PSNR (uint8, as ``psnr_uint8``), how far the restored
pixels move from the own-prior output (mean and largest change, in 8-bit
levels) and how far the prior itself moves (relative L2).  A model whose output
hardly moves when its prior is replaced restores from the blurry image alone,
whatever its architecture says; that is what the no-prior ablation
(options/default_plain.yml) then cannot tell apart.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a HI-Diff stage-1 or stage-2 run folder")
    ap.add_argument("--iter", default="latest", help="checkpoint iteration (default: the newest complete one)")
    ap.add_argument("--images", type=int, default=8, help="validation images used (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="x_T seed of stage-2 priors (another is seed + 1)")
    return ap


def load_run(run: Path, which: str):
    """(typed options from config.yml, Weights of the chosen checkpoint) of a run folder."""
    from hidiff.config import load_options
    from hidiff.engine.checkpoint_store import latest_complete
    from hidiff.errors import ConfigError
    from hidiff.runners.weights import from_checkpoint

    config = run / "config.yml"
    if not config.is_file():
        raise ConfigError(f"--run {run}: no config.yml (not a hidiff run folder)")
    options = load_options(config, is_train=True)
    if options.model_type not in ("HI_Diff_S1", "HI_Diff_S2"):
        raise ConfigError(f"--run {run}: a {options.model_type} run has no prior to swap (HI_Diff_S1/S2 only)")
    if "val" not in options.datasets:
        raise ConfigError(f"--run {run}: its options have no datasets.val block to measure on")
    unit = latest_complete(run, which)
    if unit is None or unit.state is None:
        raise ConfigError(f"--run {run}: no complete checkpoint '{which}' with a training state")
    return options, from_checkpoint(unit.state), unit.iteration  # EMA weights where the run kept them


def measure(model, pairs: Sequence[Dict], seed: int) -> Dict[str, Dict[str, float]]:
    """Per prior variant: mean PSNR, mean/max |output - own-prior output| (8-bit levels), relative prior change."""
    import numpy as np
    import torch

    from hidiff.data.image_io import to_uint8 as uint8
    from hidiff.metrics.psnr import psnr_uint8
    from hidiff.utils.padding import crop, pad_to_multiple

    pipe = model.pipeline()
    stage1 = pipe.needs_gt
    m = pipe.pad_multiple
    padded = [(pad_to_multiple(p["lq"][None], m), pad_to_multiple(p["gt"][None], m)[0]) for p in pairs]
    n = len(pairs)

    def prior_of(i: int, variant: str) -> torch.Tensor:
        (lq, _), gt = padded[i]
        if stage1:
            encode = model.networks()["le"]
            if variant == "own":
                return encode(lq, gt)
            if variant == "blurry as sharp":
                return encode(lq, lq)
            (lq_j, _), gt_j = padded[(i + 1) % n]
            return encode(lq_j, gt_j)
        if variant == "own":
            return pipe.prior(lq, pipe.noise(1, seed=seed))
        if variant == "other x_T":
            return pipe.prior(lq, pipe.noise(1, seed=seed + 1))
        lq_j, _ = padded[(i + 1) % n][0]
        return pipe.prior(lq_j, pipe.noise(1, seed=seed))

    variants = ["own", "blurry as sharp", "next image's pair"] if stage1 else \
        ["own", "next image's prior", "other x_T"]
    rows: Dict[str, Dict[str, List[float]]] = {v: {"psnr": [], "mean": [], "max": [], "prior": []} for v in variants}
    with torch.no_grad():
        for i, p in enumerate(pairs):
            (lq, size), _ = padded[i]
            own_z = prior_of(i, "own")
            gt = uint8(p["gt"][None])
            own = None
            for v in variants:  # "own" first: the reference of the others
                z = own_z if v == "own" else prior_of(i, v)
                if z.shape != own_z.shape:
                    raise ValueError(f"validation images differ in size; '{v}' needs equal sizes")
                out = uint8(crop(model.networks()["g"](lq, z), size))
                own = out.astype(np.int16) if own is None else own
                diff = np.abs(out.astype(np.int16) - own)
                rows[v]["psnr"].append(psnr_uint8(out, gt))
                rows[v]["mean"].append(float(diff.mean()))
                rows[v]["max"].append(float(diff.max()))
                rows[v]["prior"].append(float((z - own_z).norm() / own_z.norm().clamp_min(1e-12)))
    return {v: {"psnr": float(np.mean(r["psnr"])), "mean_levels": float(np.mean(r["mean"])),
                "max_levels": float(np.max(r["max"])), "prior_rel_change": float(np.mean(r["prior"]))}
            for v, r in rows.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from hidiff.data.build import build_dataset
    from hidiff.data.image_io import to_uint8 as uint8
    from hidiff.errors import HidiffError
    from hidiff.metrics.psnr import psnr_uint8
    from hidiff.models import build_model
    from hidiff.runners.weights import load_into

    log: Callable[[str], None] = lambda m: print(m, flush=True)
    try:
        if args.images < 2:
            raise HidiffError(f"--images {args.images}: at least 2 are needed (a prior is swapped between images)")
        options, weights, iteration = load_run(args.run, args.iter)
        model = build_model(options)
        load_into(model, weights)
        for net in model.networks().values():
            net.eval()
        data = build_dataset(options.datasets["val"], options.manual_seed)
        pairs = [data[i] for i in range(min(args.images, len(data)))]
        if len(pairs) < 2:
            raise HidiffError(f"--run {args.run}: its validation set holds {len(pairs)} image(s); 2 are needed")
        torch.manual_seed(0)
        results = measure(model, pairs, args.seed)
    except (HidiffError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    blurry = sum(psnr_uint8(uint8(p["lq"][None]), uint8(p["gt"][None])) for p in pairs) / len(pairs)
    log(f"{args.run} ({options.model_type}), iteration {iteration}: {len(pairs)} validation images of "
        f"'{options.datasets['val'].name}'; blurry input {blurry:.2f} dB")
    log("| prior | PSNR (dB) | output change, mean levels | largest change, levels | prior change (rel. L2) |")
    log("|---|---:|---:|---:|---:|")
    for v, r in results.items():
        log(f"| {v} | {r['psnr']:.2f} | {r['mean_levels']:.3f} | {r['max_levels']:.0f} | "
            f"{r['prior_rel_change']:.3f} |")
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    sys.exit(main())
