"""``hidiff-evaluate`` (also ``scripts/evaluate.py``): score result folders and compare them in one table."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hidiff.cli.arguments import check_output_folder, non_negative_int, positive_int
from hidiff.errors import HidiffError
from hidiff.evaluation.compare import check_report_folder, compare_folders, comparison_markdown, write_comparison
from hidiff.evaluation.protocols import PROTOCOLS, default_protocol_for, get_protocol

EPILOG = """examples:
  hidiff-evaluate --protocol gopro --pred results/HI_Diff/GoPro --gt datasets/test/GoPro/target
  hidiff-evaluate --set RealBlur_J --pred ours/RealBlur_J --pred restormer/RealBlur_J \\
                  --gt datasets/test/RealBlur_J/target --out reports/RealBlur_J
Images are paired by file name, and every --pred folder is paired and size-checked before
anything is scored. --set also checks the image count of a known test set (GoPro 1111,
HIDE 2025, RealBlur_J/R 980, DPDD 76) and picks its protocol. Under --protocol dpdd the
indoor/outdoor means are added when indoor_labels.npy / outdoor_labels.npy lie in the --gt
folder, its parent or its grandparent. A gray result paired with a colour ground truth (or the
reverse) is refused before scoring. gopro and basic score uint8 images: 16-bit files are rounded
to 8 bits first, round(x/257) as an 8-bit save would, and the log and the reports say so.
--out must lie outside every --pred and --gt folder (and hold none of them)."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hidiff-evaluate", description="Score result folders against ground truth.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred", action="append", required=True, type=Path, metavar="DIR",
                    help="folder of results; repeat to compare several methods")
    ap.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground-truth images")
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS),
                    help="default: the protocol of --set, else 'basic'")
    ap.add_argument("--set", dest="set_name", metavar="NAME", help="test-set name (GoPro, HIDE, RealBlur_J, ...)")
    ap.add_argument("--label", action="append", metavar="NAME", help="row label per --pred (default: folder name)")
    ap.add_argument("--out", type=Path, metavar="DIR", help="also write per-method CSV/JSON/markdown here")
    ap.add_argument("--workers", type=positive_int, default=1, help="processes used to score images (default 1)")
    ap.add_argument("--no-count-check", action="store_true", help="do not check a known set's image count")
    ap.add_argument("--crop-border", type=non_negative_int, help="basic protocol: pixels cut from each edge")
    ap.add_argument("--y-channel", action="store_true", help="basic protocol: score the BT.601 Y channel")
    ap.add_argument("--no-lpips", action="store_true", help="dpdd protocol: skip LPIPS")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    name = args.protocol or default_protocol_for(args.set_name)
    options = {}
    if args.crop_border is not None:
        options["crop_border"] = args.crop_border
    if args.y_channel:
        options["y_channel"] = True
    if args.no_lpips:
        options["lpips"] = False
    try:
        if args.out is not None:
            check_output_folder(args.out, "--out")
            check_report_folder(args.out, args.pred, args.gt)
        protocol = get_protocol(name, **options)
        results = compare_folders(args.pred, args.gt, protocol, labels=args.label, set_name=args.set_name,
                                  check_count=not args.no_count_check, workers=args.workers)
        print(f"protocol: {protocol.name} ({protocol.describe()})\n")
        print(comparison_markdown(results), end="")
        if args.out:
            write_comparison(args.out, results)
            print(f"\nreports written to {args.out}")
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
