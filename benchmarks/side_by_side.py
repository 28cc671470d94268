"""Training throughput of two arrangements of a CPU, timed in alternation.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/side_by_side.py [--compare jobs|malloc|official|official-ckpt|recompute|branches|official-branches]
        [--checkpoint-levels all|1,refinement|...] [--opt options/default_plain.yml] [--batch 8] [--size 128]
        [--threads 2] [--jobs 2] [--seconds 120] [--rounds 3] [--json out.json]

``--compare jobs`` (default): one training process on ``--threads`` threads against ``--jobs`` independent
trainings side by side on ``threads // jobs`` each (an ablation's seeds: ``retrain_default.py
--ablation-jobs``).  ``--compare malloc``: one training with the system's malloc against one whose freed
memory is kept for reuse (``train.keep_cpu_memory``, the trainer's default on a CPU).  ``--compare
official``: the official code's formulation with the system's malloc against hidiff's default training path
(e.g. ``--opt options/stage1_gopro.yml --batch 4 --seconds 300``); ``--compare official-ckpt``: the same
reference against hidiff's default path with every U-Net stage checkpointed (``train.checkpoint_levels: [1, 2, 3,
4, refinement]``), or those of ``--checkpoint-levels`` (e.g. ``1,refinement``: the full-resolution stages).
``--compare recompute``: hidiff's default path with the feed-forward's depthwise outputs and gate stored
(``train.recompute_ffn: false``) against the default, which recomputes them in backward (the same gradients;
the time it costs, the memory it saves).  ``--compare branches``: hidiff's default path against the same with
``train.recompute_branches`` (each block's branches keep only their matrix products' outputs);
``--compare official-branches``: the official formulation against the latter.  The two phases
alternate ``--rounds`` times; every process counts the training steps it completes in the same ``--seconds``
window, which starts once every process of the phase has taken a warm-up step, and its rate is those steps
over the wall time they took (not over the window, which the unfinished last step would bias).  Prints
samples/s per phase,
their ratio per round, CPU seconds and page faults per step (hidiff/profiling/side_by_side.py), with the
machine and load.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", choices=("jobs", "malloc", "official", "official-ckpt", "recompute", "branches",
                                          "official-branches"), default="jobs",
                    help="the two arrangements")
    ap.add_argument("--checkpoint-levels", default=None, metavar="LEVELS",
                    help="--compare official-ckpt: the U-Net levels (1-4) and/or stage names checkpointed, "
                         "comma-separated, as train.checkpoint_levels (default all: 1,2,3,4,refinement)")
    ap.add_argument("--opt", default=str(REPO / "options" / "default_plain.yml"), help="training option file")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="square crop size")
    ap.add_argument("--threads", type=int, default=2, help="threads of the single training")
    ap.add_argument("--jobs", type=int, default=2, help="--compare jobs: trainings side by side (threads // jobs each)")
    ap.add_argument("--seconds", type=float, default=120.0, help="counting window of every phase")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="option override of both arrangements (repeatable; not train.checkpoint_levels or "
                         "train.keep_cpu_memory, which each arrangement sets)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    for name in ("batch", "size", "threads", "jobs", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: expected an integer >= 1, got {getattr(args, name)}")
    if args.seconds <= 0:
        ap.error(f"--seconds: expected a positive number, got {args.seconds}")
    if args.checkpoint_levels is not None and args.compare != "official-ckpt":
        ap.error(f"--checkpoint-levels: only --compare official-ckpt checkpoints, got --compare {args.compare}")
    if not Path(args.opt).is_file():
        ap.error(f"--opt {args.opt}: file not found")
    sys.path.insert(0, str(REPO))
    from hidiff.profiling.machine import describe_machine, machine_line
    from hidiff.errors import ConfigError
    from hidiff.profiling.side_by_side import arrangements, compare, format_report
    from hidiff.profiling.train_step import parse_checkpoint_levels
    from hidiff.profiling.train_speed import refuse_variant_keys
    try:
        levels = parse_checkpoint_levels(args.checkpoint_levels or "all")
        refuse_variant_keys(args.override, {
            ("train", "checkpoint_levels"): "--compare official-ckpt with --checkpoint-levels",
            ("train", "keep_cpu_memory"): "--compare malloc (the official arrangements use the system's malloc)"})
    except ConfigError as exc:
        ap.error(str(exc))
    pair = arrangements(args.compare, args.threads, args.jobs, levels)
    result = compare(args.opt, args.batch, (args.size, args.size), pair, seconds=args.seconds,
                     rounds=args.rounds, overrides=args.override, log=lambda m: print(m, file=sys.stderr, flush=True))
    machine = describe_machine("cpu")
    print(format_report(result, machine_line(machine)))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "machine": machine}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
