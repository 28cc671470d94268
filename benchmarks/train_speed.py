"""Training speed and memory of HI-Diff on GoPro: plain vs fast formulation, timed interleaved.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_speed.py [--stages 1,2] [--sizes 4x128x128,2x256x256]
        [--repeats 2] [--threads N] [--device cpu|cuda] [--precisions fp32,bf16]
        [--checkpoint-levels all|1,refinement|...] [--json out.json]

One optimisation step as the trainer runs it (forward of the stage model returning its
loss terms, backward, global-norm clip, AdamW step with the option file's settings)
of stage 1 (``options/stage1_gopro.yml``) and stage 2 (``options/stage2_gopro.yml``,
random init instead of the stage-1 weights), for

* ``plain``: the textbook formulation of the official code (``fused_attention: false,
  channels_last: false, inference_chunk_pixels: 0``).  The repository holds no copy
  of the official code; this formulation computes the official maths the official
  way (NCHW, unfused attention), so it stands in for it;
* ``fast``: the shipped option files (fused attention maths, channels_last);
* ``fast+ckpt``: fast with activation checkpointing of every U-Net stage, where the networks offer
  ``set_checkpoint_levels`` (otherwise the row says why it is missing); ``--checkpoint-levels 1,refinement``
  checkpoints only those (``train.checkpoint_levels``; row ``fast+ckpt[1,refinement]``);
* ``fast+bf16`` / ``fast+fp16`` with ``--precisions`` (CUDA only).

On a CPU every process keeps freed memory for reuse, as the trainer does by default (``train.keep_cpu_memory``,
docs/speed.md); ``--system-malloc`` measures with the C library's default instead.  Each row sets its own
precision, checkpointing and malloc, so ``-o`` refuses ``train.amp``, ``train.checkpoint_levels`` and
``train.keep_cpu_memory`` and names the flag that sets them.

Reports steps/s, samples/s, the speed-up over plain (ratio of median step times, all
variants timed in one process, one step of each in turn) and the peak memory of one
step after a warm-up step, each variant in a fresh process (RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA), with the machine, threads and load.
On a CPU the memory the warm-up step freed is given back to the OS before the
measured step (``malloc_trim``), so the step's delta is its own memory whether or
not freed memory is kept.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
STAGE_FILES = {"1": "options/stage1_gopro.yml", "2": "options/stage2_gopro.yml"}


def stage_overrides(overrides: Sequence[str], stage: str) -> list:
    """The ``-o`` overrides for ``stage``: unprefixed ones and those prefixed ``<stage>:``."""
    out = []
    for item in overrides:
        head, sep, rest = item.partition(":")
        if sep and head in STAGE_FILES and "=" not in head:
            if head == stage:
                out.append(rest)
        else:
            out.append(item)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="1,2", help="comma-separated stages: 1, 2 (default 1,2)")
    ap.add_argument("--sizes", default="4x128x128,2x256x256", help="comma-separated BATCHxHxW")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds (one step of every variant each)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precisions", default="fp32", help="comma-separated fp32,bf16,fp16 (others: CUDA only)")
    ap.add_argument("--no-checkpointing", action="store_true", help="leave out the activation-checkpointing row")
    ap.add_argument("--checkpoint-levels", default=None, metavar="LEVELS",
                    help="the checkpointing row's U-Net levels (1-4) and/or stage names, comma-separated, as "
                         "train.checkpoint_levels (default all: 1,2,3,4,refinement)")
    ap.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    ap.add_argument("--system-malloc", action="store_true",
                    help="CPU: leave malloc as the C library sets it (default: keep freed memory, as the trainer)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="option override for every stage file, or for one with a stage prefix: "
                         "-o 2:network_d.block_num=1 (repeatable; not train.amp, train.checkpoint_levels or "
                         "train.keep_cpu_memory: each row sets those, see --precisions, --checkpoint-levels, "
                         "--system-malloc)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write all figures as JSON")
    args = ap.parse_args(argv)

    import torch

    from hidiff.errors import HidiffError
    from hidiff.profiling.machine import describe_machine, machine_line
    from hidiff.profiling.train_speed import (SpeedCase, format_table, parse_batch_size, refuse_variant_keys,
                                              run_case, variant_specs)
    from hidiff.profiling.train_step import parse_checkpoint_levels
    from hidiff.utils.malloc import keep_freed_memory
    try:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        bad = [s for s in stages if s not in STAGE_FILES]
        if bad or not stages:
            raise HidiffError(f"--stages: expected 1 and/or 2, got {args.stages!r}")
        sizes = [parse_batch_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
        if args.no_checkpointing and args.checkpoint_levels is not None:
            raise HidiffError("--checkpoint-levels picks the checkpointing row's levels; --no-checkpointing leaves "
                              "the row out: give one of them")
        levels = [] if args.no_checkpointing else parse_checkpoint_levels(args.checkpoint_levels or "all")
        for stage in STAGE_FILES:  # before anything is measured
            refuse_variant_keys(stage_overrides(args.override, stage))
        if args.repeats < 1 or args.warmup < 0:
            raise HidiffError("--repeats must be >= 1 and --warmup >= 0")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise HidiffError("--device cuda: no CUDA device is available here")
        if args.threads:
            torch.set_num_threads(args.threads)
        kept = args.device == "cpu" and not args.system_malloc and keep_freed_memory()
        machine = describe_machine(args.device)
        results = []
        for stage in stages:
            for batch, size in sizes:
                case = SpeedCase(f"stage {stage}", str(REPO / STAGE_FILES[stage]), batch, size)
                specs = variant_specs(case, precisions=precisions, checkpoint_levels=levels,
                                      device=args.device, threads=args.threads,
                                      overrides=stage_overrides(args.override, stage), keep_memory=kept)
                results.append(run_case(case, specs, warmup=args.warmup, repeats=args.repeats,
                                        memory="none" if args.no_memory else "subprocess",
                                        log=lambda m: print(m, file=sys.stderr, flush=True)))
    except (HidiffError, RuntimeError) as exc:  # RuntimeError: a memory-measuring process failed
        print(f"train_speed.py: error: {exc}", file=sys.stderr)
        return 2
    malloc = "" if args.device != "cpu" else ("; freed memory kept for reuse (as the trainer)" if kept
                                               else "; the C library's malloc settings")
    print(format_table(results, machine_line(machine) + malloc, args.device))
    if args.json:
        from hidiff.utils.atomic import atomic_write_text
        payload = {"tool": "benchmarks/train_speed.py", "argv": list(argv if argv is not None else sys.argv[1:]),
                   "machine": machine, "threads": torch.get_num_threads(), "device": args.device,
                   "freed_memory_kept": bool(kept), "results": results}
        atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
