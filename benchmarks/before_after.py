"""A before/after picture of real blur: the photo beside each model's output, with enlarged crops.

    python benchmarks/before_after.py -o docs/images/clock_motion.png
    python benchmarks/before_after.py --photo my_shaky.jpg --model default= --model demo=experiments/demo_stage2 \\
        --crop 40,150,96,96 -o out.png

The photo defaults to scikit-image's ``clock_motion.png`` (real camera shake,
no sharp version exists).  Each ``--model NAME=SOURCE`` is loaded by
``hidiff.load(SOURCE)``; an empty SOURCE (``default=``, also the default) is
hidiff's default model, exactly what ``hidiff-deblur photo -o out/`` uses.
Every output is made with ``--seed`` and the photo's stem as key, so it is what
``hidiff-deblur --seed`` restores from the same file before writing it (for a gray
photo the command then writes one gray channel, which can differ from this colour
panel by a level or so).  Crops (``top,left,height,width``,
repeatable) are enlarged below the full images (hidiff/evaluation/comparison_grid.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]


def skimage_photo(name: str) -> Path:
    """A photo shipped with scikit-image (its data folder, no download)."""
    import skimage
    return Path(skimage.__file__).resolve().parent / "data" / name


def parse_crop(text: str) -> Tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--crop '{text}': expected top,left,height,width (four integers)")
    return values


def parse_models(specs: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
    """``['default=', 'demo=dir']`` -> ``[('default', None), ('demo', 'dir')]``, names unique."""
    from hidiff.errors import ConfigError
    out: List[Tuple[str, Optional[str]]] = []
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--model '{spec}': expected NAME=SOURCE (an empty SOURCE is the default model)")
        if any(name == n for n, _ in out):
            raise ConfigError(f"--model '{spec}': the name '{name}' is already used")
        out.append((name, source.strip() or None))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, default=None, help="the blurry photo (default: skimage's clock_motion.png)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE",
                    help="a model to show (SOURCE as for hidiff.load; empty: the default model); repeatable")
    ap.add_argument("--crop", action="append", type=parse_crop, default=[], metavar="T,L,H,W",
                    help="a region to enlarge (default: a centred quarter of the short side); repeatable")
    ap.add_argument("--seed", type=int, default=0, help="prior-noise seed, as hidiff-deblur --seed")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import hidiff
    from hidiff.errors import HidiffError
    from hidiff.evaluation.comparison_grid import make_grid, write_grid
    from hidiff.inference.image_io import read_photo

    photo = args.photo if args.photo is not None else skimage_photo("clock_motion.png")
    try:
        if not photo.is_file():
            raise HidiffError(f"--photo '{photo}': no such file")
        if not args.output.parent.is_dir():
            raise HidiffError(f"-o '{args.output}': the folder '{args.output.parent}' does not exist")
        models = parse_models(args.model or ["default="])
        restorers = [(name, hidiff.load(source, device=args.device)) for name, source in models]
        before = read_photo(photo).rgb
        panels, labels = [before], ["blurry photo"]
        for name, r in restorers:
            print(f"{name}: {r!r}", flush=True)
            panels.append(r.deblur(str(photo), seed=args.seed))
            labels.append(name)
        grid = make_grid(panels, labels, args.crop or None)
        write_grid(args.output, grid)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"written: {args.output} ({grid.shape[1]}x{grid.shape[0]}; {photo.name}: "
          + ", ".join(labels) + ")")
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    sys.exit(main())
