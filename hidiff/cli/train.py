"""The training command: ``hidiff-train`` and ``scripts/train.py``.

Single process::

    python scripts/train.py -opt options/stage1_gopro.yml [-o train.total_iter=1000 ...]

Distributed (one process per GPU; the YAML batch is per process)::

    torchrun --nproc_per_node=4 scripts/train.py -opt options/stage1_gopro.yml --launcher pytorch
    # multi-node: torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 ...

Resume: ``--resume auto`` continues the newest complete checkpoint of the
experiment (or starts fresh when there is none); ``--resume PATH`` a given
``training_states/<iter>.state``.  A changed configuration is refused unless
``--allow-config-change`` (the difference is printed).

Stopping: SIGINT (Ctrl-C), SIGTERM or SIGHUP finishes the current iteration, saves a
complete checkpoint of it and exits with code 4 (under torchrun every rank stops
at the same iteration); a second signal exits at once.

Exit codes: 0 done, 1 failed after the start (the run folder was being written, e.g. a
checkpoint could not be saved: the message and the run's log say why), 2 bad input
(refused by the checks: nothing was written), 3 stopped after too many non-finite steps,
4 stopped by a signal with the checkpoint saved.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Optional, Sequence

from hidiff.errors import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NONFINITE, EXIT_OK, EXIT_SIGNAL, ConfigError,
                           HidiffError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train a hidiff model from an option file.",
                                epilog="exit codes: 0 done, 1 failed after the start, 2 bad input (nothing written), "
                                       "3 too many non-finite steps, "
                                       "4 stopped by SIGINT/SIGTERM/SIGHUP (checkpoint saved; resume with --resume auto)")
    p.add_argument("-opt", "--opt", required=True, help="path to the option YAML file")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override an option, e.g. -o train.total_iter=1000 (repeatable)")
    p.add_argument("--force_yml", nargs="+", default=[], metavar="KEY:PATH=VALUE",
                   help="BasicSR spelling of --override")
    p.add_argument("--launcher", choices=("auto", "none", "pytorch"), default="auto",
                   help="'pytorch' under torchrun; 'auto' detects torchrun's environment (default)")
    p.add_argument("--resume", default=None, metavar="auto|PATH|none",
                   help="resume the newest complete checkpoint (auto), a given state file, or start fresh (none); "
                        "default: path.resume_state of the options, else none")
    p.add_argument("--auto_resume", "--auto-resume", action="store_true", help="same as --resume auto (BasicSR)")
    p.add_argument("--allow-config-change", "--allow_config_change", action="store_true",
                   help="resume even if the options differ from the checkpoint's (prints the difference)")
    p.add_argument("--stop-after", "--stop_after", type=int, default=None, metavar="N",
                   help="train at most N iterations in this session, save and exit (resume with --resume auto)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, train, return a process exit code (see the module docstring).

    A torchrun worker does not return: it leaves with that code at once (``distributed.end_worker``).
    """
    from hidiff.engine.distributed import end_worker  # deferred: the command imports without torch
    code = _train(argv)
    end_worker(code)
    return code


def _train(argv: Optional[Sequence[str]]) -> int:
    from hidiff.config import load_options  # deferred: the command imports without torch
    from hidiff.engine.nonfinite import NonFiniteLossError  # deferred: the command imports without torch
    from hidiff.engine.trainer import Trainer  # deferred: the command imports without torch

    parser = build_parser()
    args = parser.parse_args(argv)  # --local_rank is accepted and ignored (torchrun sets LOCAL_RANK)
    if args.auto_resume and args.resume not in (None, "auto"):
        parser.error(f"--auto_resume contradicts --resume {args.resume}; give one of them")
    resume = "auto" if args.auto_resume and args.resume is None else args.resume
    trainer = None
    try:
        if os.path.isdir(args.opt):
            raise ConfigError(f"-opt {args.opt}: this is a folder; expected an option file (a .yml file, e.g. "
                              f"options/demo_stage1.yml)")
        options = load_options(args.opt, list(args.override) + list(args.force_yml), is_train=True)
        trainer = Trainer(options, launcher=args.launcher, resume=resume,
                          allow_config_change=args.allow_config_change, stop_after=args.stop_after)
        result = trainer.fit()
    except NonFiniteLossError as exc:
        _say(f"training stopped: {exc}")
        return EXIT_NONFINITE
    except HidiffError as exc:
        if trainer is not None and trainer.writing:
            _say(f"training failed: {exc}")
            return EXIT_FAILED
        _say(f"error: {exc}")
        return EXIT_BAD_INPUT
    if result.stopped_by:
        _say(f"training stopped by {result.stopped_by} at iteration {result.last_iter}; its checkpoint is saved "
             f"(continue with --resume auto)")
        return EXIT_SIGNAL
    return EXIT_OK


def _say(message: str) -> None:
    """The closing line on stderr.  Its reader may be gone (a closed terminal, a killed command that piped
    it, which is often why the training stopped); the exit code must still tell what happened."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr = open(os.devnull, "w")   # nothing more to say: also spare the exit's flush


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
