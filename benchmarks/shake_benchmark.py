"""The frozen camera-shake benchmark: the blurry input, deconvolution given the true kernel, and hidiff models.

    python benchmarks/shake_benchmark.py --photos ../shared/photos/test --tune-photos ../shared/photos/train \\
        --model demo=experiments/demo_stage2 --model default=path/to/weights

The set is one centred 256x256 pair per photo of ``--photos``: a camera-shake
kernel (hidiff.data.blur_kernels) on a 31 px canvas, Gaussian noise sigma 0.01,
8-bit, the true kernel kept beside it (``kernels/<key>.npy``).  It is written
once into ``--set`` and checked by sha256 on every later run
(hidiff/evaluation/shake_benchmark.py).

Wiener's balance and Richardson-Lucy's iterations (both given the true kernel,
scikit-image, per channel) are tuned by mean PSNR on pairs made the same way
from ``--tune-photos`` (training photos only); without it they are left out.
Each ``--model NAME=SOURCE`` is loaded by ``hidiff.load(SOURCE)`` and deblurs
every blurry crop with ``--seed``.  A NAME given again adds another training run
of the same recipe (another seed) to that row, which then shows the spread of
the runs' means; ``--baseline NAME`` adds every row's mean difference to NAME
with a 95 % interval over the images and the models' training runs (an ablation: ``--model
default=... --model no-prior=run1 --model no-prior=run2 --baseline default``;
hidiff/evaluation/intervals.py).  ``--self-ensemble`` also scores every model
with the x8 self-ensemble (the 8 flips/rotations averaged): a row 'NAME x8'.

Scores: RGB PSNR/SSIM over the whole image (MATLAB psnr/ssim on uint8).
Writes results.md, results.csv, per_image.csv and tuned.json into ``--out``
and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
ENSEMBLE_SUFFIX = " x8"


def build_parser() -> argparse.ArgumentParser:
    from hidiff.evaluation.shake_benchmark import CROP, KERNEL_SIZE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True, help="sharp test photos (e.g. ../shared/photos/test)")
    ap.add_argument("--tune-photos", type=Path, default=None,
                    help="sharp training photos that tune Wiener and Richardson-Lucy (without: both left out)")
    ap.add_argument("--tune-count", type=int, default=8, help="first N tuning photos used (sorted by name)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE",
                    help="a hidiff model to score: NAME labels its row, SOURCE goes to hidiff.load() "
                         "(weights folder, checkpoint, run folder or run name); repeatable, and a NAME given "
                         "again adds another run of that recipe (another training seed) to the same row")
    ap.add_argument("--baseline", default=None, metavar="NAME",
                    help="compare every row with this one (a --model NAME or 'blurry input'): mean PSNR "
                         "difference and a 95%% interval over the images and the models' training runs")
    ap.add_argument("--self-ensemble", action="store_true",
                    help="also score every model with the x8 self-ensemble (deblur(self_ensemble=True)): a row "
                         "'NAME x8' beside each model's row, at 8x its time")
    ap.add_argument("--seed", type=int, default=0, help="the models' prior-noise seed")
    ap.add_argument("--device", default="cpu", help="device of the models: cpu, cuda or auto")
    ap.add_argument("--set", type=Path, default=REPO / "benchmarks" / "out" / "shake" / "set",
                    help="folder of the frozen set (built on the first run, verified later)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "shake", help="results folder")
    ap.add_argument("--crop", type=int, default=CROP, help="pair size; another value is another benchmark")
    ap.add_argument("--kernel-size", type=int, default=KERNEL_SIZE,
                    help="kernel canvas; another value is another benchmark")
    return ap


def parse_models(specs: Sequence[str]) -> dict:
    """``['a=src1', 'a=src2', 'b=src3']`` -> ``{'a': ['src1', 'src2'], 'b': ['src3']}``: a name given again is
    another run (training seed) of the same recipe; names differ from the fixed rows, sources are not repeated."""
    from hidiff.errors import ConfigError
    from hidiff.evaluation.shake_benchmark import BLURRY
    models = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise ConfigError(f"--model '{spec}': expected NAME=SOURCE, e.g. demo=experiments/demo_stage2")
        if name == BLURRY:
            raise ConfigError(f"--model '{spec}': the name '{name}' is the fixed row of the blurry input")
        if any(source in sources for sources in models.values()):
            raise ConfigError(f"--model '{spec}': the source '{source}' is already given; each run is scored once")
        models.setdefault(name, []).append(source)
    return models


def machine() -> str:
    import torch
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads, load average {load}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    import hidiff
    from hidiff.data.image_io import list_images
    from hidiff.errors import ConfigError, HidiffError
    from hidiff.evaluation import shake_benchmark as sb

    def log(msg: str) -> None:
        print(msg, flush=True)

    params = sb.SetParams(crop=args.crop, kernel_size=args.kernel_size)
    try:
        models = parse_models(args.model)
        for what, folder in (("--photos", args.photos), ("--tune-photos", args.tune_photos)):
            if folder is not None and (not folder.is_dir() or not list_images(folder)):
                raise HidiffError(f"{what} '{folder}' does not exist or holds no images")
        if args.tune_count < 1:
            raise HidiffError(f"--tune-count must be >= 1, got {args.tune_count}")
        row_names = [*models, *(n + ENSEMBLE_SUFFIX for n in models if args.self_ensemble)]
        clash = [n for n in models if args.self_ensemble and n + ENSEMBLE_SUFFIX in models]
        if clash:
            raise ConfigError(f"--model {clash[0]}{ENSEMBLE_SUFFIX}=...: with --self-ensemble that name is the "
                              f"x8 row of --model {clash[0]}; name it otherwise")
        if args.baseline is not None and args.baseline not in (*row_names, sb.BLURRY):
            raise ConfigError(f"--baseline '{args.baseline}': not a --model NAME (given: {', '.join(row_names) or 'none'})"
                              f" nor '{sb.BLURRY}'")
        restorers = {name: [hidiff.load(source, device=args.device) for source in sources]
                     for name, sources in models.items()}
        seen: dict = {}
        for name, runs in restorers.items():
            for r in runs:
                if r.weights.unfinished:
                    print(f"warning: --model {name}={r.source} is an unfinished training ({r.weights.unfinished}); "
                          f"its scores say so in results.md", file=sys.stderr, flush=True)
                # the same weights under another spelling of the path, or copied, would pass for two seeds
                digest = tuple(sorted(r.sha256.items()))
                if digest in seen:
                    other = seen[digest]
                    raise ConfigError(f"--model {name}={r.source}: the same weights as '{other}' (sha256 equal); "
                                      f"each run is scored once (a run counted twice would pass for two seeds)")
                seen[digest] = r.source
        log("== set")
        sb.build_or_verify(args.photos.resolve(), args.set.resolve(), params, log=lambda m: log("  " + m.strip()))
        return run(args, params, restorers, log)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, params, restorers: dict, log) -> int:
    """Tune the references, score every method on the built set, write and print the results."""
    from hidiff.data.image_io import list_images
    from hidiff.evaluation import deconvolution as dc
    from hidiff.evaluation import shake_benchmark as sb
    from hidiff.utils.atomic import atomic_write_text

    methods = {}
    tuned = {}
    tuned_rows = set()
    if args.tune_photos is not None:
        log("== tuning Wiener and Richardson-Lucy on training photos")
        paths = list_images(args.tune_photos)[:args.tune_count]
        pairs = dc.training_pairs(paths, kernel_size=params.kernel_size, noise=(params.noise_sigma,) * 2,
                                  seed=params.seed + 1, crop=params.crop)
        best, scores = dc.tune_on_pairs(pairs)
        for m in dc.METHODS:
            log(f"  {m}: " + ", ".join(f"{p}: {s:.2f} dB" for p, s in scores[m].items()) + f" -> {best[m]}")
            tuned_rows.add(dc.label(m, best[m]))
            methods[dc.label(m, best[m])] = [lambda x, k, key, m=m: dc.deconvolve(x, k, m, best[m])]
        tuned = {"chosen": best, "mean_psnr": {m: {str(p): s for p, s in scores[m].items()} for m in scores},
                 "photos": [p.name for p in paths], "seed": params.seed + 1}
    for name, runs in restorers.items():
        methods[name] = [lambda x, k, key, r=r: r.deblur(x, seed=args.seed, key=key) for r in runs]
        if args.self_ensemble:
            methods[name + ENSEMBLE_SUFFIX] = [lambda x, k, key, r=r: r.deblur(x, seed=args.seed, key=key,
                                                                                self_ensemble=True) for r in runs]

    log("== scoring")
    rows = sb.score_set(args.set.resolve(), methods, log=lambda m: log("  " + m.strip()))
    header = [
        "# Frozen camera-shake benchmark",
        "",
        f"Command: `python benchmarks/shake_benchmark.py {shlex.join(args.argv)}`",
        "",
        f"Set: `{args.set}` (manifest sha256 {sb.set_digest(args.set.resolve())[:16]}): one centred "
        f"{params.crop}x{params.crop} pair per photo of `{args.photos}`, camera-shake kernel on a "
        f"{params.kernel_size} px canvas, noise sigma {params.noise_sigma}, 8-bit, seed {params.seed}.",
        "Scores: RGB PSNR/SSIM over the whole image (MATLAB psnr/ssim on uint8).",
        (f"Wiener/Richardson-Lucy: true kernel, tuned on {len(tuned['photos'])} photos of `{args.tune_photos}` "
         f"-> balance {tuned['chosen']['wiener']}, {int(tuned['chosen']['richardson_lucy'])} iterations."
         if tuned else "Wiener/Richardson-Lucy: not run (no --tune-photos)."),
    ] + [f"Model `{n}`{f' run {i}' if len(runs) > 1 else ''}: {r.description}, source `{r.source}`, "
         f"prior seed {args.seed}"
         + (f" (also with the x8 self-ensemble: row `{n}{ENSEMBLE_SUFFIX}`)" if args.self_ensemble else "")
         + (f"; **unfinished training: {r.weights.unfinished}**." if r.weights.unfinished else ".")
         for n, runs in restorers.items() for i, r in enumerate(runs)] + [
        f"Machine: {machine()}.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    if tuned:
        atomic_write_text(args.out / "tuned.json", json.dumps(tuned, indent=1, sort_keys=True) + "\n")
    else:
        (args.out / "tuned.json").unlink(missing_ok=True)  # an earlier run's tuning is not these results'
    files = sb.write_results(args.out, rows, header, baseline=args.baseline, trained={n for n in methods if n not in tuned_rows})
    print()
    print(files["results.md"].read_text(encoding="utf-8"))
    log("written: " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    sys.exit(main())
