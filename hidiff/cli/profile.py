"""``hidiff-profile -opt FILE --size HxW [--device cpu|cuda]`` (also ``scripts/profile.py``): size, cost, speed
and memory of a model."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

from hidiff.errors import HidiffError
from hidiff.profiling.cases import CASE_ORDER, parse_size
from hidiff.profiling.profiler import ProfileSpec, profile
from hidiff.profiling.report import format_table, json_line
from hidiff.utils.atomic import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hidiff-profile", description="Parameters, MACs/FLOPs, latency and peak memory of every network and of "
        "the whole inference pipeline of an option file (random weights; fp32).")
    ap.add_argument("-opt", "--opt", required=True, help="option file (any stage: S1, S2, test, plain)")
    ap.add_argument("--size", default="256x256", help="input size HxW, e.g. 256x256 or 720x1280 (default 256x256)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device for latency and memory")
    ap.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls per case (default 1)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per case (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the measuring processes")
    ap.add_argument("--cases", default=None,
                    help=f"comma-separated subset of {', '.join(CASE_ORDER)} (default: every inference case)")
    ap.add_argument("--train-step", action="store_true", help="also time one training step (training files)")
    ap.add_argument("--counts-only", action="store_true", help="parameters and MACs only (fast, no timing)")
    ap.add_argument("--in-process", action="store_true",
                    help="measure in this process instead of one fresh process per case (memory then includes "
                         "earlier cases)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="option override, e.g. -o network_g.fused_attention=false (repeatable)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the JSON result to FILE")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
        if args.train_step:
            cases = (cases or [c for c in CASE_ORDER if c != "train_step"]) + ["train_step"]
        if args.batch < 1 or args.runs < 1 or args.warmup < 0:
            raise HidiffError("--batch and --runs must be >= 1 and --warmup >= 0")
        if args.device == "cuda" and not args.counts_only:
            if not torch.cuda.is_available():
                raise HidiffError("--device cuda: no CUDA device is available here (use --device cpu)")
        spec = ProfileSpec(opt=args.opt, size=parse_size(args.size), overrides=list(args.override),
                           batch=args.batch, device=args.device, warmup=args.warmup, runs=args.runs,
                           threads=args.threads, cases=cases)
        result = profile(spec, latency=not args.counts_only, in_process=args.in_process,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    except (HidiffError, OSError, RuntimeError) as exc:  # RuntimeError: a measuring process failed
        print(f"hidiff-profile: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    line = json_line(result)
    if args.json:
        atomic_write_text(args.json, line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
