"""``hidiff-deblur``: deblur photos of any size with a trained or released model.

    hidiff-deblur photos/ -o restored/ --weights experiments/pretrained_models/HI_Diff_GoPro
    hidiff-deblur 'shots/*.jpg' -o out/ --checkpoint model.pth --tile 512 --overlap 64
    hidiff-deblur img.png -o out/ --experiment my_stage2_run --device cuda

Weights come from one of: ``--weights DIR`` (a model folder: restored with its
model.yml, or, holding the authors' net_g.pth, net_le_dm.pth, net_d.pth,
recognised from the tensors; no YAML needed), ``--checkpoint FILE`` (a training
state, restored with its run's recorded options, or one file holding several
networks) or
``--experiment NAME`` (the run's newest complete checkpoint, with its recorded
options).  With none of them, hidiff's default model is used, and said so
(``hidiff/pretrained/default/``, or the model folder ``$HIDIFF_DEFAULT_MODEL``).
Weights or outputs with NaN/Inf values are refused, naming the file.  The
weights, --device and the tiling flags are checked (the model loaded) before
anything is skipped, written or created, so a bad one exits 2 even when every
output exists already.

Every image keeps its format: bit depth (16-bit in, 16-bit out), gray stays
gray, alpha is kept unchanged, EXIF orientation is applied and the upright
result written.  Inputs are never overwritten; existing outputs are skipped
unless --overwrite.  Big images are restored in overlapping tiles (automatic
unless --tile/--no-tile).  ``--prior-seeds K`` restores each photo from K
initial noises and writes their mean (``--std-map``: also ``<name>_std.png``,
their per-pixel spread); ``--self-ensemble`` averages each restoration over
the photo's 8 flips and rotations (8x the time).  A file that cannot be read is reported and the rest
are still processed (a multi-page TIFF is such a file: split its pages first); the
exit status is 1 if any image failed, 2 for bad usage (an input that does not
exist, a folder or pattern without images, a bad flag).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from tqdm import tqdm

from hidiff.cli.arguments import add_prior_seed_arguments, check_output_folder, non_negative_int, positive_int
from hidiff.data.image_io import IMG_EXTENSIONS, write_png
from hidiff.errors import CheckpointError, ConfigError, DataError, HidiffError
from hidiff.inference.image_io import (
    WRITABLE_EXTENSIONS, check_writable, find_photos, from_tensor, output_suffix, read_photo, to_tensor, walk_photos,
    write_photo
)
from hidiff.inference.self_ensemble import self_ensemble
from hidiff.inference.tiler import WHOLE_IMAGE, TileOptions, auto_tile_options, restore_image
from hidiff.runners.default_model import default_model_folder
from hidiff.runners.prior_seeds import combine_images, prior_seed, std_map
from hidiff.runners.test_runner import select_device
from hidiff.runners.weights import from_checkpoint, from_experiment, from_release, inference_pipeline

log = logging.getLogger("hidiff.deblur")
EXPERIMENTS_ROOT = "experiments"


def add_weight_arguments(ap: argparse.ArgumentParser, required: bool = True) -> None:
    """--weights/--checkpoint/--experiment (one; none: the default model unless ``required``),
    --experiments-root, --device, --timesteps."""
    src = ap.add_mutually_exclusive_group(required=required)
    src.add_argument("--weights", metavar="DIR", help="a model folder: net_g.pth (net_le_dm.pth, net_d.pth for "
                                                      "HI-Diff) and model.yml if exported; one file: --checkpoint")
    src.add_argument("--checkpoint", metavar="FILE", help="a training state or one file holding the networks")
    src.add_argument("--experiment", metavar="NAME", help="a run in --experiments-root (its newest complete "
                                                          "checkpoint)")
    ap.add_argument("--experiments-root", help=f"where --experiment looks (default: {EXPERIMENTS_ROOT})")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--timesteps", type=positive_int,
                    help="diffusion steps (default: the run's recorded value, else the official one for the denoiser)")


def check_weight_arguments(args: argparse.Namespace) -> None:
    """ConfigError for a weights flag that cannot mean what was asked: --experiments-root without --experiment,
    a file given to --weights (which takes a folder)."""
    if args.experiments_root is not None and not args.experiment:
        raise ConfigError(f"--experiments-root {args.experiments_root} is only used with --experiment NAME")
    if args.weights and Path(args.weights).is_file():
        folder = Path(args.weights).parent
        raise ConfigError(f"--weights '{args.weights}' is a file, but --weights takes a model folder (net_g.pth, "
                          f"net_le_dm.pth, net_d.pth, model.yml): pass its folder, --weights '{folder}', or use "
                          f"--checkpoint '{args.weights}' for one file that holds every network")


def load_pipeline(args: argparse.Namespace):
    """``(RestorationPipeline, description, Weights)`` from the arguments of :func:`add_weight_arguments`.

    Weights that record their run's options (a training state, an experiment)
    are restored with them; others are recognised from their tensor shapes.
    """
    weights = load_weights(args)
    pipeline, description = inference_pipeline(weights, select_device(args.device), args.timesteps)
    return pipeline, description, weights


def load_weights(args: argparse.Namespace):
    """The :class:`~hidiff.runners.weights.Weights` named by --weights/--checkpoint/--experiment."""
    check_weight_arguments(args)
    if args.weights:
        return from_release(args.weights)
    if args.checkpoint:
        return from_checkpoint(args.checkpoint)
    if args.experiment:
        return from_experiment(args.experiments_root or EXPERIMENTS_ROOT, args.experiment)
    folder = default_model_folder()
    print(f"no weights named: using hidiff's default model, {folder} (how it was trained: "
          f"{folder / 'MODEL_CARD.md'})", file=sys.stderr)
    return from_release(folder)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hidiff-deblur", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob pattern (quote it)")
    ap.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    ap.add_argument("-r", "--recursive", action="store_true",
                    help="also deblur the photos in sub-folders, mirroring the tree under -o")
    add_weight_arguments(ap, required=False)
    ap.add_argument("--seed", type=non_negative_int, default=0,
                    help="base seed of the prior noise; each image's seed also depends on its file name")
    tile = ap.add_argument_group(
        "tiling", "automatic by default, per image (a flag below replaces only its own value):\n"
                  "CPU:  the whole image up to 512 x 512 = 262144 pixels, else 256-px tiles, overlap 32, one tile\n"
                  "      per pass;\n"
                  "CUDA: the whole image if its estimated memory fits in 60% of the free GPU memory, else the\n"
                  "      largest of 1024/768/512/384/256-px tiles that fits, overlap tile/8 (at least 32),\n"
                  "      as many tiles per pass as fit (at most 16);\n"
                  "tile sizes are rounded up to the model's size multiple")
    tile.add_argument("--tile", type=positive_int, metavar="N", help="always tile, with N x N tiles")
    tile.add_argument("--overlap", type=non_negative_int, metavar="PX",
                      help="overlap of neighbouring tiles (default with --tile: 32, at most N/2; else automatic)")
    tile.add_argument("--blend", choices=["hann", "linear", "mean"], help="how overlaps are blended (default hann)")
    tile.add_argument("--tile-batch", type=positive_int, metavar="K",
                      help="tiles per forward pass on a GPU (default with --tile: 1; else automatic); a CPU runs "
                           "one tile per pass")
    tile.add_argument("--tile-workers", type=non_negative_int, metavar="N",
                      help="CPU: tiles restored at once, one thread each (default 0: as many as torch threads; "
                           "the output does not depend on it nor on the thread count)")
    tile.add_argument("--prior", choices=["per_tile", "global"],
                      help="one prior per tile, or one from the downscaled whole image (default per_tile)")
    tile.add_argument("--no-tile", action="store_true", help="always restore the whole image at once")
    add_prior_seed_arguments(ap, scores=False)
    ap.add_argument("--self-ensemble", action="store_true",
                    help="average the restorations of the 8 flips/rotations of each image (x8 self-ensemble, "
                         "8x the time; each with the same prior seed)")
    ap.add_argument("--ext", help="output format by extension, e.g. png or tif (default: the input's)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.std_map and args.prior_seeds < 2:
            raise ConfigError("--std-map needs --prior-seeds K with K >= 2")
        tile_for = _tile_chooser(args)
        select_device(args.device)
        jobs, failures = _plan(args)
        # the model is loaded whatever is left to do: a bad option is found even when every output exists
        pipeline, description, weights = load_pipeline(args)
        if pipeline.in_channels != 3:  # e.g. a dual-pixel model: every photo would fail after -o was created
            raise ConfigError(f"{description}: the model takes {pipeline.in_channels}-channel input (a dual-pixel "
                              f"pair of views), but photos are RGB; test it on its data with hidiff-test")
        if args.prior_seeds > 1 and not pipeline.needs_prior:
            raise ConfigError(f"--prior-seeds {args.prior_seeds}: this model has no diffusion prior, so every "
                              f"initial noise gives the same image")
        if args.tile is not None and args.tile % pipeline.pad_multiple:
            raise ConfigError(f"--tile {args.tile}: must be a multiple of {pipeline.pad_multiple} for this model")
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = len(jobs) + len(failures)
    todo = []
    for src, dst in jobs:
        existing = [o for o in _outputs(dst, args.std_map) if o.exists()]
        if existing and not args.overwrite:
            print(f"skip: {existing[0]} exists (use --overwrite to replace it)", file=sys.stderr)
        else:
            todo.append((src, dst))
    skipped = len(jobs) - len(todo)
    done = 0
    t0 = time.perf_counter()
    if todo:
        try:
            _make_output_folder(Path(args.output))
        except HidiffError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"model: {description} on {pipeline.device}", file=sys.stderr)
        done, more = _run(pipeline, todo, args, tile_for, weights)
        failures += more
    print(f"summary: {done} deblurred, {skipped} skipped, {len(failures)} failed of {total} "
          f"image(s) in {time.perf_counter() - t0:.1f} s -> {args.output}", file=sys.stderr)
    return 1 if failures else 0


# ------------------------------------------------------------------ helpers
def _tile_chooser(args) -> Callable[[int, int, torch.device, int], object]:
    """Validate the tiling flags; return (h, w, device, multiple) -> TileOptions | 'whole'."""
    overrides = {k: v for k, v in (("overlap", args.overlap), ("blend", args.blend), ("batch", args.tile_batch),
                                   ("prior", args.prior), ("workers", args.tile_workers)) if v is not None}
    if args.no_tile and (args.tile is not None or overrides):
        raise ConfigError("--no-tile cannot be combined with --tile/--overlap/--blend/--tile-batch/--tile-workers/"
                          "--prior")
    if args.no_tile:
        return lambda h, w, device, multiple: WHOLE_IMAGE
    try:
        forced = TileOptions(size=args.tile, **overrides) if args.tile is not None else None
        if forced is None and overrides:
            TileOptions(**overrides)  # validate now, not at the first big image
    except ConfigError as exc:
        raise ConfigError(_as_flags(str(exc))) from None

    def choose(h: int, w: int, device: torch.device, multiple: int):
        if forced is not None:
            return forced
        auto = auto_tile_options(h, w, device, multiple=multiple)
        if auto is None:
            return WHOLE_IMAGE
        values = auto.describe() | overrides
        values.pop("stride")
        if "overlap" in overrides and values["overlap"] >= auto.size:
            raise ConfigError(f"--overlap {values['overlap']} must be smaller than the automatic tile "
                              f"{auto.size}; set --tile too")
        return TileOptions(**values)

    return choose


def _as_flags(message: str) -> str:
    """Name the command-line flags in a TileOptions message ('tile.batch' -> '--tile-batch')."""
    for field, flag in (("size", "--tile"), ("overlap", "--overlap"), ("blend", "--blend"),
                        ("batch", "--tile-batch"), ("workers", "--tile-workers"), ("prior", "--prior")):
        message = message.replace(f"tile.{field}", flag)
    return message


def _output_extension(ext: Optional[str]) -> Optional[str]:
    """``--ext`` as a lower-case suffix, refused (bad usage) unless it is a format the writer knows."""
    if not ext:
        return None
    suffix = output_suffix(ext)
    if suffix not in WRITABLE_EXTENSIONS:
        raise ConfigError(f"--ext {ext}: expected one of {', '.join(e[1:] for e in WRITABLE_EXTENSIONS)}")
    return suffix


def _plan(args) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(input, output) pairs; unusable inputs and output clashes become failures, an unusable -o raises."""
    ext = _output_extension(args.ext)
    out_dir = Path(args.output)
    check_output_folder(out_dir, "--output")
    inputs: dict[Path, Path] = {}  # resolved -> as given: one file named twice is deblurred once
    failures: list[tuple[Path, str]] = []

    def fail(path: Path, reason: str) -> None:
        failures.append((path, reason))
        print(f"error: {path}: {reason}", file=sys.stderr)

    subdirs: dict[Path, Path] = {}  # input -> its sub-folder under -o (--recursive)
    unusable: list[str] = []  # inputs that name no image at all: bad usage, refused before anything runs
    for spec in args.inputs:
        if args.recursive and Path(spec).is_dir():
            if not _walk_input(Path(spec), out_dir, inputs, subdirs, failures):
                unusable.append(f"no images ({', '.join(IMG_EXTENSIONS)}) in the folder tree '{spec}'")
            continue
        try:
            for p in find_photos(spec):
                inputs.setdefault(p.resolve(), p)
        except DataError as exc:
            unusable.append(str(exc))
    if unusable:
        raise ConfigError("; ".join(unusable) + " (nothing was deblurred)")
    jobs: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    overwrites: list[tuple[Path, str]] = []
    for p in inputs.values():
        dst = out_dir / subdirs.get(p, Path()) / (p.stem + (ext or p.suffix))
        outs = {o.resolve(): o for o in _outputs(dst, args.std_map)}
        on_input = [k for k in outs if k in inputs]
        taken = [k for k in outs if k in claimed]
        if on_input:
            overwrites.append((p, f"its output '{outs[on_input[0]]}' would overwrite the input file "
                                  f"'{inputs[on_input[0]]}'"))
        elif taken:
            fail(p, f"output name {outs[taken[0]].name} already used by {claimed[taken[0]]}")
        else:
            claimed.update((k, p) for k in outs)
            jobs.append((p, dst))
    if overwrites and not jobs:  # e.g. -o is the input folder: a usage error, not a list of failures
        raise ConfigError(f"--output '{out_dir}': {overwrites[0][1]}; choose another --output folder or --ext")
    for p, reason in overwrites:
        fail(p, reason + " (inputs are never overwritten)")
    if not jobs and not failures:
        raise DataError("no input images")
    return jobs, failures


def _outputs(dst: Path, std_map: bool) -> list[Path]:
    """The files written for one image: the restored image and, with ``--std-map``, ``<name>_std.png``."""
    return [dst, dst.with_name(f"{dst.stem}_std.png")] if std_map else [dst]


def _walk_input(folder: Path, out_dir: Path, inputs: dict, subdirs: dict, failures: list) -> bool:
    """--recursive: add the photos of ``folder``'s tree; say what was skipped, unreadable entries are failures.
    False when the tree holds no photo and nothing unreadable."""

    photos, skipped, unreadable = walk_photos(folder, exclude=out_dir)
    for p, reason in skipped:
        print(f"skip: {p}: {reason}", file=sys.stderr)
    for p, reason in unreadable:
        failures.append((p, reason))
        print(f"error: {p}: {reason}", file=sys.stderr)
    for p in photos:
        if p.resolve() not in inputs:
            inputs[p.resolve()] = p
            subdirs[p] = p.parent.relative_to(folder)
    return bool(photos or unreadable)


def _make_output_folder(out_dir: Path) -> None:
    """Create ``-o`` once the model has loaded and there is work (a refused model leaves no folder behind)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output '{out_dir}': cannot create the folder ({exc.strerror or exc})") from None


def _run(pipeline, todo: list[tuple[Path, Path]], args, tile_for, weights) -> tuple[int, list[tuple[Path, str]]]:
    import cv2  # deferred: keeps the command's start (--help, bad flags) fast

    failures: list[tuple[Path, str]] = []
    done = 0
    bar = tqdm(todo, unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    for src, dst in bar:
        bar.set_postfix_str(src.name)
        try:
            photo = read_photo(src)
            check_writable(photo, dst.suffix or ".png")  # before minutes of restoration, not after
            h, w = photo.size
            tile = tile_for(h, w, pipeline.device, pipeline.pad_multiple)
            lq = to_tensor(photo.rgb)
            def tile_progress(done_tiles: int, total_tiles: int, name: str = src.name) -> None:
                if total_tiles > 1:
                    bar.set_postfix_str(f"{name} tiles {done_tiles}/{total_tiles}")

            outs = []
            for k in range(args.prior_seeds):
                def once(x: torch.Tensor, seed: int = prior_seed(src.stem, args.seed, k)) -> torch.Tensor:
                    return restore_image(pipeline, x, tile, seed=seed, progress=tile_progress)
                out = self_ensemble(once, lq) if args.self_ensemble else once(lq)
                if not bool(torch.isfinite(out).all()):
                    raise CheckpointError(f"{src}: the restored image holds NaN/Inf values with the weights "
                                          f"{weights.describe()}; not written")
                outs.append(out)
            write_photo(dst, from_tensor(combine_images(outs, args.prior_image)), photo)
            if args.std_map:
                write_png(_outputs(dst, True)[1], std_map(outs))
            done += 1
        except (HidiffError, RuntimeError, ValueError, OSError, MemoryError, cv2.error) as exc:
            if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
                if pipeline.device.type == "cuda":
                    torch.cuda.empty_cache()
                reason = "out of memory; try a smaller --tile (or --tile-batch 1)"
            elif isinstance(exc, HidiffError):
                reason = str(exc)
            elif isinstance(exc, OSError):  # reading is a DataError already, so this is the output file
                reason = f"cannot write '{dst}': {exc.strerror or exc}"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            failures.append((src, reason))
            bar.write(f"error: {reason}" if str(src) in reason else f"error: {src}: {reason}", file=sys.stderr)
    bar.close()
    return done, failures


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
