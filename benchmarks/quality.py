"""Quality benchmark: the papers' ablations at a small, fixed CPU budget.

    python benchmarks/quality.py --train DIR --test DIR --iters1 300 --iters2 200 --jobs 2

Every learned variant is trained through the real trainer (``scripts/train.py``
on generated option files in ``--work``) on synthetic camera-shake blur of the
``--train`` photos, then restored through the inference pipeline on frozen
blurry/sharp pairs of the ``--test`` photos (``hidiff.data.synthetic_set``; the
true kernels are kept for the classical baselines).  Variants:

* HI-Diff-small: stage 1 (U-Net + latent encoder on the GT prior), then stage 2
  (latent encoder on the blurry image + T-step diffusion, end to end) for
  T in {1, 4, 8};
* the same U-Net without prior (the paper's baseline, ``use_prior: false``);
* HI-Diff with a single-scale prior (``prior_pyramid: false``);
* Swintormer-small with and without the HI-Diff prior;
* classical references: the blurry input, Wiener and Richardson-Lucy
  deconvolution given the true kernel (balance / iterations tuned once on a
  pair made from a *training* photo).

Budget: stage-1 runs train ``--iters1`` iterations and stage-2 runs ``--iters2``;
a prior-free variant trains ``iters1 + iters2`` iterations, so every U-Net gets
the same number of updates.  Same data stream (seed), batch, patch size,
optimiser and schedule for everyone.

Writes ``results.md`` (table), ``results.json``, ``per_image.csv`` and
``psnr_chart.png`` (matplotlib if installed, else drawn with OpenCV) in ``--work``.
Defaults: the scikit-image photos (``hidiff.runners.demo``), so it runs anywhere.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- small networks
UNET = {"type": "Transformer", "dim": 16, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
        "heads": [1, 2, 4, 8], "ffn_expansion_factor": 2.66, "embed_dim": 16, "group": 4}
SWIN = {"type": "Swintormer", "inp_channels": 3, "out_channels": 3, "dim": 16, "num_blocks": [1, 1, 1, 1],
        "num_refinement_blocks": 1, "heads": [1, 2, 4, 8], "window_size": 4, "ffn_expansion_factor": 2.66}
SWIN_MULTIPLE = 2 * 8 * SWIN["window_size"]  # Swintormer pads to multiples of 2 * 2**3 * window
LE = {"type": "latent_encoder_gelu", "embed_dim": 16, "block_num": 2, "group": 4}
DENOISER = {"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 64, "block_num": 3,
            "group": 4}


@dataclass
class Variant:
    """One row of the table: how it is trained and what it is."""

    name: str
    label: str
    kind: str                       # 'hidiff' (stage 1 -> stage 2), 'oracle' (stage 1), 'plain', 'classical'
    net_g: dict = field(default_factory=dict)
    timesteps: int = 8
    stage1: Optional[str] = None    # name of the shared stage-1 run
    pad: int = 8


def variants() -> List[Variant]:
    unet_plain = {**UNET, "use_prior": False}
    single = {**UNET, "prior_pyramid": False}
    swin_prior = {**SWIN, "prior": "hidiff_latent", "embed_dim": 16, "group": 4}
    return [
        Variant("blurry", "blurry input", "classical"),
        Variant("wiener", "Wiener deconvolution, true kernel", "classical"),
        Variant("richardson_lucy", "Richardson-Lucy, true kernel", "classical"),
        Variant("unet_noprior", "U-Net without prior (paper baseline)", "plain", unet_plain),
        Variant("hidiff_s1_oracle", "HI-Diff-small stage 1, GT prior (oracle)", "oracle", UNET, stage1="s1_hidiff"),
        Variant("hidiff_T1", "HI-Diff-small, T=1", "hidiff", UNET, 1, "s1_hidiff"),
        Variant("hidiff_T4", "HI-Diff-small, T=4", "hidiff", UNET, 4, "s1_hidiff"),
        Variant("hidiff_T8", "HI-Diff-small, T=8", "hidiff", UNET, 8, "s1_hidiff"),
        Variant("hidiff_single_T8", "HI-Diff-small, single-scale prior, T=8", "hidiff", single, 8, "s1_single"),
        Variant("swin_noprior", "Swintormer-small without prior", "plain", SWIN, pad=SWIN_MULTIPLE),
        Variant("swin_prior_T8", "Swintormer-small + HI-Diff prior, T=8", "hidiff", swin_prior, 8, "s1_swin",
                pad=SWIN_MULTIPLE),
    ]


# ----------------------------------------------------------------------------- option files
@dataclass
class Budget:
    iters1: int
    iters2: int
    batch: int
    patch: int
    kernel_size: int
    noise: List[float]
    lr: float
    seed: int


def _train_block(iters: int, budget: Budget, diffusion_loss: bool) -> dict:
    block = {"total_iter": iters,
             "optim_total": {"type": "AdamW", "lr": budget.lr, "weight_decay": 1e-4, "betas": [0.9, 0.999]},
             "scheduler": {"type": "CosineAnnealingRestartCyclicLR", "periods": [iters], "restart_weights": [1],
                           "eta_mins": [budget.lr * 0.02]},
             "use_grad_clip": True, "grad_clip_norm": 0.5, "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0}}
    if diffusion_loss:
        block["pixel_diff_opt"] = {"type": "L1Loss", "loss_weight": 1.0}
    return block


def option_dict(name: str, model_type: str, nets: Dict[str, dict], iters: int, budget: Budget, work: Path,
                train_dir: Path, *, pad: int, timesteps: Optional[int] = None, stage1: Optional[str] = None) -> dict:
    """A complete training option file for one run."""
    opt = {
        "name": name, "model_type": model_type, "num_gpu": 0, "manual_seed": budget.seed,
        "datasets": {"train": {"name": "quality_train", "type": "SyntheticBlurDataset",
                               "sharp_root": str(train_dir), "gt_size": budget.patch,
                               "kernel_size": budget.kernel_size, "noise_sigma": budget.noise,
                               "length": 64 * budget.batch, "seed": budget.seed,
                               "batch_size_per_gpu": budget.batch, "num_worker_per_gpu": 0}},
        **{f"network_{k}": v for k, v in nets.items()},
        "path": {"experiments_root": str(work / "experiments")},
        "train": _train_block(iters, budget, model_type == "HI_Diff_S2"),
        "val": {"val_freq": 10 ** 9, "window_size": pad},
        "logger": {"print_freq": max(1, iters // 5), "save_checkpoint_freq": iters, "use_tb_logger": False,
                   "keep_last": 1},
    }
    if timesteps is not None:
        opt["diffusion_schedule"] = {"apply_ldm": False, "schedule": "linear", "timesteps": timesteps,
                                     "linear_start": 0.1, "linear_end": 0.99}
    if stage1 is not None:
        opt["path"]["stage1"] = stage1
    return opt


@dataclass
class Job:
    name: str
    option_file: Path
    after: List[str]


def make_jobs(chosen: Sequence[Variant], budget: Budget, work: Path, train_dir: Path) -> List[Job]:
    """Option files for every training run the chosen variants need (shared stage-1 runs once)."""
    from hidiff.config.yaml_io import dump_yaml
    from hidiff.utils.atomic import atomic_write_text

    le1 = {**LE, "in_chans": 6, "stage": 1}
    le2 = {**LE, "in_chans": 3, "stage": 2}
    jobs: Dict[str, Job] = {}
    (work / "options").mkdir(parents=True, exist_ok=True)

    def add(name: str, opt: dict, after: List[str]) -> None:
        path = work / "options" / f"{name}.yml"
        atomic_write_text(path, dump_yaml(opt))
        jobs[name] = Job(name, path, after)

    for v in chosen:
        if v.kind == "plain":
            add(v.name, option_dict(v.name, "PlainRestoration", {"g": v.net_g}, budget.iters1 + budget.iters2,
                                    budget, work, train_dir, pad=v.pad), [])
        elif v.kind in ("hidiff", "oracle"):
            if v.stage1 not in jobs:
                add(v.stage1, option_dict(v.stage1, "HI_Diff_S1", {"g": v.net_g, "le": le1}, budget.iters1, budget,
                                          work, train_dir, pad=v.pad), [])
            if v.kind == "oracle":
                continue
            add(v.name, option_dict(v.name, "HI_Diff_S2", {"g": v.net_g, "le": le1, "le_dm": le2, "d": DENOISER},
                                    budget.iters2, budget, work, train_dir, pad=v.pad, timesteps=v.timesteps,
                                    stage1=v.stage1), [v.stage1])
    return list(jobs.values())


def finished(work: Path, name: str) -> bool:
    return (work / "experiments" / name / "models" / "net_g_latest.pth").is_file()


def run_jobs(jobs: List[Job], work: Path, *, parallel: int, threads: int, reuse: bool, log: Callable) -> Dict[str, float]:
    """Run the training jobs, at most ``parallel`` at a time, each after its dependencies; returns seconds per job."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if not (reuse and finished(work, j.name))]
    done = {j.name for j in jobs} - {j.name for j in pending}
    for name in sorted(done):
        log(f"  reusing finished run {name}")
    running: Dict[str, tuple] = {}
    seconds: Dict[str, float] = {}
    while pending or running:
        for j in list(pending):
            if len(running) >= parallel:
                break
            if all(a in done for a in j.after):
                out = open(work / "logs" / f"{j.name}.log", "w")
                cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "-opt", str(j.option_file),
                       "--launcher", "none"]
                running[j.name] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work),
                                   time.time(), out)
                pending.remove(j)
                log(f"  start {j.name}")
        time.sleep(0.5)
        for name, (proc, t0, out) in list(running.items()):
            if proc.poll() is None:
                continue
            out.close()
            del running[name]
            if proc.returncode != 0:
                for p, _, o in running.values():
                    p.kill()
                    o.close()
                tail = (work / "logs" / f"{name}.log").read_text().splitlines()[-20:]
                raise SystemExit(f"training run {name} failed (exit {proc.returncode}):\n" + "\n".join(tail))
            seconds[name] = time.time() - t0
            done.add(name)
            log(f"  done  {name} in {seconds[name]:.0f} s")
    return seconds


# ----------------------------------------------------------------------------- classical baselines
def _pad_reflect(img: np.ndarray, r: int) -> np.ndarray:
    return np.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")


def deconvolve(blurry: np.ndarray, kernel: np.ndarray, method: str, param: float) -> np.ndarray:
    """Non-blind deconvolution of a uint8 RGB image per channel (reflect-padded against border ringing)."""
    from skimage import restoration
    r = kernel.shape[0]
    x = _pad_reflect(blurry.astype(np.float64) / 255.0, r)
    out = np.empty_like(x)
    for c in range(x.shape[2]):
        if method == "wiener":
            out[..., c] = restoration.wiener(x[..., c], kernel, balance=param, clip=True)
        else:
            out[..., c] = restoration.richardson_lucy(x[..., c], kernel, num_iter=int(param), clip=True)
    out = out[r:-r, r:-r]
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


WIENER_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
RL_GRID = (3, 5, 10, 20, 40, 80)


def tune_classical(train_dir: Path, budget: Budget, crop: int, log: Callable, photos: int = 3) -> Dict[str, float]:
    """Pick Wiener's balance and RL's iterations (best mean PSNR) once, on pairs made from *training* photos."""
    from hidiff.data.blur_kernels import synthesize_pair
    from hidiff.data.image_io import list_images, read_image
    from hidiff.data.sample_rng import key_rng
    from hidiff.data.synthetic_dataset import sharp_region
    from hidiff.metrics.psnr import psnr_uint8

    paths = list_images(train_dir)[:photos]
    pairs = []
    for path in paths:
        photo = read_image(path)
        side = min(crop, min(photo.shape[:2]) - budget.kernel_size + 1)
        region = sharp_region(photo, side, budget.kernel_size, source=str(path))
        pairs.append(synthesize_pair(region, key_rng(budget.seed + 7, path.stem), kernel_size=budget.kernel_size,
                                     noise_sigma=tuple(budget.noise)))
    best = {}
    for method, grid in (("wiener", WIENER_GRID), ("richardson_lucy", RL_GRID)):
        scores = {p: float(np.mean([psnr_uint8(deconvolve(q.blurry, q.kernel, method, p), q.sharp) for q in pairs]))
                  for p in grid}
        best[method] = max(scores, key=scores.get)
        log(f"  tuned {method} on {', '.join(p.name for p in paths)}: "
            + ", ".join(f"{p}: {s:.2f}" for p, s in scores.items()) + f" -> {best[method]}")
    return best


# ----------------------------------------------------------------------------- scoring
def load_pairs(test_set: Path) -> List[dict]:
    from hidiff.data.image_io import read_image_uint8
    pairs = []
    for p in sorted((test_set / "target").glob("*.png")):
        pairs.append({"key": p.stem, "gt": read_image_uint8(p),
                      "lq": read_image_uint8(test_set / "input" / p.name),
                      "kernel": np.load(test_set / "kernels" / f"{p.stem}.npy")})
    return pairs


def restore_learned(v: Variant, work: Path, pairs: List[dict], seed: int, threads: int) -> List[np.ndarray]:
    """Restore every pair with the variant's final weights through the inference pipeline."""
    import torch
    from hidiff.config import load_options
    from hidiff.inference.pipeline import seed_from_key
    from hidiff.models import build_model
    from hidiff.runners.test_runner import to_uint8
    from hidiff.runners.weights import experiment_weights, load_weights

    torch.set_num_threads(threads)
    run = v.stage1 if v.kind == "oracle" else v.name
    options = load_options(work / "options" / f"{run}.yml", is_train=False)
    model = build_model(options)
    load_weights(model, experiment_weights(work / "experiments", run, model.save_names))
    model.eval()

    def tensor(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).permute(2, 0, 1).float().div(255.0).unsqueeze(0)

    outs = []
    for pair in pairs:
        lq = tensor(pair["lq"])
        with torch.inference_mode():
            if v.kind == "oracle":  # stage 1 restores with the prior of the sharp image
                out = model.restore(lq, tensor(pair["gt"]))
            else:
                pipe = model.pipeline()
                if pipe.needs_prior:
                    g = torch.Generator().manual_seed(seed_from_key(pair["key"], seed))
                    out = pipe.restore(lq, noise=pipe.noise(1, generator=g))
                else:
                    out = pipe.restore(lq)
        outs.append(to_uint8(out[0]))
    return outs


def score(outs: List[np.ndarray], pairs: List[dict]) -> List[dict]:
    from hidiff.evaluation.protocols import get_protocol
    protocol = get_protocol("gopro")
    return [{"image": p["key"], **protocol.score_pair(o, p["gt"])} for o, p in zip(outs, pairs)]


# ----------------------------------------------------------------------------- report
def _params(v: Variant, work: Path) -> Optional[int]:
    """Parameters used at inference (U-Net + latent encoder + denoiser; stage 1: U-Net + encoder)."""
    if v.kind == "classical":
        return None
    import torch
    from hidiff.config import load_options
    from hidiff.models import build_model
    run = v.stage1 if v.kind == "oracle" else v.name
    with torch.device("meta"):
        model = build_model(load_options(work / "options" / f"{run}.yml", is_train=False))
    return sum(p.numel() for net in model.networks().values() for p in net.parameters())


def write_table(rows: List[dict], meta: dict, out: Path) -> str:
    from hidiff.utils.atomic import atomic_write_text
    base = next(r for r in rows if r["variant"] == "blurry")["psnr"]
    lines = [f"# Quality benchmark ({meta['test_pairs']} frozen test pairs, {meta['test_crop']} crops, "
             f"kernels up to {meta['kernel_size']} px)", "",
             f"Training: {meta['iters1']} stage-1 + {meta['iters2']} stage-2 iterations (prior-free: "
             f"{meta['iters1'] + meta['iters2']}), batch {meta['batch']} of {meta['patch']}x{meta['patch']}, "
             f"{meta['train_photos']} training photos, {meta['threads']} torch thread(s) per run. "
             f"Metrics: MATLAB-style PSNR / SSIM on uint8 RGB (the GoPro protocol).", "",
             "| variant | params (inference) | PSNR dB | SSIM | PSNR vs blurry | train s (incl. stage 1) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        params = f"{r['params']:,}" if r["params"] else "-"
        secs = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"
        lines.append(f"| {r['label']} | {params} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['psnr'] - base:+.2f} | {secs} |")
    lines += ["", f"Machine: {meta['machine']}. Wall time of the whole run: {meta['wall_seconds']:.0f} s.",
              f"Classical parameters tuned on training photos: Wiener balance {meta['tuned']['wiener']}, "
              f"Richardson-Lucy {meta['tuned']['richardson_lucy']} iterations."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out, text)
    return text


KIND_COLOURS = {"classical": (150, 150, 150), "plain": (221, 132, 82), "hidiff": (72, 120, 168),
                "oracle": (160, 190, 220)}  # RGB


def draw_chart(rows: List[dict], out: Path) -> None:
    """Horizontal PSNR bars, one per variant (matplotlib if installed, else OpenCV)."""
    from hidiff.utils.atomic import atomic_write_bytes
    labels = [r["label"] for r in rows]
    values = [r["psnr"] for r in rows]
    rgb = [KIND_COLOURS.get(r.get("kind", ""), (72, 120, 168)) for r in rows]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    if plt is not None:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1))
        ax.barh(labels[::-1], values[::-1], color=[tuple(v / 255 for v in c) for c in rgb[::-1]])
        ax.set_xlim(min(values) - 1, max(values) + 0.5)
        ax.set_xlabel("PSNR (dB)")
        for i, v in enumerate(values[::-1]):
            ax.text(v + 0.05, i, f"{v:.2f}", va="center")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic_write_bytes(out, buf.getvalue())
        return
    import cv2
    row_h, left, width = 34, 390, 900
    img = np.full((row_h * len(rows) + 50, width, 3), 255, np.uint8)
    lo, hi = min(values) - 1.0, max(values) + 0.5
    scale = (width - left - 80) / (hi - lo)
    for i, (label, v, colour) in enumerate(zip(labels, values, rgb)):
        y = 10 + i * row_h
        x1 = left + int((v - lo) * scale)
        cv2.rectangle(img, (left, y + 4), (x1, y + row_h - 6), colour[::-1], -1)  # OpenCV draws BGR
        cv2.putText(img, label[:46], (8, y + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{v:.2f}", (x1 + 6, y + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    y = 10 + len(rows) * row_h + 20
    cv2.putText(img, f"PSNR (dB), axis from {lo:.1f}", (left, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (80, 80, 80), 1,
                cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img)
    atomic_write_bytes(out, png.tobytes())


# ----------------------------------------------------------------------------- main
def downscaled_photos(src: Path, dst: Path, short_side: int) -> Path:
    """Copies of the photos of ``src`` whose short side is at most ``short_side`` (area resampling).

    Smaller photos make every training sample cheaper to read and put more scene
    into each small crop; train and test photos are treated alike.
    """
    from hidiff.data.image_io import list_images, read_image_uint8, shrink_to, write_png

    dst.mkdir(parents=True, exist_ok=True)
    for path in list_images(src):
        target = dst / f"{path.stem}.png"
        if not target.exists():
            write_png(target, shrink_to(read_image_uint8(path), short_side, short=True))
    if (src / "ATTRIBUTION.md").is_file():
        (dst / "ATTRIBUTION.md").write_bytes((src / "ATTRIBUTION.md").read_bytes())
    return dst


def default_photos(work: Path, which: str) -> Path:
    from hidiff.runners.demo import TEST_PHOTOS, TRAIN_PHOTOS, copy_photos
    folder = work / f"skimage_{which}"
    copy_photos(TRAIN_PHOTOS if which == "train" else TEST_PHOTOS, folder)
    return folder


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, default=None, help="sharp training photos (default: scikit-image's)")
    ap.add_argument("--test", type=Path, default=None, help="sharp test photos (default: scikit-image's)")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "quality", help="work folder")
    ap.add_argument("--iters1", type=int, default=200, help="stage-1 iterations (the CPU budget)")
    ap.add_argument("--iters2", type=int, default=120, help="stage-2 iterations")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patch", type=int, default=64, help="training crop (a multiple of 64 for Swintormer)")
    ap.add_argument("--kernel-size", type=int, default=17, help="PSF size of the synthetic blur (odd)")
    ap.add_argument("--noise", type=float, nargs=2, default=[0.0, 0.01], metavar=("MIN", "MAX"))
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--test-crop", type=int, default=256, help="centre crop of each test photo (0: whole photo)")
    ap.add_argument("--short-side", type=int, default=320,
                    help="downscale train and test photos to this short side first (0: keep the originals)")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2, help="training runs in parallel")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--variants", default=None, help="comma-separated subset of variant names")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs of an earlier call")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    t_start = time.time()
    from hidiff.data.synthetic_set import freeze_synthetic_set
    from hidiff.profiling.machine import describe_machine, machine_line
    from hidiff.utils.atomic import atomic_write_text

    def log(msg: str) -> None:
        print(msg, flush=True)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train_src = (args.train or default_photos(work, "train")).resolve()
    test_src = (args.test or default_photos(work, "test")).resolve()
    if args.short_side:
        train_dir = downscaled_photos(train_src, work / f"train_sharp_{args.short_side}", args.short_side)
        test_dir = downscaled_photos(test_src, work / f"test_sharp_{args.short_side}", args.short_side)
    else:
        train_dir, test_dir = train_src, test_src
    all_variants = variants()
    if args.variants:
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
        unknown = set(names) - {v.name for v in all_variants}
        if unknown:
            raise SystemExit(f"--variants: unknown {sorted(unknown)}; known: {[v.name for v in all_variants]}")
        chosen = [v for v in all_variants if v.name in names or v.name == "blurry"]
    else:
        chosen = all_variants
    budget = Budget(args.iters1, args.iters2, args.batch, args.patch, args.kernel_size, list(args.noise), args.lr,
                    args.seed)
    crop = args.test_crop or None

    log("== frozen test pairs")
    test_set = work / "test_set"
    freeze_synthetic_set(test_dir, test_set, seed=args.seed + 1000, crop=crop, kernel_size=args.kernel_size,
                         noise_sigma=tuple(args.noise), overwrite=True, log=lambda m: log("  " + m.strip()))
    pairs = load_pairs(test_set)

    log("== training runs")
    jobs = make_jobs(chosen, budget, work, train_dir)
    seconds = run_jobs(jobs, work, parallel=args.jobs, threads=args.threads, reuse=args.reuse, log=log)

    log("== classical baselines")
    tuned = tune_classical(train_dir, budget, crop or 256, log)
    log("== scoring")
    rows, per_image = [], []
    for v in chosen:
        if v.name == "blurry":
            outs = [p["lq"] for p in pairs]
        elif v.kind == "classical":
            outs = [deconvolve(p["lq"], p["kernel"], v.name, tuned[v.name]) for p in pairs]
        else:
            outs = restore_learned(v, work, pairs, args.seed, max(1, os.cpu_count() or 1))
        scores = score(outs, pairs)
        psnr = float(np.mean([s["psnr_uint8_rgb"] for s in scores]))
        ssim = float(np.mean([s["ssim_matlab3d"] for s in scores]))
        train_s = (seconds.get(v.name, 0.0) if v.kind != "oracle" else 0.0) + \
            (seconds.get(v.stage1, 0.0) if v.stage1 else 0.0)
        rows.append({"variant": v.name, "label": v.label, "kind": v.kind, "params": _params(v, work), "psnr": psnr,
                     "ssim": ssim, "train_seconds": train_s or None,
                     "timesteps": v.timesteps if v.kind == "hidiff" else None})
        per_image += [{"variant": v.name, **s} for s in scores]
        log(f"  {v.label}: PSNR {psnr:.2f} dB, SSIM {ssim:.4f}")

    meta = {"test_pairs": len(pairs), "test_crop": f"{crop}x{crop}" if crop else "whole-photo",
            "kernel_size": args.kernel_size, "iters1": args.iters1, "iters2": args.iters2, "batch": args.batch,
            "patch": args.patch, "train_photos": len(list(p for p in train_dir.iterdir() if p.suffix.lower() in
                                                          (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"))),
            "threads": args.threads, "tuned": tuned, "machine": machine_line(describe_machine()),
            "wall_seconds": time.time() - t_start, "train_dir": str(train_src), "test_dir": str(test_src), "short_side": args.short_side,
            "noise_sigma": list(args.noise), "seed": args.seed, "lr": args.lr}
    table = write_table(rows, meta, work / "results.md")
    draw_chart(rows, work / "psnr_chart.png")
    atomic_write_text(work / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(per_image[0]))
    writer.writeheader()
    writer.writerows(per_image)
    atomic_write_text(work / "per_image.csv", buf.getvalue())
    print()
    print(table)
    log(f"written: {work / 'results.md'}, {work / 'psnr_chart.png'}, {work / 'results.json'}, "
        f"{work / 'per_image.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
