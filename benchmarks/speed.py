"""Speed benchmark of the GoPro HI-Diff model, for comparison run by run.

    python benchmarks/speed.py [--threads 2] [--plain [--rounds N]] [--skip-720p] [--only CASES] [--json out.json]

Figures (random weights, fp32, batch 1 unless said, each case in a fresh process,
timed after one warm-up call):

* inference, whole image, 256x256 and 1280x720 (one timed call): the full pipeline (pad, latent
  encoder, T=8 chain, U-Net, crop) of ``options/test_gopro.yml``;
* one training step (forward, backward, clip, AdamW) of stage 1
  (``options/stage1_gopro.yml``) and stage 2 (``options/stage2_gopro.yml``) at
  batch 4 of 128x128.

``--plain`` adds the same cases with the straightforward formulation
(``fused_attention: false, channels_last: false, inference_chunk_pixels: 0``),
each in its own fresh process right after the fast one's; ``--rounds N`` repeats
every pair N times, the order alternating from round to round (fast first in
one, plain first in the next), and prints each round's ratio and their median,
so that a change of machine load hits both alike.  Within a round the two run
one after the other, not step by step: for training-step ratios interleaved step
by step use ``benchmarks/train_speed.py``.  Timings on a shared machine depend on what else
runs: the load average before and after every case is shown.  No figure of the
official code is printed: one from another day or machine is no comparison.
Memory: the peak of the timed calls, as RSS on a CPU and as
``torch.cuda.max_memory_allocated`` with ``--device cuda`` (the column says which).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
PLAIN = ["network_g.fused_attention=false", "network_g.channels_last=false", "network_g.inference_chunk_pixels=0"]


def cases(args) -> List[dict]:
    """The cases to run: all, or those of ``--only``; less the 1280x720 one with ``--skip-720p``."""
    out = [
        {"key": "infer_256", "title": "inference 256x256", "opt": "options/test_gopro.yml", "size": (256, 256),
         "batch": 1, "case": "pipeline", "warmup": 1, "runs": args.runs},
        {"key": "infer_720p", "title": "inference 1280x720", "opt": "options/test_gopro.yml", "size": (720, 1280),
         "batch": 1, "case": "pipeline", "warmup": 1, "runs": 1},
        {"key": "train_s1", "title": "train step S1, 4x128x128", "opt": "options/stage1_gopro.yml",
         "size": (128, 128), "batch": 4, "case": "train_step", "warmup": 1, "runs": args.train_runs},
        {"key": "train_s2", "title": "train step S2, 4x128x128", "opt": "options/stage2_gopro.yml",
         "size": (128, 128), "batch": 4, "case": "train_step", "warmup": 1, "runs": args.train_runs},
    ]
    if args.only is not None:
        keep = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = sorted(keep - {c["key"] for c in out})
        if unknown or not keep:
            raise ValueError(f"--only: unknown case(s) {', '.join(unknown) or repr(args.only)}; expected some of "
                             f"{', '.join(c['key'] for c in out)}")
        if args.skip_720p and "infer_720p" in keep:
            raise ValueError("--skip-720p leaves out infer_720p, which --only asks for: give one of them")
        out = [c for c in out if c["key"] in keep]
    if args.skip_720p:
        out = [c for c in out if c["key"] != "infer_720p"]
    return out


def measure(c: dict, args, plain: bool) -> dict:
    from hidiff.profiling import ProfileSpec, measure_in_subprocess
    spec = ProfileSpec(opt=str(REPO / c["opt"]), size=c["size"], overrides=PLAIN if plain else [],
                       batch=c["batch"], device=args.device, warmup=c["warmup"], runs=c["runs"],
                       threads=args.threads, cases=[c["case"]])
    r = measure_in_subprocess(spec, c["case"])
    return {"key": c["key"], "title": c["title"], "path": "plain" if plain else "fast", **r}


def _gb(n: Optional[float]) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f}"


def table(rows: List[dict], machine: str, device: str = "cpu") -> str:
    """Markdown, one row per measurement; the memory column is RSS on a CPU, allocated bytes on CUDA."""
    cuda = device.startswith("cuda")
    mem_name, mem_key = ("peak alloc GB", "cuda_peak_allocated_bytes") if cuda else ("peak RSS GB", "peak_rss_bytes")
    lines = [f"machine: {machine}", "",
             f"| case | path | threads | median s | min-max s | cpu s | {mem_name} | load before -> after |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lat, mem = r["latency"], r["memory"]
        peak = mem.get(mem_key)
        la, lb = r["load_average_before"], r["load_average_after"]
        load = f"{la[0]:.2f} -> {lb[0]:.2f}" if la and lb else "n/a"
        lines.append(f"| {r['title']} | {r['path']} | {r['threads']} | {lat['median_ms'] / 1e3:.2f} | "
                     f"{lat['min_ms'] / 1e3:.2f}-{lat['max_ms'] / 1e3:.2f} | {lat['cpu_ms'] / 1e3:.2f} | {_gb(peak)} | "
                     f"{load} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs at 256x256 (after 1 warm-up)")
    ap.add_argument("--train-runs", type=int, default=3, help="timed training steps (after 1 warm-up)")
    ap.add_argument("--plain", action="store_true", help="also measure the straightforward formulation")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --plain: fast/plain pairs per case, the order alternating (default 1)")
    ap.add_argument("--skip-720p", action="store_true", help="leave out the slow 1280x720 case (also from --only)")
    ap.add_argument("--only", default=None, help="comma-separated case keys: infer_256,infer_720p,train_s1,train_s2")
    ap.add_argument("--json", default=None, metavar="FILE", help="write all figures as JSON")
    args = ap.parse_args(argv)
    try:
        chosen = cases(args)
    except ValueError as exc:
        ap.error(str(exc))
    if args.rounds < 1 or (args.rounds > 1 and not args.plain):
        ap.error(f"--rounds {args.rounds}: expected 1, or more with --plain (rounds of fast/plain pairs)")

    from hidiff.profiling.machine import describe_machine, machine_line
    machine = describe_machine(args.device)
    rows = []
    for i, c in enumerate(chosen):
        for k in range(args.rounds):
            first_fast = (i + k) % 2 == 0    # which formulation runs first alternates by case and round
            order = ((False, True) if first_fast else (True, False)) if args.plain else (False,)
            for plain in order:
                r = dict(measure(c, args, plain), round=k + 1)
                rows.append(r)
                print(f"{r['title']} [{r['path']}, round {k + 1}]: median {r['latency']['median_ms'] / 1e3:.2f} s, "
                      f"load {r['load_average_before']} -> {r['load_average_after']}", file=sys.stderr, flush=True)
    text = table(rows, machine_line(machine), args.device)
    ratios = speedups(rows) if args.plain else {}
    if ratios:
        text += "\n\n" + "\n".join(
            f"{title}: fast / plain speed-up per round {', '.join(f'{x:.2f}x' for x in per)}; median "
            f"{statistics.median(per):.2f}x" for title, per in ratios.items())
    print(text)
    if args.json:
        from hidiff.utils.atomic import atomic_write_text
        atomic_write_text(args.json, json.dumps({"machine": machine, "threads": args.threads, "rows": rows,
                                                 "speedups": ratios}, indent=1) + "\n")
    return 0


def speedups(rows: List[dict]) -> Dict[str, List[float]]:
    """Per case, the plain median time over the fast one of each round (a round with both)."""
    out: Dict[str, List[float]] = {}
    pairs: Dict[tuple, Dict[str, float]] = {}
    for r in rows:
        pairs.setdefault((r["title"], r.get("round", 1)), {})[r["path"]] = r["latency"]["median_ms"]
    for (title, _), both in pairs.items():
        if "fast" in both and "plain" in both and both["fast"] > 0:
            out.setdefault(title, []).append(both["plain"] / both["fast"])
    return out


if __name__ == "__main__":
    sys.exit(main())
