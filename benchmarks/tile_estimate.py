"""Estimate how long a model of an option file takes to deblur a large photo on a CPU, tiled.

    python benchmarks/tile_estimate.py -opt options/default_stage2.yml [--photo 3000x4000] [--cores 2]

Profiles one tile of the size ``hidiff-deblur`` would cut on a CPU (``hidiff-profile``
in a fresh process, one thread: MACs and CPU time of the whole pipeline), counts
the tiles of the photo (hidiff.inference.tiler.auto_tile_options) and prints

    tiles x CPU time per tile / cores

i.e. the time with every core busy on its own share of the tiles, and the same
divided by ``--speedup`` instead of ``--cores`` for a less than perfect use of
the cores.  CPU time, not wall time, because it is the figure that other
processes on a shared machine disturb least; an estimate, not a measurement.
Also prints the parameters the stage-2 networks ship and their fp16 size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("net_g", "net_le_dm", "net_d")


def parse_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 3000x4000, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected a positive HxW, got {text!r}")
    return h, w


def estimate(profile: dict, photo_hw: tuple[int, int], cores: int, speedup: float) -> dict:
    """The figures printed, from a ``hidiff-profile --json`` result of the tile's pipeline."""
    from hidiff.inference.tiler import TileGrid, auto_tile_options

    case = next(c for c in profile["cases"] if c["name"] == "pipeline")
    opts = auto_tile_options(*photo_hw, "cpu")
    tiles = 1 if opts is None else len(TileGrid.build(*photo_hw, opts))
    cpu_s = case["latency"]["cpu_ms"] / 1000.0
    shipped = sum(n for name, n in profile["networks_params"].items() if name in SHIPPED)
    return {"photo_hw": list(photo_hw), "tile_hw": profile["size_hw"], "tiles": tiles,
            "gmac_per_tile": case["macs"] / 1e9, "gmac_total": tiles * case["macs"] / 1e9,
            "cpu_s_per_tile": cpu_s, "cores": cores, "seconds_all_cores": tiles * cpu_s / cores,
            "speedup": speedup, "seconds_at_speedup": tiles * cpu_s / speedup,
            "shipped_params": shipped, "fp16_mib": shipped * 2 / 2 ** 20,
            "load_average": profile["machine"].get("load_average")}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-opt", "--opt", required=True, help="option file of the model (stage 2 or test)")
    ap.add_argument("--photo", type=parse_hw, default=(3000, 4000), help="photo size HxW (default 3000x4000)")
    ap.add_argument("--cores", type=int, default=2, help="CPU cores of the target machine (default 2)")
    ap.add_argument("--speedup", type=float, default=1.6, help="a less than perfect multi-core speed-up")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of the tile (mean CPU time)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.cores < 1 or args.speedup <= 0 or args.runs < 1:
        print("error: --cores and --runs must be >= 1 and --speedup > 0", file=sys.stderr)
        return 2
    from hidiff.inference.tiler import auto_tile_options

    opts = auto_tile_options(*args.photo, "cpu")
    tile = f"{opts.size}x{opts.size}" if opts else f"{args.photo[0]}x{args.photo[1]}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        cmd = [sys.executable, str(REPO / "scripts" / "profile.py"), "-opt", args.opt, "--size", tile,
               "--cases", "pipeline", "--threads", "1", "--runs", str(args.runs), "--json", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"error: hidiff-profile failed:\n{done.stderr.strip()}", file=sys.stderr)
            return 2
        figures = estimate(json.loads(out.read_text()), args.photo, args.cores, args.speedup)
    f = figures
    h, w = f["photo_hw"]
    print(f"{args.opt}: shipped networks {f['shipped_params']:,} parameters = {f['fp16_mib']:.2f} MiB in fp16")
    print(f"one {tile} tile: {f['gmac_per_tile']:.2f} GMAC, {f['cpu_s_per_tile'] * 1000:.0f} ms CPU time "
          f"(1 thread, mean of {args.runs}; load average {f['load_average']})")
    print(f"{h}x{w} photo: {f['tiles']} tiles, {f['gmac_total']:.0f} GMAC; estimate "
          f"{f['seconds_all_cores']:.0f} s on {f['cores']} cores fully used, "
          f"{f['seconds_at_speedup']:.0f} s at a {f['speedup']}x speed-up")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
