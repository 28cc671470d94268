"""Tiled vs whole-image inference: peak memory, time, and seam quality (prints figures).

    python benchmarks/tiling.py                         # GoPro-size HI-Diff, random weights (labelled)
    python benchmarks/tiling.py --weights DIR           # the same with trained / released weights
    python benchmarks/tiling.py --experiment NAME --timesteps 4 --skip-4k   # a training run's weights
    python benchmarks/tiling.py --skip-4k               # only the 1280x720 cases
    python benchmarks/tiling.py --quick                 # tiny network, small sizes: checks the script

Every case runs in its own subprocess, so its peak RSS (``ru_maxrss`` of that
process) is the memory the case needs, model weights included:

* 1280x720 whole image, and tiled (256 px, overlap 32, Hann);
* 3840x2160 tiled (slow on CPU: about 170 tiles of ~9 s each);
* PSNR between tiled and whole-image outputs for each blend mode, on real
  photos upscaled/cropped to the case size.  The three blends share one grid, so
  the network runs once per tile and the outputs are re-blended.

Targets: the 4K image under 3 GiB peak RSS on CPU; Hann with overlap >= 32 px
within 40 dB PSNR of the whole-image result or better.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hidiff.metrics.psnr import psnr_float

ROOT = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = ROOT.parent / "shared" / "photos" / "test"
BLENDS = ("hann", "linear", "mean")
PRIORS = ("per_tile", "global", "whole")
TINY = {
    "net_g": dict(type="Transformer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                  heads=[1, 1, 1, 1], embed_dim=16),
    "net_le_dm": dict(type="latent_encoder_gelu", in_chans=3, stage=2, embed_dim=16, block_num=1),
    "net_d": dict(type="denoising", in_channel=64, out_channel=64, inner_channel=32, block_num=3),
}


def photo_paths() -> list[Path]:
    """Real photos: the shared test photos when present, else those inside scikit-image's wheel."""
    if SHARED_PHOTOS.is_dir():
        return [SHARED_PHOTOS / n for n in ("face.png", "kodim23.png")]
    import skimage
    data = Path(skimage.__file__).parent / "data"
    return [data / "astronaut.png", data / "coffee.png"]


def load_frame(path: Path, width: int, height: int) -> np.ndarray:
    """A real photo resized to cover width x height (aspect kept) and centre-cropped: float32 RGB."""
    import cv2
    from hidiff.inference.image_io import read_photo
    rgb = read_photo(path).rgb
    scale = max(width / rgb.shape[1], height / rgb.shape[0])
    size = (max(width, round(rgb.shape[1] * scale)), max(height, round(rgb.shape[0] * scale)))
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    y0, x0 = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return np.clip(big[y0:y0 + height, x0:x0 + width], 0, 1).astype(np.float32)


def build(args):
    """(pipeline, label): given weights, or GoPro-size (or tiny) networks with random weights."""
    import torch
    from hidiff.archs import build_network
    from hidiff.inference.official_weights import OFFICIAL_VARIANTS, build_pipeline, load_checkpoint, load_official
    if args.weights:
        p, rec = load_official(args.weights, timesteps=args.timesteps)
        return p, f"{rec.variant} weights from {args.weights}"
    if args.checkpoint:
        p, rec = load_checkpoint(args.checkpoint, timesteps=args.timesteps)
        return p, f"{rec.variant} weights from {args.checkpoint}"
    if args.experiment:
        from hidiff.runners.weights import experiment_pipeline
        p, desc = experiment_pipeline(args.experiment, "cpu", experiments_root=args.experiments_root,
                                      timesteps=args.timesteps)
        return p, f"{desc['description']}; trained weights of experiment {args.experiment}"
    torch.manual_seed(0)
    spec = TINY if args.quick else {k: v for k, v in OFFICIAL_VARIANTS["HI-Diff GoPro"].items() if k != "diffusion"}
    p, rec = build_pipeline({k: build_network(v).state_dict() for k, v in spec.items()})
    return p, ("tiny test network" if args.quick else "HI-Diff GoPro architecture") + ", RANDOM WEIGHTS"


class ReplayPipeline:
    """Forwards to a pipeline and memoises restore() per input tile and noise (for re-blending)."""

    def __init__(self, pipeline) -> None:
        self._p = pipeline
        self.cache: dict[str, object] = {}

    def __getattr__(self, name):
        return getattr(self._p, name)

    def restore(self, lq, **kw):
        h = hashlib.sha1(lq.numpy().tobytes())
        for k in sorted(kw):
            if kw[k] is not None:
                h.update(kw[k].numpy().tobytes())
        key = h.hexdigest()
        if key not in self.cache:
            self.cache[key] = self._p.restore(lq, **kw)
        return self.cache[key]


# ------------------------------------------------------------------ child
def tiled_with_whole_image_prior(pipeline, lq, opts):
    """Diagnostic: every tile gets the prior of the whole image (as in the whole-image run).

    Isolates what tiling does to the U-Net from what it does to the prior.
    """
    from hidiff.utils.padding import pad_to_multiple
    from hidiff.inference.noise import tile_seed
    from hidiff.inference.tiler import run_tiles

    noise = pipeline.noise(1, seed=tile_seed(0, 0, 0, 0))  # restore_image's whole-image noise
    prior = pipeline.prior(pad_to_multiple(lq, pipeline.pad_multiple)[0], noise)
    return run_tiles(lambda tiles, idx, prior: pipeline.restore(tiles, prior=prior), lq, opts,
                     global_prior=prior, multiple=pipeline.pad_multiple)


def child(args) -> None:
    """Run one case in this process; print one JSON line; save outputs as .npy if asked."""
    import torch
    from hidiff.inference.image_io import to_tensor
    from hidiff.inference.tiler import WHOLE_IMAGE, TileOptions, restore_image

    torch.set_grad_enabled(False)
    pipeline, label = build(args)
    width, height = args.size
    lq = to_tensor(load_frame(Path(args.photo), width, height))
    blends = BLENDS if args.all_blends else (args.blend,)
    runner = ReplayPipeline(pipeline) if len(blends) > 1 else pipeline
    outputs, seconds = {}, None
    for blend in blends:
        t0 = time.perf_counter()
        if args.case == "whole":
            out = restore_image(runner, lq, WHOLE_IMAGE, seed=0)
        elif args.prior == "whole":
            out = tiled_with_whole_image_prior(runner, lq, TileOptions(size=args.tile, overlap=args.overlap,
                                                                       blend=blend))
        else:
            out = restore_image(runner, lq, TileOptions(size=args.tile, overlap=args.overlap, blend=blend,
                                                        prior=args.prior), seed=0)
        if seconds is None:
            seconds = time.perf_counter() - t0  # the first pass runs the network on every tile
        outputs[blend if args.case != "whole" else "whole"] = out
        if args.case == "whole":
            break
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if args.save:
        for name, out in outputs.items():
            np.save(Path(args.save) / f"{name}.npy", out[0].numpy())
    print(json.dumps({"case": args.case if args.case == "whole" else f"tiled/{args.prior}", "size": f"{width}x{height}", "seconds": round(seconds, 1),
                      "peak_rss_mb": round(peak_mb), "model": label, "photo": Path(args.photo).name,
                      "torch_threads": torch.get_num_threads()}))


# ----------------------------------------------------------------- parent
def run_case(args, case: str, size: tuple[int, int], photo: Path, save: Path | None = None,
             all_blends: bool = False, prior: str = "per_tile") -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--size", f"{size[0]}x{size[1]}", "--photo", str(photo),
           "--tile", str(args.tile), "--overlap", str(args.overlap), "--prior", prior]
    for flag in ("weights", "checkpoint", "experiment", "experiments_root", "timesteps"):
        if getattr(args, flag):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.quick:
        cmd.append("--quick")
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        cmd += ["--save", str(save)]
    if all_blends:
        cmd.append("--all-blends")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"case {case} {size} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {out['case']:>16} {out['size']:>10}  {out['seconds']:>8.1f} s  peak RSS {out['peak_rss_mb']:>6} MB  "
          f"({out['photo']})", flush=True)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two float outputs, clipped to the [0, 1] an image can show."""
    return psnr_float(np.clip(a, 0, 1), np.clip(b, 0, 1))


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--weights", help="released weights folder (net_g.pth, net_le_dm.pth, net_d.pth)")
    src.add_argument("--checkpoint", help="one file holding the networks")
    src.add_argument("--experiment", help="a training run: experiments/NAME/models/net_*_latest.pth")
    ap.add_argument("--experiments-root", default=str(ROOT / "experiments"))
    ap.add_argument("--timesteps", type=int, help="diffusion steps (default: the official value)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--skip-4k", action="store_true", help="leave out the slow 3840x2160 case")
    ap.add_argument("--quick", action="store_true", help="tiny network and small sizes (script check)")
    ap.add_argument("--workdir", default=str(ROOT / "benchmarks" / "out"), help="where outputs are kept")
    # child mode
    ap.add_argument("--child", choices=["whole", "tiled"], help=argparse.SUPPRESS)
    ap.add_argument("--size", type=parse_size, help=argparse.SUPPRESS)
    ap.add_argument("--photo", help=argparse.SUPPRESS)
    ap.add_argument("--blend", default="hann", help=argparse.SUPPRESS)
    ap.add_argument("--prior", default="per_tile", choices=["per_tile", "global", "whole"], help=argparse.SUPPRESS)
    ap.add_argument("--all-blends", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.case = args.child
        child(args)
        return 0

    if args.quick:
        args.tile, args.overlap = 64, 16
    frame = (320, 180) if args.quick else (1280, 720)
    uhd = (960, 540) if args.quick else (3840, 2160)
    photos = photo_paths()
    work = Path(args.workdir)
    print(f"tiling benchmark: tile {args.tile}, overlap {args.overlap}; one subprocess per case")
    print(f"memory and time ({frame[0]}x{frame[1]} frame from {photos[0].name}):")
    whole = run_case(args, "whole", frame, photos[0], save=work / "frame_whole")
    print(f"  model: {whole['model']}; torch threads: {whole['torch_threads']}")
    for prior in PRIORS:
        run_case(args, "tiled", frame, photos[0], save=work / f"frame_tiled_{prior}", all_blends=True, prior=prior)
    print(f"PSNR of tiled vs whole-image output (dB; tile {args.tile}, overlap {args.overlap}); prior per tile, "
          f"from the downscaled image (global), or the whole image's own prior (diagnostic):")
    table = {}
    ref = np.load(work / "frame_whole" / "whole.npy")
    for prior in PRIORS:
        table[(photos[0].name, prior)] = {b: psnr(np.load(work / f"frame_tiled_{prior}" / f"{b}.npy"), ref)
                                          for b in BLENDS}
    for photo in photos[1:]:
        from hidiff.inference.image_io import read_photo
        h, w = read_photo(photo).size
        size = (w // 8 * 8, h // 8 * 8) if not args.quick else (200, 136)
        run_case(args, "whole", size, photo, save=work / f"{photo.stem}_whole")
        ref2 = np.load(work / f"{photo.stem}_whole" / "whole.npy")
        for prior in PRIORS:
            run_case(args, "tiled", size, photo, save=work / f"{photo.stem}_tiled_{prior}", all_blends=True,
                     prior=prior)
            table[(photo.name, prior)] = {b: psnr(np.load(work / f"{photo.stem}_tiled_{prior}" / f"{b}.npy"), ref2)
                                          for b in BLENDS}
    for (name, prior), vals in table.items():
        print(f"  {name:>16} {prior:>9}: " + "  ".join(f"{b} {v:6.2f}" for b, v in vals.items()))
    if not args.skip_4k:
        print(f"{uhd[0]}x{uhd[1]} tiled:")
        big = run_case(args, "tiled", uhd, photos[0])
        verdict = "meets" if big["peak_rss_mb"] < 3 * 1024 else "MISSES"
        print(f"  peak RSS {big['peak_rss_mb']} MB {verdict} the 3 GiB target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
