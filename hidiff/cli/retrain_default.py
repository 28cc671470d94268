"""The one command that retrains hidiff's default model: ``scripts/retrain_default.py``.

See hidiff/runners/retrain_default.py for the steps.  Exit codes: 0 done, 2 bad input
(nothing was written or started), 4 stopped by SIGINT/SIGTERM (the checkpoint is saved;
run the same command again to continue), else the failing training's code (1 failed, 3 non-finite
losses; a training that refused its input, its code 2, gives 1, since earlier steps may have run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from hidiff.errors import EXIT_BAD_INPUT, HidiffError
from hidiff.runners import retrain_default as rd


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="retrain_default.py", description=rd.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, action="append", default=[], metavar="FOLDER",
                    help="gather these photos (and scikit-image's) into the recipe's sharp_root first; repeatable")
    ap.add_argument("--ablation-seeds", type=int, default=0, metavar="N",
                    help="also train the no-prior ablation (default_plain.yml) with N seeds (default: %(default)s)")
    ap.add_argument("--ablation-jobs", type=int, default=1, metavar="J",
                    help="train J of the ablation's seeds at once, the threads shared out among them "
                         "(default: %(default)s)")
    ap.add_argument("--ablation-only", action="store_true",
                    help="train only the ablation's seeds (needs --ablation-seeds): no stage 1, stage 2 or export")
    ap.add_argument("--export", type=Path, default=Path("experiments/default_model"), metavar="DIR",
                    help="the model folder written at the end (default: %(default)s)")
    ap.add_argument("--card", type=Path, default=None, metavar="FILE",
                    help="the model card copied into it (default: docs/default_model.md beside the options folder)")
    ap.add_argument("--options-dir", type=Path, default=Path("options"), metavar="DIR",
                    help="where the recipe's option files are (default: %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="print every step and how far it has come; start nothing")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="an override given to every training of the recipe (repeatable)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    card = args.card
    if card is None and (args.options_dir.parent / "docs" / "default_model.md").is_file():
        card = args.options_dir.parent / "docs" / "default_model.md"
    try:
        plan = rd.make_plan(args.options_dir, args.override, photos=args.photos, ablation_seeds=args.ablation_seeds,
                            ablation_jobs=args.ablation_jobs, export=args.export, card=card,
                            ablation_only=args.ablation_only)
        if args.dry_run:
            print("\n".join(rd.describe(plan)))
            return 0
        return rd.run(plan)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
