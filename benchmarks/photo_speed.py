"""Time ``hidiff-deblur`` on a 12-megapixel photo: the default model measured, the GoPro model beside it.

    python benchmarks/photo_speed.py [--photo FILE] [--size 3000x4000] [--threads 2] [--tile-workers N]
                                     [--model FOLDER]

Each model deblurs the photo through the real command (``python -m hidiff.cli.deblur``, a fresh
process, ``--device cpu``, the automatic tiling: 256-px tiles with 32-px overlap on a CPU), and the
benchmark prints its wall time, including start-up, model load, JPEG decoding and writing, and the
process's peak resident memory (``wait4``'s ``ru_maxrss``).

* Default model: ``--model FOLDER``, else hidiff's default model if this copy ships one, else (or with
  ``--random-weights``) the architecture of ``--opt`` (options/default_stage2.yml) with random weights: speed does not depend on the
  values, and the report says which was used.
* GoPro model (official size, random weights): ``--gopro estimate`` (default) times the command on a crop
  of ``--gopro-crop`` pixels with forced 256-px tiles and on an 8x8 image (start-up and model load), and
  scales the difference by the photo's tile count; ``--gopro full`` runs the whole photo (about half an hour
  on 2 cores); ``--gopro skip``.

The photo: ``--photo FILE`` resized to ``--size``, else scikit-image's astronaut resized to it; saved as a
quality-95 JPEG in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tile_estimate import parse_hw  # noqa: E402  (this folder is on sys.path when the script runs)


def make_photo(src: Optional[Path], hw: tuple[int, int], dst: Path) -> Path:
    """``src`` (or scikit-image's astronaut) resized to ``hw`` and saved as a JPEG at ``dst``."""
    import cv2
    import numpy as np

    if src is None:
        from skimage import data
        rgb = data.astronaut()
    else:
        bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"error: --photo {src}: not a readable image")
        rgb = bgr[..., ::-1]
    big = cv2.resize(np.ascontiguousarray(rgb), (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(dst), big[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return dst


def random_model_folder(opt: Path, dst: Path, seed: int = 0) -> Path:
    """A model folder with the networks of option file ``opt`` at their initial (random) weights."""
    import torch

    from hidiff.config import Options
    from hidiff.config.yaml_io import dump_yaml, load_yaml
    from hidiff.models import build_model
    from hidiff.runners.weights import MODEL_FILE, inference_options

    raw = load_yaml(opt)
    torch.manual_seed(seed)
    options = Options.from_yaml({k: v for k, v in raw.items() if k not in ("datasets", "train", "path")},
                                is_train=False, source=str(opt))
    model = build_model(options)
    dst.mkdir(parents=True)
    for suffix, net in model.networks().items():
        if suffix in model.save_names:
            torch.save({"params": net.state_dict()}, dst / f"net_{suffix}.pth")
    (dst / MODEL_FILE).write_text(dump_yaml(inference_options(options.to_dict())), encoding="utf-8")
    return dst


def gopro_release(dst: Path, seed: int = 0) -> Path:
    """The official GoPro networks (options/test_gopro.yml) at random weights, in the release layout."""
    import torch

    from hidiff.config import Options
    from hidiff.config.yaml_io import load_yaml
    from hidiff.models import build_model

    raw = load_yaml(REPO / "options" / "test_gopro.yml")
    torch.manual_seed(seed)
    options = Options.from_yaml({k: v for k, v in raw.items() if k not in ("datasets", "path")}, is_train=False,
                                source="options/test_gopro.yml")
    model = build_model(options)
    dst.mkdir(parents=True)
    for suffix in model.save_names:
        torch.save({"params": model.networks()[suffix].state_dict()}, dst / f"net_{suffix}.pth")
    return dst


def deblur(photo: Path, weights: Path, out: Path, threads: int, extra: Sequence[str] = ()) -> dict:
    """Run the command once; its wall time (s) and peak RSS (GiB)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "hidiff.cli.deblur", str(photo), "-o", str(out), "--weights", str(weights),
           "--device", "cpu", "--quiet", "--overwrite", *extra]
    # stderr goes to a file, not a pipe: wait4 reads nothing while the child runs, and a full pipe would block it
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read()
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited with {proc.returncode}:\n{err.strip()[-2000:]}")
    return {"wall_s": wall, "peak_rss_gib": usage.ru_maxrss * 1024 / 2 ** 30}


def tiles_of(h: int, w: int, size: Optional[int] = None) -> int:
    from hidiff.inference.tiler import TileGrid, TileOptions, auto_tile_options

    opts = TileOptions(size=size, overlap=32, blend="hann") if size else auto_tile_options(h, w, "cpu")
    return 1 if opts is None else len(TileGrid.build(h, w, opts))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, default=None, help="a photo to resize (default: scikit-image's astronaut)")
    ap.add_argument("--size", type=parse_hw, default=(3000, 4000), help="photo size HxW (default 3000x4000)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the command (default 2)")
    ap.add_argument("--tile-workers", type=int, default=None,
                    help="hidiff-deblur --tile-workers (default: the command's, one tile per torch thread)")
    ap.add_argument("--model", type=Path, default=None, help="a model folder (default: the shipped default model)")
    ap.add_argument("--random-weights", action="store_true",
                    help="time the --opt architecture at random weights even where a default model ships")
    ap.add_argument("--opt", type=Path, default=REPO / "options" / "default_stage2.yml",
                    help="without a model folder: this architecture at random weights")
    ap.add_argument("--gopro", choices=["estimate", "full", "skip"], default="estimate")
    ap.add_argument("--gopro-crop", type=parse_hw, default=(480, 704), help="crop timed for the estimate")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.tile_workers is not None and args.tile_workers < 0:
        ap.error("--tile-workers must be >= 0")
    workers = [] if args.tile_workers is None else ["--tile-workers", str(args.tile_workers)]
    from hidiff.errors import ConfigError
    from hidiff.profiling.machine import describe_machine, machine_line
    from hidiff.runners.default_model import default_model_folder

    h, w = args.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo = make_photo(args.photo, args.size, tmp / "photo.jpg")
        if args.model is not None:
            folder, which = args.model, f"model folder {args.model}"
        elif args.random_weights:
            folder = random_model_folder(args.opt, tmp / "default_random")
            which = f"{args.opt.name} architecture, random weights"
        else:
            try:
                folder = default_model_folder()
                which = f"hidiff's default model ({folder})"
            except ConfigError:
                folder = random_model_folder(args.opt, tmp / "default_random")
                which = f"{args.opt.name} architecture, random weights (no default model ships)"
        r = deblur(photo, folder, tmp / "out_default", args.threads, workers)
        rows.append({"model": "default", "weights": which, "measured": "whole photo", "tiles": tiles_of(h, w), **r})
        if args.gopro != "skip":
            gopro = gopro_release(tmp / "gopro")
            if args.gopro == "full":
                r = deblur(photo, gopro, tmp / "out_gopro", args.threads, workers)
                rows.append({"model": "GoPro (official size)", "weights": "random", "measured": "whole photo",
                             "tiles": tiles_of(h, w), **r})
            else:
                import cv2
                ch, cw = args.gopro_crop
                img = cv2.imread(str(photo))
                cv2.imwrite(str(tmp / "crop.png"), img[:ch, :cw])
                cv2.imwrite(str(tmp / "tiny.png"), img[:8, :8])
                crop = deblur(tmp / "crop.png", gopro, tmp / "out_crop", args.threads, ["--tile", "256", *workers])
                base = deblur(tmp / "tiny.png", gopro, tmp / "out_tiny", args.threads, workers)
                per_tile = max(crop["wall_s"] - base["wall_s"], 0.0) / tiles_of(ch, cw, 256)
                n = tiles_of(h, w)
                rows.append({"model": "GoPro (official size)", "weights": "random",
                             "measured": f"estimate: {ch}x{cw} crop ({tiles_of(ch, cw, 256)} tiles) minus start-up",
                             "tiles": n, "wall_s": base["wall_s"] + n * per_tile, "peak_rss_gib": crop["peak_rss_gib"]})
    machine = machine_line(describe_machine("cpu"))
    tiles_at_once = "default" if args.tile_workers is None else args.tile_workers
    print(f"hidiff-deblur on a {h}x{w} photo ({h * w / 1e6:.1f} MP), {args.threads} thread(s), --tile-workers "
          f"{tiles_at_once}; {machine}")
    print("| model | weights | measured | tiles | wall s | peak RSS GiB |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['weights']} | {r['measured']} | {r['tiles']} | {r['wall_s']:.1f} | "
              f"{r['peak_rss_gib']:.2f} |")
    if args.json:
        report = {"size": [h, w], "threads": args.threads, "tile_workers": args.tile_workers, "machine": machine,
                  "rows": rows}
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
