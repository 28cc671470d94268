"""``hidiff-sweep``: train the variants of a sweep file over seeds, evaluate them, compare them.

    hidiff-sweep -opt options/stage2.yml --sweep benchmarks/sweeps/ablation.yml --jobs 2

The whole sweep file (and every run's options) is validated before the first run
starts.  Run it again after an interruption: finished runs are reused and the
others continue from their latest checkpoint.  Results land in
``<experiments_root>/sweeps/<name>/`` (results.md, results.csv, per_image.csv, charts).
Ctrl-C or SIGTERM reach each running training once: it finishes its iteration, saves its checkpoint and
stops (a second one ends them at once); if the sweep itself dies, even by SIGKILL, its trainings are sent
SIGHUP (Linux) and do the same.
When a run fails, the sweep stops the other running trainings the same way and exits 1; with
``--keep-going`` the others go on (runs that need the failed one are skipped) and it exits 1 at the end.
One sweep at a time per sweep folder: a second one is refused (exit 2) before it writes anything.
Exit codes: 0 done, 1 a run failed, 2 bad input (or the folder in use), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from hidiff.errors import HidiffError
from hidiff.sweep.report import write_report
from hidiff.sweep.runner import RunFailed, SweepRunner, SweepStopped
from hidiff.sweep.spec import load_sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hidiff-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-opt", "--opt", required=True, help="base training option file the variants override")
    p.add_argument("--sweep", required=True, help="sweep file (YAML)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default 1)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override an option of every training run, stage-1 runs included (repeatable)")
    p.add_argument("--eval-o", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override an option of every evaluation (repeatable)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (replaces the sweep file's)")
    p.add_argument("--keep-going", action="store_true",
                   help="when a run fails, let the others go on (and skip what needs the failed one) instead of "
                        "stopping them; the sweep still exits 1 and writes no report until every run has finished")
    p.add_argument("--check", action="store_true", help="validate the sweep and list its runs; run nothing")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sweep = load_sweep(args.sweep, args.opt, args.override, args.eval_o, seeds=args.seeds)
        runner = SweepRunner(sweep, jobs=args.jobs, keep_going=args.keep_going)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sweep '{sweep.name}': {len(sweep.variants)} variants x {len(sweep.seeds)} seeds, "
          f"{len(sweep.runs)} training runs -> {sweep.folder}", flush=True)
    for run in sweep.runs:
        print(f"  {run.name} ({run.stage}{', after ' + ', '.join(run.after) if run.after else ''})", flush=True)
    if args.check:
        return 0
    try:
        runner.hold_lock()      # the whole sweep and its report: one sweep per folder at a time
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        runner.execute()
        files = write_report(sweep.folder)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("finished runs are kept; run the same command again to continue", file=sys.stderr)
        return 1
    except SweepStopped as exc:
        print(f"{exc}: the running trainings saved their checkpoints; finished runs are kept, run the same "
              f"command again to continue", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, run the same command again to continue", file=sys.stderr)
        return 130
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        runner.release_lock()
    print(files["results.md"].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
