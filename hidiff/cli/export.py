"""Export a trained or released model's inference graph to TorchScript and/or ONNX, or as a model folder.

    hidiff-export --weights experiments/pretrained_models/HI_Diff_GoPro -o exported/gopro_256 --height 256 --width 256
    hidiff-export --checkpoint model.pth -o exported/model --format onnx --check
    hidiff-export --experiment my_stage2_run -o models/mine --format model --half --card CARD.md

``--format model`` writes a model folder at OUT (net_<x>.pth, model.yml with the run's
network and diffusion options, MODEL_CARD.md from --card): what ``--weights`` and
``hidiff.load()`` read without any option file.  ``--half`` stores float16 and
verifies that no restored pixel moves by more than 1/255 (hidiff/runners/model_folder.py).
It stores the weights as they are, so the graph flags (--timesteps, --height/--width,
--opset, --static-onnx, --check) are refused with it.

Writes OUT.pt and/or OUT.onnx with inputs image (1,3,H,W) in [0,1] and noise
x_T (1,16,4*embed_dim of the latent encoder): (1,16,256) for the authors' models, (1,16,64)
for the default model; see hidiff/inference/export.py.  Both run any H, W that are
multiples of 8 (--height/--width is the example size; --static-onnx fixes the
ONNX graph to it).  --check compares each file with eager PyTorch on a random
input and prints the largest difference.  Weights with NaN/Inf values, or a
model whose output on the example input is not finite, are refused before
anything is written.  Every file is written under a temporary name and renamed only
once all were written, so a failed export (--overwrite included) leaves earlier
files as they were.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from hidiff.cli.arguments import positive_int
from hidiff.errors import CheckpointError, HidiffError
from hidiff.utils.optional import require


def build_parser() -> argparse.ArgumentParser:
    from hidiff.cli.deblur import add_weight_arguments  # deferred: the command imports without torch

    ap = argparse.ArgumentParser(prog="hidiff-export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weight_arguments(ap)
    ap.add_argument("-o", "--output", required=True,
                    help="output path; .pt / .onnx are added (a given .pt or .onnx ending is replaced)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing .pt / .onnx files")
    ap.add_argument("--format", choices=["torchscript", "onnx", "both", "model"], default="both",
                    help="model: a model folder at OUT (default: %(default)s)")
    ap.add_argument("--half", action="store_true", help="--format model: store the weights as float16")
    ap.add_argument("--card", metavar="FILE", help="--format model: a model card (markdown) to copy in")
    # None: not given (--format model refuses these flags; the graph formats use the defaults in GRAPH_DEFAULTS)
    ap.add_argument("--height", type=positive_int, default=None,
                    help="exported image height (multiple of 8; default 256)")
    ap.add_argument("--width", type=positive_int, default=None, help="exported image width (multiple of 8; default 256)")
    ap.add_argument("--opset", type=positive_int, default=None,
                    help="ONNX opset (at least 18, the first that torch's exporter writes; default 18)")
    ap.add_argument("--static-onnx", action="store_true", help="fix the ONNX graph to --height x --width")
    ap.add_argument("--check", action="store_true", help="verify each file against eager mode")
    return ap


MIN_OPSET = 18  # = hidiff.inference.export.OLDEST_ONNX_OPSET (not imported: this module loads without torch)
#: the example size and opset of a TorchScript / ONNX export when not given
GRAPH_DEFAULTS = {"height": 256, "width": 256, "opset": MIN_OPSET}
#: flags that only an inference graph (TorchScript / ONNX) reads: --format model copies the weights as they are
GRAPH_FLAGS = {"timesteps": "--timesteps", "height": "--height", "width": "--width", "static_onnx": "--static-onnx",
               "check": "--check", "opset": "--opset"}


def output_files(out: Path, fmt: str) -> dict:
    """``{format: file}`` for ``-o out``: ``out.pt`` / ``out.onnx``; a ``.pt`` or ``.onnx`` ending given with
    ``-o`` is replaced, any other dot in the name is kept (``gopro_v1.5`` -> ``gopro_v1.5.pt``)."""
    base = out.with_suffix("") if out.suffix.lower() in (".pt", ".onnx") else out
    kinds = {"torchscript": ".pt", "onnx": ".onnx"}
    wanted = kinds if fmt == "both" else {fmt: kinds[fmt]}
    return {k: base.with_name(base.name + ext) for k, ext in wanted.items()}


def check_example_output(pipeline, weights, height: int, width: int) -> None:
    """Refuse a model whose output on the example input holds NaN/Inf values."""
    import torch  # deferred: the command imports without torch

    from hidiff.inference.export import InferenceGraph, example_inputs  # deferred: the command imports without torch

    with torch.no_grad():
        out = InferenceGraph(pipeline).eval()(*example_inputs(pipeline, height, width))
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"the model gives NaN/Inf values on the {height}x{width} example input with the "
                              f"weights {weights.describe()}; nothing was exported")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from hidiff.cli.deblur import load_pipeline  # deferred: the command imports without torch
    from hidiff.inference.export import (  # deferred: the command imports without torch
        export_onnx, export_torchscript, parity, size_fixed_modules)

    ap = build_parser()
    args = ap.parse_args(argv)
    out = Path(args.output)
    if args.format != "model" and (args.half or args.card):
        ap.error("--half and --card go with --format model")
    if args.format == "model":
        given = [flag for key, flag in GRAPH_FLAGS.items() if getattr(args, key) not in (None, False)]
        if given:
            ap.error(f"{', '.join(given)} {'go' if len(given) > 1 else 'goes'} with --format torchscript, onnx or "
                     f"both: --format model writes "
                     f"the weights and their options as they are (no example size, diffusion steps or check); "
                     f"remove {', '.join(given)}")
    else:
        for key, value in GRAPH_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    card = None
    if args.card:
        try:
            card = Path(args.card).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            ap.error(f"--card {args.card}: cannot read it as UTF-8 text ({exc})")
    if args.format in ("onnx", "both") and args.opset < MIN_OPSET:
        ap.error(f"--opset {args.opset}: torch's ONNX exporter writes opset {MIN_OPSET} or newer")
    try:
        if args.format == "model":
            return _model_folder(args, out, card)
        targets = output_files(out, args.format)
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing and not args.overwrite:
            raise HidiffError(f"{', '.join(existing)} already exist(s); use --overwrite to replace, or another -o")
        if args.format in ("onnx", "both"):  # before anything is built or written
            require("onnx", "export", "ONNX export")
            require("onnxscript", "export", "ONNX export")
        pipeline, description, weights = load_pipeline(args)
        print(f"model: {description}")
        check_example_output(pipeline, weights, args.height, args.width)
        meta = {"model": description, "weights": weights.info()}
        staged = {kind: _staging_name(path) for kind, path in targets.items()}
        try:  # every file under a temporary name first: a failure leaves the earlier files (--overwrite) as they were
            if args.format in ("onnx", "both"):  # ONNX first: it can still refuse (e.g. the opset)
                export_onnx(pipeline, staged["onnx"], height=args.height, width=args.width, opset=args.opset,
                            dynamic=not args.static_onnx, metadata=meta)
            if args.format in ("torchscript", "both"):
                export_torchscript(pipeline, staged["torchscript"], height=args.height, width=args.width,
                                   metadata=meta)
            # only once every file was written, and all or none: the files of one command
            _replace_all([(path, targets[kind]) for kind, path in staged.items()])
        finally:
            for path in staged.values():
                path.unlink(missing_ok=True)
        written = list(targets.items())
        fixed = size_fixed_modules(pipeline.net_g)
        for kind, path in written:
            print(f"wrote {path}" + (f" (runs at {args.height}x{args.width} only: {', '.join(fixed)})"
                                     if fixed else ""))
            if args.check:
                diff = parity(pipeline, path, kind, height=args.height, width=args.width)
                print(f"max |{kind} - eager| = {diff:.3g}")
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _replace_all(pairs) -> None:
    """Rename each (staged file, target) pair, all or none: an earlier target stays reachable under a hard
    link until every rename succeeded, and is put back if one fails (a second rename failing left the first
    target replaced and the second not)."""
    backups, done = {}, []
    try:
        for new, target in pairs:
            if target.exists():
                backup = target.with_name(f".{target.name}.before-{os.getpid()}")
                backup.unlink(missing_ok=True)
                os.link(target, backup)
                backups[target] = backup
            os.replace(new, target)
            done.append(target)
    except OSError as exc:
        for target in done:
            if target in backups:
                os.replace(backups[target], target)
            else:
                target.unlink(missing_ok=True)
        raise HidiffError(f"could not move the exported files into place ({exc}); every earlier file is kept as "
                          f"it was and nothing new was left") from None
    finally:
        for backup in backups.values():
            backup.unlink(missing_ok=True)


def _staging_name(path: Path) -> Path:
    """A temporary name for ``path`` in its folder (same file system, so the final rename is atomic)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def _model_folder(args, out: Path, card: Optional[str]) -> int:
    from hidiff.cli.deblur import load_weights  # deferred: the command imports without torch
    from hidiff.runners.model_folder import write_model_folder  # deferred: the command imports without torch
    from hidiff.runners.test_runner import select_device  # deferred: the command imports without torch

    weights = load_weights(args)
    report = write_model_folder(weights, out, half=args.half, card=card, device=select_device(args.device))
    print(f"wrote model folder {report['folder']}: {', '.join(report['files'])} ({report['dtype']}, "
          f"{report['bytes'] / 1e6:.2f} MB of weights; largest change of the check image's output "
          f"{report['max_abs_diff_vs_source']:.3g})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
