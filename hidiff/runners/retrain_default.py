"""Retrain hidiff's default model with one resumable command (docs/default_model.md).

    python scripts/retrain_default.py --photos ../shared/photos/train [--ablation-seeds 3 [--ablation-jobs 2]]
                                      [-o KEY=VALUE ...]

Steps, each skipped when already done, so running the same command again after an
interruption continues where it stopped:

1. gather the training photos into the recipe's ``sharp_root`` (only with ``--photos``;
   without it the folder must already hold photos);
2. train stage 1 (options/default_stage1.yml), then stage 2 (default_stage2.yml), each with
   ``--resume auto`` in a child process; a finished run returns at once;
3. export stage 2 as a float16 model folder (``--export``, default experiments/default_model)
   with the model card, which ``hidiff-deblur --weights DIR`` and ``hidiff.load(DIR)`` read;
4. the no-prior ablation (default_plain.yml) for ``--ablation-seeds`` seeds (10, 11, ...),
   ``--ablation-jobs`` of them at once (each child on its share of the threads, its lines prefixed
   with its seed): the seeds are independent, and on a small CPU two one-thread trainings get
   more done than one two-thread training (docs/default_model.md).

``--ablation-only`` skips steps 2 and 3: the prior-free runs need nothing from the default model, so
its ablation can be (re)trained beside the shipped weights without retraining them.

Every option file is loaded with the overrides before anything is written or started, and every run
folder that already has a checkpoint must have been trained with the options planned now (the trainer's
config hash): a step counts as done only then, and another recipe (e.g. ``-o network_g.dim=12`` against
finished runs) is refused, naming the run folder and the keys that differ.
SIGINT/SIGTERM reach every training child once (it finishes its iteration, saves a complete
checkpoint and exits); the command then exits with code 4 and starts nothing more.  On Linux
the child is also sent SIGHUP if the command itself dies (even by SIGKILL): the same clean stop.

Exit codes: 0 done, 2 bad input (refused by the plan's checks: nothing written or started), 4 stopped
by a signal, else the first failing training's code (1 failed, 3 non-finite losses; a training that
refused its input, code 2, gives 1: steps before it may have run).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional, Sequence

from hidiff.config import Options, load_options
from hidiff.data.image_io import list_images
from hidiff.engine.checkpoint_store import latest_complete
from hidiff.engine.run_folder import options_changed_since
from hidiff.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_SIGNAL, ConfigError, DataError
from hidiff.utils.children import ChildSignals, start_child
from hidiff.utils.threads import threads_each

STAGE1, STAGE2, PLAIN = "default_stage1.yml", "default_stage2.yml", "default_plain.yml"


@dataclass
class Training:
    """One training run of the plan: its option file, the overrides it gets and where its run folder is."""

    label: str
    option_file: Path
    overrides: List[str]
    options: Options

    @property
    def run_dir(self) -> Path:
        return Path(self.options.path.experiments_root) / self.options.name

    @property
    def total_iter(self) -> int:
        return self.options.train.total_iter

    def reached(self) -> int:
        """The iteration of the run's newest complete checkpoint (0: none yet)."""
        unit = latest_complete(self.run_dir) if (self.run_dir / "training_states").is_dir() else None
        return unit.iteration if unit else 0

    def done(self) -> bool:
        """Trained to ``total_iter`` with the options planned now."""
        return self.reached() >= self.total_iter and not self.changed_keys()

    def changed_keys(self) -> List[str]:
        """How the options planned now differ from those of the newest complete checkpoint (config hash)."""
        return options_changed_since(self.run_dir, self.options)

    def progress(self) -> str:
        return f"{self.reached():,} of {self.total_iter:,} iterations"


@dataclass
class Plan:
    """Everything the command will do, checked before any of it starts."""

    photos: List[Path]
    sharp_root: Path
    recipe: List[Training]           # stage 1, stage 2: the model exported
    ablation: List[Training]         # the no-prior runs, after the export
    export: Path
    card: Optional[Path]
    ablation_jobs: int = 1           # ablation seeds trained at once
    ablation_only: bool = False      # skip the recipe and the export


def _training(label: str, option_file: Path, overrides: List[str]) -> Training:
    # a bad override fails here, naming the file
    return Training(label, option_file, overrides, load_options(option_file, overrides, is_train=True))


def make_plan(options_dir: Path, overrides: Sequence[str], *, photos: Sequence[Path] = (), ablation_seeds: int = 0,
              ablation_jobs: int = 1, export: Path = Path("experiments/default_model"),
              card: Optional[Path] = None, ablation_only: bool = False) -> Plan:
    """Load and check every option file and input; raises ConfigError/DataError before anything is written."""
    options_dir = Path(options_dir)
    for name in (STAGE1, STAGE2, PLAIN):
        if not (options_dir / name).is_file():
            raise ConfigError(f"{options_dir / name}: option file not found (run the command from the root of a "
                              f"hidiff clone, or give --options-dir)")
    if not isinstance(ablation_seeds, int) or ablation_seeds < 0:
        raise ConfigError(f"--ablation-seeds: expected an integer >= 0, got {ablation_seeds!r}")
    if not isinstance(ablation_jobs, int) or ablation_jobs < 1:
        raise ConfigError(f"--ablation-jobs: expected an integer >= 1, got {ablation_jobs!r}")
    if ablation_only and not ablation_seeds:
        raise ConfigError("--ablation-only: trains only the ablation's seeds, so it needs --ablation-seeds N >= 1")
    if ablation_jobs != 1 and not ablation_seeds:
        raise ConfigError(f"--ablation-jobs {ablation_jobs}: trains that many of the ablation's seeds at once, so "
                          f"it needs --ablation-seeds N >= 1")
    overrides = list(overrides)
    for item in overrides:
        if item.split("=", 1)[0].strip() in ("name", "manual_seed"):
            raise ConfigError(f"-o {item}: the recipe names its run folders and seeds itself (stage 1, stage 2 and "
                              f"each ablation seed need their own); an override would give them one")
    stage1 = _training("stage 1", options_dir / STAGE1, overrides)
    stage2 = _training("stage 2", options_dir / STAGE2, overrides)
    ablation: List[Training] = []
    # the first seed is default_plain.yml's own manual_seed (run folder default_plain); the others count up from it
    if ablation_seeds:
        first = load_options(options_dir / PLAIN, overrides, is_train=True)
        ablation.append(Training(f"no-prior ablation, seed {first.manual_seed}", options_dir / PLAIN, overrides,
                                 first))
        for seed in range(first.manual_seed + 1, first.manual_seed + ablation_seeds):
            extra = [f"manual_seed={seed}", f"name=default_plain_seed{seed}"]
            ablation.append(_training(f"no-prior ablation, seed {seed}", options_dir / PLAIN, overrides + extra))
    folders: dict = {}
    for training in [stage1, stage2, *ablation]:
        other = folders.setdefault(training.options.name, training.label)
        if other != training.label:
            raise ConfigError(f"{training.label} and {other} would train in one run folder, "
                              f"experiments/{training.options.name}")
    sharp_root = Path(stage1.options.datasets["train"].params["sharp_root"])
    for folder in photos:
        if not Path(folder).is_dir() or not list_images(folder):
            raise DataError(f"--photos {folder}: not a folder of images (it is missing or holds none)")
    for training in ablation if ablation_only else [stage1, stage2, *ablation]:
        for phase, block in training.options.datasets.items():
            root = Path(block.params.get("sharp_root", sharp_root))
            if (photos and root == sharp_root) or (root.is_dir() and list_images(root)):
                continue
            raise DataError(f"{root}: the photos of datasets.{phase}.sharp_root ({training.option_file.name}) are "
                            f"missing; give --photos FOLDER (e.g. --photos ../shared/photos/train) to gather the "
                            f"recipe's photos into {sharp_root}")
    for training in ablation if ablation_only else [stage1, stage2, *ablation]:
        changed = training.changed_keys()
        if changed:
            raise ConfigError(f"{training.run_dir}: its checkpoint ({training.progress()}) was trained with other "
                              f"options than this command's {training.label} ({training.option_file.name} with "
                              f"the overrides given); differing keys (saved -> now): {'; '.join(changed)}. Run "
                              f"the command with the options it was trained with, or move that folder away")
    export = Path(export)
    if export.exists() and not stage2.done() and not ablation_only:
        raise ConfigError(f"--export {export}: already exists, but stage 2 has not finished; it would not be the "
                          f"model trained now (move it away or name another folder)")
    if card is not None and not Path(card).is_file():
        raise ConfigError(f"--card {card}: file not found")
    return Plan(list(photos), sharp_root, [stage1, stage2], ablation, export, card, ablation_jobs, ablation_only)


def train_command(training: Training) -> List[str]:
    """The child's argv: hidiff's training command with ``--resume auto`` and the overrides."""
    cmd = [sys.executable, "-m", "hidiff.cli.train", "-opt", str(training.option_file), "--resume", "auto"]
    for item in training.overrides:
        cmd += ["-o", item]
    return cmd


def describe(plan: Plan) -> List[str]:
    """One line per step with how far it has come (``--dry-run``)."""
    lines = [f"photos: {'gather ' + ', '.join(map(str, plan.photos)) + ' into ' if plan.photos else ''}"
             f"{plan.sharp_root} ({len(list_images(plan.sharp_root)) if plan.sharp_root.is_dir() else 0} photos now)"]
    def line(training: Training) -> str:
        return (f"{training.label}: {'done' if training.done() else 'to train'}, {training.progress()} "
                f"({training.option_file.name}, {training.run_dir})")

    if plan.ablation_only:
        return lines + [f"{t.label}: skipped (--ablation-only)" for t in plan.recipe] + [
            "export: skipped (--ablation-only)"] + [line(t) for t in plan.ablation]
    lines += [line(t) for t in plan.recipe]
    lines.append(f"export: {plan.export} ({'exists' if plan.export.exists() else 'to write'}, float16"
                 f"{', card ' + str(plan.card) if plan.card else ''})")
    return lines + [line(t) for t in plan.ablation]


def run(plan: Plan, log: Callable[[str], None] = print) -> int:
    """Carry out the plan; returns the command's exit code."""
    from hidiff.runners.default_photos import gather_photos  # deferred: needs scikit-image

    if plan.photos:
        gather_photos(plan.sharp_root, plan.photos, log=log)
    with ChildSignals() as signals:
        code = EXIT_OK if plan.ablation_only else _train_all(plan.recipe, signals, log)
        if code == EXIT_OK and not signals.received:
            if not plan.ablation_only:
                _export(plan, log)
            code = _train_all(plan.ablation, signals, log, jobs=plan.ablation_jobs)
    return EXIT_SIGNAL if code == EXIT_OK and signals.received else code


def _train_all(trainings: Sequence[Training], signals: ChildSignals, log: Callable[[str], None],
               jobs: int = 1) -> int:
    """Train each unfinished run in a child process, ``jobs`` at a time; stop at the first failure or signal
    (a failure also stops the other running children, which save their checkpoints)."""
    pending: List[Training] = []
    for training in trainings:
        if training.done():
            log(f"== {training.label}: done ({training.progress()}, {training.run_dir})")
        else:
            pending.append(training)
    jobs = max(1, min(jobs, len(pending)))
    threads = threads_each(jobs)
    running: Dict[subprocess.Popen, Training] = {}
    copiers: List[threading.Thread] = []
    failure = EXIT_OK
    while pending or running:
        while pending and len(running) < jobs and not signals.received and failure == EXIT_OK:
            training = pending.pop(0)
            share = f" [{jobs} at once, {threads} thread(s) each]" if jobs > 1 else ""
            log(f"== {training.label}: training from {training.progress()} ({training.option_file}){share}")
            child = _start(training, threads if jobs > 1 else None)
            if jobs > 1:
                copiers.append(_copy_lines(child.stdout, f"[seed {training.options.manual_seed}] "))
            running[child] = training
            signals.children.append(child)
            if signals.received:                   # arrived while the child was being started
                signals.stop_running()             # SIGTERM to this child only: the others were told
        if not running:
            break
        finished = _wait_any(list(running))
        training = running.pop(finished)
        signals.children.remove(finished)
        code = finished.returncode
        if code not in (EXIT_OK, EXIT_SIGNAL):
            others = "; the other running trainings were stopped (checkpoints saved)" if running else ""
            log(f"== {training.label} failed at {training.progress()} (exit code {code}; its messages are "
                f"above){others}; nothing more was started")
            failure = failure if failure != EXIT_OK else (EXIT_FAILED if code == EXIT_BAD_INPUT else code)
            signals.stop_running()
        elif code == EXIT_SIGNAL or signals.received:
            log(f"== {training.label} stopped at {training.progress()} ({signals.received or 'a signal'}, "
                f"checkpoint saved); run the same command again to continue")
            failure = failure if failure != EXIT_OK else EXIT_SIGNAL
    for copier in copiers:
        copier.join()
    if failure == EXIT_OK and signals.received:
        return EXIT_SIGNAL
    return failure


def _start(training: Training, threads: Optional[int]) -> subprocess.Popen:
    """The training's child (hidiff/utils/children.py); with ``threads`` it gets that many and its output is
    piped."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    piped = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") if threads else {}
    return start_child(train_command(training), env=env, **piped)


def _copy_lines(stream: IO[str], prefix: str) -> threading.Thread:
    """Copy a child's lines to this process's stdout, each prefixed, so runs side by side stay apart."""
    def copy() -> None:
        for line in stream:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
        stream.close()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def _wait_any(children: List[subprocess.Popen]) -> subprocess.Popen:
    """The first of ``children`` to exit (polled: signals keep arriving in the main thread meanwhile)."""
    while True:
        for child in children:
            if child.poll() is not None:
                return child
        time.sleep(0.2)


def _export(plan: Plan, log: Callable[[str], None]) -> None:
    from hidiff.runners.model_folder import write_model_folder  # deferred: heavy imports
    from hidiff.runners.weights import from_experiment  # deferred: heavy imports

    if plan.export.exists():
        log(f"== export: {plan.export} already exists (remove it to export again)")
        return
    card = Path(plan.card).read_text(encoding="utf-8") if plan.card else None
    plan.export.parent.mkdir(parents=True, exist_ok=True)
    stage2 = plan.recipe[-1].options
    weights = from_experiment(stage2.path.experiments_root, stage2.name)
    report = write_model_folder(weights, plan.export, half=True, card=card)
    log(f"== export: wrote {report['folder']} ({report['bytes'] / 1e6:.2f} MB of float16 weights; largest "
        f"change against float32 {report['max_abs_diff_vs_source']:.3g}); use it with "
        f"hidiff-deblur PHOTO -o OUT --weights {plan.export}")
