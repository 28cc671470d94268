"""Run a test's subprocess (a script, or torchrun and its ranks) with a timeout and a failure that says who and why.

``run_checked(cmd, timeout=..., env=..., cwd=...)`` returns the ``CompletedProcess`` (text output captured)
when the exit status is the expected one; otherwise, or when the timeout passes (the whole process group is
killed, torchrun's ranks included), it raises ``AssertionError`` naming the command, the exit code or signal
(``killed by SIGABRT``), for torchrun the failing rank(s) with their exit codes, and the tails of stderr and
stdout.  ``torchrun(nproc, script, *args)`` is the command prefix for a local multi-process run whose rank
output lines are prefixed ``[rank<N>]:`` so a failure can quote the failing rank's own lines.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pytest

from conftest import run_env

TAIL_LINES = 40

# torchrun's failure summary: "rank      : 1 (local_rank: 1)" then "exitcode  : -6 (pid: 123)"
_ROOT_CAUSE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


def torchrun(nproc: int, script: str | Path, *args: str | Path, log_dir: Optional[str | Path] = None) -> list[str]:
    """``python -m torch.distributed.run`` on this host: ``nproc`` ranks, one rendezvous store on a port the
    store itself picked (``--standalone``: no free-port race), each rank's output tee'd with a rank prefix.

    ``log_dir``: where torchrun keeps its per-rank log files (give one under ``tmp_path``; default: a new
    directory under the system temp folder, never removed).
    """
    logs = ["--log-dir", str(log_dir)] if log_dir is not None else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *logs,
            "--tee", "3", "--log-line-prefix-template", "[rank${rank}]:", str(script), *map(str, args)]


def describe_returncode(code: Optional[int]) -> str:
    """``exit code 1`` / ``killed by SIGABRT (signal 6)``; torchrun reports a rank's signal as ``-N`` too."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (signal {-code})"
    return f"exit code {code}"


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    rows = (text or "").rstrip().splitlines()
    cut = rows[-lines:]
    return ("  ...\n" if len(rows) > lines else "") + "\n".join("  " + r for r in cut) if rows else "  (empty)"


def failed_ranks(output: str) -> list[tuple[int, int]]:
    """(rank, exit code) of every failed rank in a torchrun failure summary, in the order printed."""
    return [(int(r), int(c)) for r, c in _ROOT_CAUSE.findall(output or "")]


def _rank_lines(output: str, rank: int) -> str:
    prefix = f"[rank{rank}]:"
    return "\n".join(line[len(prefix):] for line in (output or "").splitlines() if line.startswith(prefix))


def explain(cmd: Sequence[str], code: Optional[int], stdout: str, stderr: str, why: str) -> str:
    """The failure message: what ran, how it ended, which rank failed and the output tails."""
    parts = [f"{why}: {' '.join(map(str, cmd))}", f"ended with: {describe_returncode(code)}"]
    both = (stderr or "") + "\n" + (stdout or "")
    for rank, rc in failed_ranks(both):
        parts.append(f"rank {rank} failed: {describe_returncode(rc)}")
        own = _rank_lines(both, rank)
        if own:
            parts.append(f"--- rank {rank} output (tail) ---\n{_tail(own)}")
    parts.append(f"--- stderr (tail) ---\n{_tail(stderr)}")
    parts.append(f"--- stdout (tail) ---\n{_tail(stdout, 15)}")
    return "\n".join(parts)


def run_checked(cmd: Sequence[str | Path], *, timeout: float, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[str | Path] = None, returncode: Optional[int] = 0,
                input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` to completion within ``timeout`` seconds, output captured as text.

    ``returncode``: the exit status the test expects (``None``: any; the caller checks it).  The process
    runs in a session of its own so a timeout kills it with all its children (torchrun's ranks).
    """
    cmd = [str(c) for c in cmd]
    proc = subprocess.Popen(cmd, env=None if env is None else dict(env), cwd=cwd, text=True,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        raise AssertionError(explain(cmd, None, stdout, stderr, f"timed out after {timeout:g} s (killed)")) from None
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    finally:
        # ranks a torchrun left behind (it should have stopped them) must not outlive the test
        _kill_group(proc, only_leftovers=True)
    if returncode is not None and proc.returncode != returncode:
        raise AssertionError(explain(cmd, proc.returncode, stdout, stderr,
                                     f"expected {describe_returncode(returncode)}, the command failed"))
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen, only_leftovers: bool = False) -> None:
    if only_leftovers and proc.poll() is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Proc:
    """A subprocess in a session of its own whose merged output is read line by line in a thread: waits never
    block forever, and a kill takes its whole process group (torchrun's ranks too)."""

    def __init__(self, cmd: list, cwd: Path, env: dict | None = None) -> None:
        self.p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env or run_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._ended = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stdout:
            self._q.put(line)
        self._q.put(None)

    def _take(self, timeout: float) -> str | None:
        """The next output line, or None at its end or after ``timeout`` seconds."""
        if self._ended:
            return None
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self._ended = True
            return None
        self.lines.append(line)
        return line

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self._take(max(0.1, deadline - time.time()))
            if line is None:
                break
            if m := re.search(pattern, line):
                return m
        self.kill()
        raise AssertionError(self.explain(f"never saw {pattern!r} (within {timeout:g} s)"))

    def finish(self, timeout: float = 120) -> int:
        """The exit status once it ends by itself within ``timeout`` seconds (else it is killed: a failure)."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(self.explain(f"did not end within {timeout:g} s (killed)")) from None
        finally:
            self.kill()
        deadline = time.time() + 10
        while time.time() < deadline and self._take(max(0.1, deadline - time.time())) is not None:
            pass
        return rc

    def kill(self) -> None:
        """SIGKILL to the whole process group, also when the leader already ended (ranks left behind)."""
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.p.wait(timeout=60)

    def explain(self, why: str) -> str:
        """Failure message: the command, how it ended (exit code or signal), failed torchrun ranks, output tail."""
        while self._take(0) is not None:
            pass
        return explain(self.p.args, self.p.poll(), "", self.output, why)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def spawn():
    """``spawn(cmd, cwd, env=None)`` starts a ``Proc``; whatever is still running when the test ends is killed."""
    started: list[Proc] = []

    def start(cmd: list, cwd: Path, env: dict | None = None) -> Proc:
        started.append(Proc(cmd, cwd, env))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
