"""Test a model on every test set of an option file.

    hidiff-test -opt options/test_gopro.yml                        # the weights the option file names
    hidiff-test -opt options/test_gopro.yml --experiment NAME      # a run's newest complete checkpoint
    hidiff-test -opt options/test_gopro.yml --weights DIR | --checkpoint FILE

Weights given on the command line win over the option file's; two command-line
sources (including -o path.pretrain_network_<x>) that name different weights
are an error.  Weights that record their run's settings (an experiment, a
training state) are restored with that run's networks and diffusion schedule;
an option file that says otherwise is an error.  Results:
results/<name>/<experiment, release folder or checkpoint>/, replaced as a whole
by a re-run; every summary names the weight files and their sha256.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, List, Optional, Sequence, Tuple

from hidiff.cli.arguments import add_prior_seed_arguments, positive_int
from hidiff.errors import ConfigError, HidiffError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hidiff-test", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-opt", "--opt", required=True, help="test option file (YAML)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override an option, e.g. -o val.tile.size=256 (repeatable)")
    ap.add_argument("--force_yml", nargs="+", default=[], help="BasicSR-style overrides a:b=value")
    ap.add_argument("--experiment", metavar="NAME", help="the newest complete checkpoint of this run")
    ap.add_argument("--experiments-root", help="where --experiment looks (default: the option file's "
                                               "path.experiments_root)")
    ap.add_argument("--weights", metavar="DIR", help="a model or release folder: net_g.pth, net_le_dm.pth, net_d.pth; "
                                                      "one file: --checkpoint")
    ap.add_argument("--checkpoint", metavar="FILE", help="a training state or one file holding the networks")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--limit", type=positive_int, help="only the first N images of each set")
    add_prior_seed_arguments(ap)
    return ap


def _override_files(overrides: Sequence[str]) -> dict:
    """``{suffix: file}`` set on the command line with -o path.pretrain_network_<x>=FILE.

    The value is read as the loader reads it (YAML: quotes removed, ``null`` is no file).
    """
    from hidiff.config.yaml_io import override_key, parse_scalar  # deferred: the command imports without torch

    out = {}
    for item in overrides:
        key, _, raw = item.partition("=")
        parts = override_key(key)
        if len(parts) == 2 and parts[0] == "path" and parts[1].startswith("pretrain_network_"):
            suffix = parts[1][len("pretrain_network_"):]
            value = parse_scalar(raw)
            if value is None or value == "":
                out.pop(suffix, None)
            else:
                out[suffix] = str(value)
    return out


def command_line_weights(args, options) -> Optional[Any]:
    """The weights the command line names (one source, or several that agree), else None."""
    from hidiff.runners.weights import (  # deferred: the command imports without torch
        from_checkpoint, from_experiment, from_files, from_release)

    param_key = "params_ema" if options.val.use_ema else "params"
    sources: List[Tuple[str, Any]] = []
    if args.experiment:
        root = args.experiments_root or options.path.experiments_root
        sources.append((f"--experiment {args.experiment}", from_experiment(root, args.experiment, param_key)))
    if args.weights:
        sources.append((f"--weights {args.weights}", from_release(args.weights, param_key)))
    if args.checkpoint:
        sources.append((f"--checkpoint {args.checkpoint}", from_checkpoint(args.checkpoint, param_key)))
    if not sources:
        return None
    files = _override_files(args.override + args.force_yml)
    if files:
        sources.append(("-o path.pretrain_network_<x>", from_files(files, param_key=param_key)))
    (first_name, first), *others = sources
    for name, other in others:
        differ = first.same_tensors(other)
        if differ:
            raise ConfigError(f"{first_name} and {name} name different weights (net_{', net_'.join(differ)} "
                              f"differ): {first.describe()} vs {other.describe()}; give only one of them")
    with_config = [w for _, w in sources if w.config is not None]
    return with_config[0] if with_config else first


def prepare(args):
    """(options, weights or None), validated; nothing is written.

    With weights on the command line, the option file's weight paths
    (``path.pretrain_network_<x>``, ``datasets.<set>.weights``) are dropped, so
    nothing checks or loads files that are not used.
    """
    from hidiff.config import load_options  # deferred: the command imports without torch
    from hidiff.config.load import apply_overrides  # deferred: the command imports without torch
    from hidiff.config.yaml_io import load_yaml  # deferred: the command imports without torch
    from hidiff.engine.preflight import check_testing  # deferred: the command imports without torch
    from hidiff.runners.test_runner import with_run_settings  # deferred: the command imports without torch

    overrides = args.override + args.force_yml
    options = load_options(args.opt, overrides, is_train=False)
    weights = command_line_weights(args, options)
    if weights is not None:
        raw = apply_overrides(dict(load_yaml(args.opt)), overrides)
        options = with_run_settings(raw, weights, str(args.opt), str(args.opt))
    check_testing(options)
    return options, weights


def main(argv: Optional[Sequence[str]] = None) -> int:
    from hidiff.cli.deblur import check_weight_arguments  # deferred: the command imports without torch
    from hidiff.runners.test_runner import run_test  # deferred: the command imports without torch

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    try:
        if args.std_map and args.prior_seeds < 2:  # a usage error, before any weights are read
            raise ConfigError("--std-map needs --prior-seeds K with K >= 2")
        check_weight_arguments(args)
        options, weights = prepare(args)
        summaries = run_test(options, weights, device=args.device, limit=args.limit, prior_seeds=args.prior_seeds,
                             prior_image=args.prior_image, std_map=args.std_map)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from hidiff.evaluation.report import summary_table_markdown  # deferred: the command imports without torch
    print(summary_table_markdown(list(summaries.values())))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
