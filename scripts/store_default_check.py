"""Store the default model's output on a small crop, which the test suite then checks (tests/test_model_folder.py).

    python scripts/store_default_check.py            # after shipping new weights in hidiff/pretrained/default

Writes ``tests/data/default_model/``: ``input.png`` (a centred crop of a held-out
photo bundled with scikit-image, ``chelsea`` by default), ``output.png`` (what
``hidiff.load().deblur(input.png, seed=0)`` returns, which equals ``hidiff-deblur
input.png`` with no weights named) and ``record.json`` (the sha256 of every
weights file it was made with).  A later change that moves any output pixel by
more than one 8-bit level fails the test; new weights need a new record, so an
existing one is replaced only with ``--force``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "default_model"
FILES = ("input.png", "output.png", "record.json")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, default=None, help="source photo (default: skimage's chelsea.png)")
    ap.add_argument("--size", type=int, default=96, help="side of the centred crop in pixels (default 96)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT.relative_to(REPO)})")
    ap.add_argument("--force", action="store_true", help="replace an existing record")
    args = ap.parse_args(argv)

    import cv2
    import hidiff
    from hidiff.data.transforms import center_crop
    from hidiff.errors import HidiffError
    from hidiff.inference.image_io import quantize, read_photo
    from hidiff.runners.default_model import default_model_folder
    from hidiff.utils.atomic import atomic_write_bytes, atomic_write_text

    if args.photo is None:
        import skimage
        args.photo = Path(skimage.__file__).resolve().parent / "data" / "chelsea.png"
    try:
        existing = [f for f in FILES if (args.out / f).exists()]
        if existing and not args.force:
            raise HidiffError(f"{args.out}: already holds {', '.join(existing)}; pass --force to replace the stored "
                              "output (only after changing the shipped weights on purpose)")
        if args.size < 16:
            raise HidiffError(f"--size {args.size}: expected at least 16 pixels")
        folder = default_model_folder()
        photo = read_photo(args.photo)
        if photo.dtype != np.uint8 or photo.gray:
            raise HidiffError(f"--photo '{args.photo}': expected an 8-bit colour image")
        side = min(args.size, *photo.rgb.shape[:2])
        crop = np.ascontiguousarray(center_crop(quantize(photo.rgb, np.uint8), side, side))
        restorer = hidiff.load(None, device="cpu")
        args.out.mkdir(parents=True, exist_ok=True)
        for name, rgb in (("input.png", crop), ("output.png", None)):
            if rgb is None:
                rgb = restorer.deblur(str(args.out / "input.png"), seed=0)
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
            if not ok:
                raise HidiffError(f"cannot encode {name}")
            atomic_write_bytes(args.out / name, buf.tobytes())
        record = {"model_folder": str(folder.resolve().relative_to(REPO)) if folder.resolve().is_relative_to(REPO)
                  else str(folder), "weights_sha256": restorer.sha256, "seed": 0,
                  "source_photo": args.photo.name, "crop": crop.shape[:2], "tolerance_levels": 1}
        atomic_write_text(args.out / "record.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"stored: {args.out} ({crop.shape[1]}x{crop.shape[0]} crop of {args.photo.name}; model {folder})")
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    sys.exit(main())
