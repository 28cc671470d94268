"""Run independent checks, each with its own time budget, and write one JSON and one markdown report.

A check is a function ``fn(ctx) -> details`` registered with :func:`check`.
It passes by returning and fails by raising (the message and the last lines
of the traceback are recorded).  Parts of a check that cannot run here are
listed in ``details['parts']`` as ``'skipped (<reason>)'``.  With ``isolate=True`` every
check runs in a fresh interpreter (``python -m hidiff.profiling.checkrun``)
killed at its budget, so a crash, a hang, an out-of-memory state or a changed
global setting of one check never reaches another; in-process runs record an
overrun as a failure after the fact.

Isolated runs may overlap checks to save wall time: a ``background`` check
(one that waits mostly on the CPU, like a compiler) starts and the run goes on
to the next checks beside it; a check marked ``alone`` (its figures are timings,
or it squeezes the whole device's memory) first waits for every background
check.  Each result says which checks ran ``beside`` it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from hidiff.utils.atomic import atomic_write_text

RESULT_MARK = "HIDIFF_CHECK_RESULT "
NO_CUDA = "skipped (no CUDA)"


@dataclass
class Context:
    """What every check may read: where to write, which device, how big."""

    out_dir: str
    dry_run: bool = False
    device: str = "cpu"
    repo: str = ""
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def work_dir(self, name: str) -> Path:
        path = Path(self.out_dir) / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Context":
        return cls(**json.loads(text))


@dataclass
class Check:
    name: str
    title: str
    budget_s: float
    dry_budget_s: float
    fn: Callable[[Context], dict]
    background: bool = False
    alone: bool = False

    def budget(self, ctx: Context) -> float:
        """Seconds this check may take: ``ctx.extra["budgets"][name]`` where given (``--budget``), else its own."""
        given = (ctx.extra.get("budgets") or {}).get(self.name)
        if given is not None:
            return float(given)
        return self.dry_budget_s if ctx.dry_run else self.budget_s


REGISTRY: Dict[str, Check] = {}


def check(name: str, title: str, budget_s: float, dry_budget_s: float, *, background: bool = False,
          alone: bool = False):
    """Register ``fn(ctx) -> details`` as check ``name`` (in definition order).

    ``background``: in isolated runs it runs beside the checks after it; ``alone``: no background check
    runs beside it (timings, whole-device memory)."""
    def wrap(fn: Callable[[Context], dict]) -> Callable[[Context], dict]:
        REGISTRY[name] = Check(name, title, budget_s, dry_budget_s, fn, background, alone)
        return fn
    return wrap


def _jsonable(value):
    """Details as JSON: tensors and numpy scalars become numbers, unknown objects their repr."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    return repr(value)


class CheckFailed(AssertionError):
    """A check's failure that keeps what it measured (``details``) for the report."""

    def __init__(self, message: str, details: dict) -> None:
        super().__init__(message)
        self.details = details


def run_here(chk: Check, ctx: Context) -> dict:
    """Run one check in this process; never raises."""
    t0 = time.perf_counter()
    status, reason, details = "passed", "", {}
    try:
        details = chk.fn(ctx) or {}
    except BaseException as exc:  # a failing check must not stop the others
        if isinstance(exc, KeyboardInterrupt):
            raise
        status = "failed"
        reason = plain_text(f"{type(exc).__name__}: {exc}").strip()
        details = {**getattr(exc, "details", {}),
                   "traceback": plain_text(traceback.format_exc()).strip().splitlines()[-12:]}
    seconds = time.perf_counter() - t0
    budget = chk.budget(ctx)
    if status == "passed" and seconds > budget:
        status, reason = "failed", f"took {seconds:.1f} s, over its budget of {budget:.0f} s"
    return {"name": chk.name, "title": chk.title, "status": status, "reason": reason, "seconds": round(seconds, 2),
            "budget_s": budget, "details": _jsonable(details)}


def run_group(cmd: Sequence[str], timeout: float,
              started: Optional[Callable[[subprocess.Popen], None]] = None) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new session; on timeout the whole process group is killed (a launcher's
    workers too) and ``subprocess.TimeoutExpired`` is raised with the output so far.  ``started`` is
    handed the process as soon as it exists (to kill it from elsewhere)."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ), start_new_session=True)
    if started:
        started(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(list(cmd), timeout, output=out, stderr=err) from None
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def run_isolated(chk: Check, ctx: Context, timeout: float,
                 started: Optional[Callable[[subprocess.Popen], None]] = None) -> dict:
    """Run one check in a fresh interpreter, killed (with its children) after ``timeout`` s; never raises."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "hidiff.profiling.checkrun", chk.name, ctx.to_json()]
    try:
        proc = run_group(cmd, timeout, started)
    except subprocess.TimeoutExpired as exc:
        tail = plain_text(exc.stderr or "").strip().splitlines()[-8:]
        return {"name": chk.name, "title": chk.title, "status": "failed",
                "reason": f"killed at its budget of {timeout:.0f} s", "seconds": round(time.perf_counter() - t0, 2),
                "budget_s": chk.budget(ctx), "details": {"stderr_tail": tail}}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not lines:
        tail = plain_text(proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return {"name": chk.name, "title": chk.title, "status": "failed",
                "reason": f"the check's process died (exit code {proc.returncode})",
                "seconds": round(time.perf_counter() - t0, 2), "budget_s": chk.budget(ctx),
                "details": {"stderr_tail": tail}}
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result["process_seconds"] = round(time.perf_counter() - t0, 2)
    return note_exit(result, proc.returncode, proc.stderr or "")


def note_exit(result: dict, returncode: int, stderr: str) -> dict:
    """A reported result whose process then exited non-zero keeps its verdict (it was reached), and says so."""
    if returncode == 0:
        return result
    exit_note = f"the check's process exited with code {returncode} after reporting"
    result["reason"] = "; ".join(x for x in (result["reason"], exit_note) if x)
    result["details"] = {**result.get("details", {}), "exit_code": returncode,
                         "stderr_tail": plain_text(stderr).strip().splitlines()[-8:]}
    return result


class _Background:
    """One isolated check running in a thread (its work is in a child process), started now."""

    def __init__(self, chk: Check, ctx: Context, timeout: float, log: Optional[Callable[[str], None]],
                 started_s: float) -> None:
        self.chk, self.result = chk, None
        self.beside: List[str] = []
        self.proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self._cancelled = False

        def keep(proc: subprocess.Popen) -> None:
            with self._lock:
                self.proc = proc
                if self._cancelled:  # the run was interrupted before this process existed
                    _kill_group(proc)

        def work() -> None:
            self.result = {**run_isolated(chk, ctx, timeout, keep), "started_s": started_s}
            if log:
                log(_finished_line(self.result))

        self.thread = threading.Thread(target=work, name=f"check-{chk.name}", daemon=True)
        self.thread.start()

    def join(self) -> dict:
        self.thread.join()
        return self.result

    def kill(self) -> None:
        """Kill the check's process group, now or as soon as it starts (the run was interrupted)."""
        with self._lock:
            self._cancelled = True
            if self.proc is not None:
                _kill_group(self.proc)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _finished_line(res: dict) -> str:
    return f"[{res['name']}] {res['status']}{': ' + res['reason'] if res['reason'] else ''} ({res['seconds']:.1f} s)"


class _Run:
    """The state of one :func:`run_checks` call: its clock, its results and its background checks."""

    def __init__(self, ctx: Context, isolate: bool, total_budget_s: Optional[float],
                 log: Optional[Callable[[str], None]]) -> None:
        self.ctx, self.isolate, self.total_budget_s, self.log = ctx, isolate, total_budget_s, log
        self.start = time.perf_counter()
        self.results: Dict[str, dict] = {}
        self.running: List[_Background] = []

    def settle(self) -> None:
        """Wait for every background check and keep its result."""
        for bg in self.running:
            self.results[bg.chk.name] = {**bg.join(), "beside": bg.beside}
        self.running.clear()

    def kill(self) -> None:
        for bg in self.running:
            bg.kill()

    def step(self, chk: Check) -> None:
        """Wait for background checks if ``chk`` runs alone, then run it (or start it in the background)."""
        ctx = self.ctx
        if chk.alone:
            self.settle()
        left = (None if self.total_budget_s is None
                else self.total_budget_s - (time.perf_counter() - self.start))
        if left is not None and left < 5:
            self.results[chk.name] = {
                "name": chk.name, "title": chk.title, "status": "failed",
                "reason": f"not run: the run's total budget of {self.total_budget_s:.0f} s was spent",
                "seconds": 0.0, "budget_s": chk.budget(ctx), "details": {}}
            return
        timeout = chk.budget(ctx) if left is None else min(chk.budget(ctx), left)
        background = self.isolate and chk.background
        beside = [bg.chk.name for bg in self.running if bg.thread.is_alive()]
        if self.log:
            self.log(f"[{chk.name}] {chk.title} (budget {chk.budget(ctx):.0f} s)"
                     + (" in the background, beside the next checks" if background else "")
                     + (f", beside {', '.join(beside)}" if beside else "") + " ...")
        started = round(time.perf_counter() - self.start, 2)
        for bg in self.running:
            if bg.chk.name in beside:
                bg.beside.append(chk.name)
        if background:
            bg = _Background(chk, ctx, timeout, self.log, started)
            bg.beside.extend(beside)
            self.running.append(bg)
            return
        res = run_isolated(chk, ctx, timeout) if self.isolate else run_here(chk, ctx)
        self.results[chk.name] = {**res, "started_s": started, "beside": beside}
        if self.log:
            self.log(_finished_line(res))


def run_checks(ctx: Context, names: Sequence[str], *, isolate: bool = True, total_budget_s: Optional[float] = None,
               log: Optional[Callable[[str], None]] = None) -> List[dict]:
    """Run the named checks in order; a check that would start after ``total_budget_s`` is not run (failed).

    Isolated, a ``background`` check runs beside the checks after it until one marked ``alone`` (or the end);
    results keep the order of ``names`` and list the checks that ran ``beside`` each."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown check(s) {unknown}; known: {', '.join(REGISTRY)}")
    run = _Run(ctx, isolate, total_budget_s, log)
    try:
        for name in names:
            run.step(REGISTRY[name])
        run.settle()
    except BaseException:  # Ctrl-C or a bug: no background check outlives the run
        run.kill()
        raise
    return [run.results[n] for n in names]


#: terminal colour and cursor codes (torch.export's errors carry them)
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain_text(text: str) -> str:
    """``text`` without terminal escape codes, for the JSON and markdown reports."""
    return _ESCAPES.sub("", text)


def _cell(text: str, limit: Optional[int] = None) -> str:
    """One table cell: no pipes or line breaks; cut at ``limit`` characters (the whole text follows the table)."""
    text = str(text).replace("|", "/").replace("\n", " ")
    return text if limit is None or len(text) <= limit else text[:limit].rstrip() + " ... (below)"


def markdown_report(meta: dict, results: Sequence[dict]) -> str:
    """The report as markdown: a summary table, then every check's parts, tables and failure details."""
    n_failed = sum(r["status"] == "failed" for r in results)
    lines = [f"# {meta.get('title', 'checks')}", "",
             f"- command: `{meta.get('command', '')}`",
             f"- mode: {'dry run (CPU, tiny)' if meta.get('dry_run') else 'full'}",
             f"- device: {meta.get('device')}; machine: {meta.get('machine_line', '')}",
             f"- started {meta.get('started', '')}, {meta.get('total_s', 0):.0f} s in all",
             f"- result: {'FAILED (' + str(n_failed) + ' failed)' if n_failed else 'all passed'}"]
    env = meta.get("environment") or {}
    if env:
        lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    lines += ["", "| check | status | s (budget) | note |", "|---|---|---:|---|"]
    for r in results:
        beside = "beside " + ", ".join(r["beside"]) if r.get("beside") else ""
        note = "; ".join(x for x in (_cell(r["reason"], 300), beside) if x)
        lines.append(f"| {r['name']}: {_cell(r['title'])} | {r['status']} | {r['seconds']:.1f} ({r['budget_s']:.0f}) | "
                     f"{note} |")
    for r in results:
        d = r.get("details") or {}
        lines += ["", f"## {r['name']}: {r['status']}", ""]
        if r["reason"]:
            lines.append(f"{r['reason']}")
            lines.append("")
        for part, state in (d.get("parts") or {}).items():
            lines.append(f"- {part}: {state}")
        for key, value in d.items():
            if key in ("parts", "table", "traceback", "stderr_tail", "results", "rows", "runs"):
                continue
            lines.append(f"- {key}: {json.dumps(value) if not isinstance(value, str) else value}")
        if d.get("table"):
            lines += ["", d["table"]]
        for key in ("traceback", "stderr_tail"):
            if d.get(key):
                lines += ["", "```", *d[key], "```"]
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str | Path, stem: str, meta: dict, results: Sequence[dict]) -> List[Path]:
    """``<stem>.json`` and ``<stem>.md`` under ``out_dir`` (written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "passed": not any(r["status"] == "failed" for r in results), "checks": list(results)}
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    atomic_write_text(paths[0], json.dumps(payload, indent=1) + "\n")
    atomic_write_text(paths[1], markdown_report(meta, results))
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m hidiff.profiling.checkrun NAME CONTEXT_JSON``: one check, its result as one marked line."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2:
        print("usage: python -m hidiff.profiling.checkrun NAME CONTEXT_JSON", file=sys.stderr)
        return 2
    import hidiff.profiling.gpu_checks  # noqa: F401  # deferred: registers the checks; gpu_checks imports this module
    # As ``python -m`` this file is ``__main__``; the checks registered in the imported module.
    from hidiff.profiling import checkrun  # deferred: as `python -m` this file is __main__, not the module
    result = checkrun.run_here(checkrun.REGISTRY[args[0]], checkrun.Context.from_json(args[1]))
    sys.stdout.flush()
    print("\n" + RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
