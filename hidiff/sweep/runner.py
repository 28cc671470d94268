"""Run a validated sweep: training runs through the real trainer, then their evaluations.

The sweep folder (``<experiments_root>/sweeps/<name>/``) holds the option file of
every run (``options/``) and its evaluation (``eval_options/``), the training and
test logs (``logs/``), one record per run (``runs/<run>.json``: its options hash,
the sha256 of the stage-1 weights it starts from, written with status ``training``
when its training starts, then the sha256 of its weights) and the evaluations'
outputs (``eval/<run>/<run>/<set>/metrics.csv``; an evaluation is reused while the
weights, its options and the contents of its test sets' files are the same).  A run is reused when its final
checkpoint exists, the options the trainer saved hash to the planned ones and the
stage-1 weights it started from are still the current ones; any other run is
started with ``--resume auto`` (continuing where a killed sweep stopped) or, when
its folder holds a run with other options or one started from other stage-1
weights (by its record or its newest checkpoint, read from disk, so that a later
session decides the same), ``--resume none`` (the trainer archives it).

One sweep at a time per folder: :meth:`SweepRunner.hold_lock` takes an advisory
lock (``flock``, hidiff/engine/run_lock.py) on the sweep folder, held until
:meth:`SweepRunner.release_lock` or the process ends, so a second sweep on the
same folder is refused before it writes anything.  A plan that replaces another
moves the old report files into ``superseded_<time>_<plan hash>/``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import hidiff.models  # noqa: F401  (registers the model classes)
from hidiff.config import config_hash, load_options
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.engine.run_lock import RunLock
from hidiff.engine.training_state import changed_pretrained, pretrained_record
from hidiff.engine.stage_link import resolve_pretrained
from hidiff.errors import ConfigError, HidiffError
from hidiff.registry import MODEL_REGISTRY
from hidiff.sweep.report import metrics_csv, plan_hash, report_files
from hidiff.sweep.spec import Run, Sweep, read_json
from hidiff.utils.atomic import atomic_write_text
from hidiff.utils.children import ChildSignals, start_child
from hidiff.utils.hashing import sha256_file, tree_sha256
from hidiff.utils.progress import Progress
from hidiff.utils.threads import threads_each

TEST_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test.py"
STOP_WAIT_S = 900   # how long a stopping training may take to finish its iteration and save


class RunFailed(HidiffError):
    """A training run or evaluation of the sweep exited with an error."""


class SweepStopped(Exception):
    """SIGINT/SIGTERM reached the sweep: the running trainings saved their checkpoints and stopped."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def final_weights(run: Run) -> Optional[Dict[str, Path]]:
    """``{suffix: net_<x>_latest.pth}`` of a finished run, or None while any is missing."""
    names = MODEL_REGISTRY.get(run.options.model_type).save_names
    files = {n: run.run_dir / "models" / f"net_{n}_latest.pth" for n in names}
    return files if all(f.is_file() for f in files.values()) else None


def saved_hash(run: Run) -> Optional[str]:
    """Hash of the options the trainer saved in the run folder (None: no readable config.yml)."""
    cfg = run.run_dir / "config.yml"
    if not cfg.is_file():
        return None
    try:
        return config_hash(load_options(cfg, is_train=True))
    except ConfigError:
        return None


def checkpoint_from_other_inputs(run: Run) -> bool:
    """Whether the newest checkpoint of the run folder started from other stage-1 weights than those its
    options name now: ``--resume auto`` would refuse it (``check_pretrained_kept`` in
    hidiff/engine/training_state.py), since stage 2's frozen net_le is loaded again from the stage-1 run."""
    if not (run.run_dir / "training_states").is_dir():
        return False
    verified = CheckpointStore(run.run_dir).latest_valid()
    if verified is None:
        return False
    try:
        specs = resolve_pretrained(run.options)
    except ConfigError:
        return False     # the trainer says what is missing
    return bool(changed_pretrained(verified, pretrained_record(specs)))


@dataclass
class Job:
    key: str
    kind: str                           # 'train' or 'eval'
    run: Run
    after: List[str] = field(default_factory=list)


class SweepRunner:
    """Schedules the runs of a :class:`Sweep` ``jobs`` at a time, dependencies first."""

    def __init__(self, sweep: Sweep, *, jobs: int = 1, log: Callable[[str], None] = print,
                 env: Optional[Dict[str, str]] = None, keep_going: bool = False) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs: expected a positive number, got {jobs}")
        if not TEST_SCRIPT.is_file():
            raise ConfigError(f"the sweep evaluates with {TEST_SCRIPT}, which is missing (run from a source checkout)")
        self.sweep, self.jobs, self.log, self.keep_going = sweep, jobs, log, keep_going
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.folder = sweep.folder
        self.records: Dict[str, dict] = {}
        self.retrained: set = set()          # runs trained in this call
        self._lock = RunLock()
        self.failures: List[str] = []        # with keep_going: what failed, in order
        self.lost: Dict[str, str] = {}       # failed jobs and the jobs skipped because of them -> the failed one
        self._digests: Dict[str, str] = {}   # path -> tree_sha256, computed once per call

    # ------------------------------------------------------------------ files
    def option_file(self, run: Run) -> Path:
        return self.folder / "options" / f"{run.name}.yml"

    def eval_file(self, run: Run) -> Path:
        return self.folder / "eval_options" / f"{run.name}.yml"

    def record_file(self, run: Run) -> Path:
        return self.folder / "runs" / f"{run.name}.json"

    def eval_record_file(self, run: Run) -> Path:
        return self.folder / "eval" / run.name / "eval.json"

    def hold_lock(self) -> None:
        """Lock the sweep folder for this process (until :meth:`release_lock` or exit); ConfigError when another
        sweep holds it: two sweeps on one folder would mix their plans, records and results."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.hold(self.folder)
        except ConfigError:
            raise ConfigError(f"{self.folder}: another hidiff-sweep is running on this sweep folder now; wait for "
                              f"it to end, or give this sweep another 'name' in its sweep file") from None

    def release_lock(self) -> None:
        self._lock.release()

    def write_plan(self) -> None:
        """The sweep file, every option file and the plan, written once everything has validated.

        The report of another plan no longer describes the runs: it is moved aside, not deleted.
        """
        s = self.sweep
        atomic_write_text(self.folder / "sweep.yml", s.source.read_text(encoding="utf-8"))
        for run in s.runs:
            atomic_write_text(self.option_file(run), run.text)
            if run.eval_text is not None:
                atomic_write_text(self.eval_file(run), run.eval_text)
        plan = {"name": s.name, "baseline": s.baseline, "seeds": s.seeds, "nproc": s.nproc,
                "variants": [{"name": v.name, "label": v.label, "runs": [r.name for r in v.runs]}
                             for v in s.variants],
                "runs": [{"name": r.name, "variant": r.variant, "seed_index": r.seed_index,
                          "manual_seed": r.manual_seed, "stage": r.stage, "after": r.after, "config_hash": r.hash}
                         for r in s.runs]}
        old = read_json(self.folder / "plan.json")
        stale = report_files(self.folder) if old is not None and plan_hash(old) != plan_hash(plan) else []
        if stale:
            aside = self.folder / f"superseded_{time.strftime('%Y%m%d-%H%M%S')}_{plan_hash(old)}"
            aside.mkdir(parents=True, exist_ok=True)
            for f in stale:
                f.rename(aside / f.name)
            self.log(f"  the plan changed (plan {plan_hash(old)} -> {plan_hash(plan)}): the report of the old plan "
                     f"({', '.join(f.name for f in stale)}) was moved to {aside}")
        _write_json(self.folder / "plan.json", plan)

    # ------------------------------------------------------------------ reuse
    def _dependency_hashes(self, run: Run) -> Dict[str, Dict[str, str]]:
        return {dep: self.records[dep]["weights_sha256"] for dep in run.after}

    def inputs_changed(self, run: Run) -> bool:
        """Whether the run folder's training started from other stage-1 weights than the current ones: by the
        inputs its record kept when it started, or by its newest checkpoint."""
        if not run.after or any(dep not in self.records for dep in run.after):
            return False
        rec = read_json(self.record_file(run))
        if rec is not None and rec.get("config_hash") == run.hash and "inputs" in rec \
                and rec["inputs"] != self._dependency_hashes(run):
            return True
        return checkpoint_from_other_inputs(run)

    def reusable(self, run: Run) -> bool:
        """Finished with the planned options, from the stage-1 weights that exist now."""
        if any(dep in self.retrained for dep in run.after):
            return False
        if final_weights(run) is None or saved_hash(run) != run.hash:
            return False
        rec = read_json(self.record_file(run))
        if rec is None or rec.get("config_hash") != run.hash or rec.get("status") not in ("trained", "reused"):
            return False
        return rec.get("inputs", {}) == self._dependency_hashes(run)

    def _record(self, run: Run, seconds: Optional[float], status: str) -> None:
        """The run's record; with status ``training`` (its training starts) the inputs only, no weights."""
        weights = {} if status == "training" else {n: sha256_file(p) for n, p in (final_weights(run) or {}).items()}
        old = read_json(self.record_file(run)) or {}
        rec = {"run": run.name, "variant": run.variant, "seed_index": run.seed_index,
               "manual_seed": run.manual_seed, "stage": run.stage, "config_hash": run.hash,
               "options": str(self.option_file(run)), "run_dir": str(run.run_dir),
               "weights_sha256": weights, "inputs": self._dependency_hashes(run), "status": status,
               "train_seconds": seconds if seconds is not None else old.get("train_seconds")}
        _write_json(self.record_file(run), rec)
        if status != "training":
            self.records[run.name] = rec

    def test_data(self, run: Run) -> Dict[str, str]:
        """sha256 of the files each of the evaluation's sets reads (every ``dataroot*`` path it names): the
        options hold paths only, so a test set rewritten in place with other images would otherwise reuse the
        scores of the old one."""
        out: Dict[str, str] = {}
        for key, d in sorted(run.eval_options.datasets.items()):
            if d.phase not in ("test", "val"):
                continue
            for param, value in sorted(d.params.items()):
                if not param.startswith("dataroot"):
                    continue
                paths = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
                for n, item in enumerate(paths):
                    if isinstance(item, str) and os.path.exists(item):
                        path = os.path.abspath(item)
                        if path not in self._digests:
                            self._digests[path] = tree_sha256(path)
                        out[f"{key}.{param}" + (f"[{n}]" if not isinstance(value, str) else "")] = self._digests[path]
        return out

    def eval_reusable(self, run: Run) -> bool:
        rec = read_json(self.eval_record_file(run))
        return (rec is not None and rec.get("weights_sha256") == self.records[run.name]["weights_sha256"]
                and rec.get("eval_hash") == config_hash(run.eval_options) and rec.get("limit") == self.sweep.eval_limit
                and rec.get("test_data") == self.test_data(run)
                and all(metrics_csv(self.folder, run.name, s).is_file() for s in rec.get("sets", [])))

    # ------------------------------------------------------------------ commands
    def train_command(self, run: Run) -> List[str]:
        fresh = saved_hash(run) not in (None, run.hash) or self.inputs_changed(run)
        resume = "none" if fresh else "auto"
        tail = ["-m", "hidiff.cli.train", "-opt", str(self.option_file(run)), "--resume", resume]
        if self.sweep.nproc > 1:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={self.sweep.nproc}"] + tail + ["--launcher", "pytorch"]
        return [sys.executable] + tail + ["--launcher", "none"]

    def eval_command(self, run: Run) -> List[str]:
        cmd = [sys.executable, str(TEST_SCRIPT), "-opt", str(self.eval_file(run)), "--experiment", run.name]
        if self.sweep.eval_limit:
            cmd += ["--limit", str(self.sweep.eval_limit)]
        return cmd

    def child_env(self) -> Dict[str, str]:
        """The children's environment; with ``jobs`` > 1 each process gets its share of the threads (for
        torchrun, each rank), as trainings on every core side by side mostly wait for one another."""
        if self.jobs == 1:
            return self.env
        return dict(self.env, OMP_NUM_THREADS=str(threads_each(self.jobs * self.sweep.nproc, self.env)))

    # ------------------------------------------------------------------ main loop
    def execute(self) -> Dict[str, dict]:
        """Train and evaluate every run (reusing finished ones); returns the run records."""
        self.hold_lock()
        self.write_plan()
        pending: List[Job] = []
        for run in self.sweep.runs:
            if self.reusable(run):
                self._record(run, None, "reused")
                self.log(f"  reuse {run.name} (finished, same options)")
            else:
                self.retrained.add(run.name)
                pending.append(Job(f"train:{run.name}", "train", run, [f"train:{d}" for d in run.after]))
            if run.stage == "final":
                pending.append(Job(f"eval:{run.name}", "eval", run, [f"train:{run.name}"]))
        done = {f"train:{r.name}" for r in self.sweep.runs if r.name not in self.retrained}
        running: Dict[str, tuple] = {}
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        bar = Progress(len(pending), desc=f"sweep {self.sweep.name}", unit="job")
        # children in their own sessions: SIGINT/SIGTERM reach each once, through this process; SIGHUP if it dies
        with ChildSignals() as signals:
            try:
                while running or (pending and not signals.received):
                    if not signals.received:
                        self._start_ready(pending, running, done, signals, bar)
                    if signals.received:    # also a job started while the signal arrived is told, once
                        signals.stop_running()
                    if not running:
                        if pending and not signals.received:   # cannot happen: dependencies always come first
                            raise RunFailed(f"jobs wait on missing dependencies: {[j.key for j in pending]}")
                        break
                    time.sleep(0.2)
                    for key, (job, proc, t0, out, log_path) in list(running.items()):
                        if proc.poll() is None:
                            continue
                        out.close()
                        del running[key]
                        seconds = time.time() - t0
                        if signals.received and proc.returncode != 0:
                            self.log(f"  stopped {job.kind} {job.run.name} ({signals.received}; a training saved "
                                     f"its checkpoint)")
                            continue
                        try:
                            self._finish(job, proc.returncode, seconds, log_path)
                        except RunFailed as exc:
                            if not self.keep_going:
                                if running:
                                    self.log(f"  FAILED {job.kind} {job.run.name}: stopping the {len(running)} "
                                             f"other running job(s), each saves its checkpoint (--keep-going "
                                             f"lets them finish)")
                                raise
                            self.failures.append(str(exc))
                            self.lost[key] = key
                            self.log(f"  FAILED {job.kind} {job.run.name} (exit {proc.returncode}; log {log_path}); "
                                     f"the other jobs go on")
                            bar.update(1)
                            continue
                        done.add(key)
                        self.log(f"  done  {job.kind} {job.run.name} in {seconds:.0f} s")
                        bar.update(1)
            finally:
                bar.close()
                # after a failure or a bug: the other trainings save and stop (a step can take minutes on a CPU)
                signals.stop_all(STOP_WAIT_S, self.log)
                for _, _, _, out, _ in running.values():
                    out.close()
        if signals.received:
            raise SweepStopped(signals.received)
        if self.failures:
            skipped = len(self.lost) - len(self.failures)
            raise RunFailed(f"{len(self.failures)} job(s) failed" + (f" and {skipped} that needed them were skipped"
                                                                     if skipped else "")
                            + "; every other job finished:\n" + "\n".join(self.failures))
        return self.records

    def _start_ready(self, pending: List["Job"], running: Dict[str, tuple], done: set, signals: ChildSignals,
                     bar: Progress) -> None:
        """Start the pending jobs whose dependencies are done, up to ``jobs`` running."""
        for job in list(pending):
            if len(running) >= self.jobs:
                break
            missing = [self.lost[a] for a in job.after if a in self.lost]
            if missing:     # keep_going: a job it needs failed
                pending.remove(job)
                self.lost[job.key] = missing[0]
                self.log(f"  skip  {job.kind} {job.run.name} (it needs {missing[0].replace(':', ' ')}, which failed)")
                bar.update(1)
                continue
            if not all(a in done for a in job.after):
                continue
            pending.remove(job)
            if job.kind == "eval" and self.eval_reusable(job.run):
                self.log(f"  reuse evaluation of {job.run.name}")
                done.add(job.key)
                bar.update(1)
                continue
            cmd = self.train_command(job.run) if job.kind == "train" else self.eval_command(job.run)
            if job.kind == "train":     # on disk before it starts: a later session resumes from what it knows
                self._record(job.run, None, "training")
            log_path = self.folder / "logs" / f"{job.kind}_{job.run.name}.log"
            out = open(log_path, "a", encoding="utf-8")
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = start_child(cmd, env=self.child_env(), stdout=out, stderr=subprocess.STDOUT)
            signals.children.append(proc)
            running[job.key] = (job, proc, time.time(), out, log_path)
            self.log(f"  start {job.kind} {job.run.name}")

    def _finish(self, job: Job, rc: int, seconds: float, log_path: Path) -> None:
        run = job.run
        if rc != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
            raise RunFailed(f"{job.kind} of {run.name} failed (exit {rc}); log {log_path}:\n" + "\n".join(tail))
        if job.kind == "train":
            if final_weights(run) is None:
                raise RunFailed(f"training run {run.name} exited 0 but left no final checkpoint "
                                f"(net_<x>_latest.pth in {run.run_dir / 'models'}); log {log_path}")
            saved = saved_hash(run)
            if saved != run.hash:
                raise RunFailed(f"training run {run.name} exited 0 but its folder holds a run with other options: "
                                f"{run.run_dir / 'config.yml'} hashes to {saved}, the plan to {run.hash} "
                                f"({self.option_file(run)}); something else trained into that folder; log "
                                f"{log_path}")
            self._record(run, seconds, "trained")
            return
        sets = sorted(d.name for d in run.eval_options.datasets.values() if d.phase in ("test", "val"))
        missing = [metrics_csv(self.folder, run.name, s) for s in sets]
        missing = [str(p) for p in missing if not p.is_file()]
        if missing:     # no record: the next session evaluates it again instead of reusing a result never written
            raise RunFailed(f"evaluation of {run.name} exited 0 but left no per-image scores where the report reads "
                            f"them: {', '.join(missing)} missing (options {self.eval_file(run)}); log {log_path}")
        _write_json(self.eval_record_file(run), {"run": run.name, "eval_hash": config_hash(run.eval_options),
                                                 "weights_sha256": self.records[run.name]["weights_sha256"],
                                                 "test_data": self.test_data(run), "sets": sets,
                                                 "limit": self.sweep.eval_limit, "seconds": seconds})
