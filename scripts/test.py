"""Test a model on every test set of an option file.

    python scripts/test.py -opt options/test_gopro.yml [--experiment NAME] [-o val.self_ensemble=true]
"""
import argparse
import logging
import sys


def main(argv=None) -> int:
    from hidiff.config import load_options
    from hidiff.errors import HidiffError
    from hidiff.runners.test_runner import run_test

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-opt", "--opt", required=True, help="test option file (YAML)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override an option, e.g. -o val.tile.size=256 (repeatable)")
    ap.add_argument("--force_yml", nargs="+", default=[], help="BasicSR-style overrides a:b=value")
    ap.add_argument("--experiment", help="take net_<x>_latest.pth of this run in experiments/")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--limit", type=int, help="only the first N images of each set")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    try:
        options = load_options(args.opt, args.override + args.force_yml, is_train=False)
        summaries = run_test(options, device=args.device, experiment=args.experiment, limit=args.limit)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from hidiff.evaluation.report import summary_table_markdown
    print(summary_table_markdown(list(summaries.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
