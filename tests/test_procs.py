"""tests/procs.py: a failed or hung subprocess is reported with who failed, how, and its last output."""
from __future__ import annotations

import os
import sys
import time

import pytest

from procs import run_checked, torchrun

RANK_1_ABORTS = """
import os, sys
rank = int(os.environ["RANK"])
print(f"rank {rank} says hello", file=sys.stderr, flush=True)
if rank == 1:
    os.abort()
"""


def test_a_signal_is_named_with_the_stderr_tail():
    code = "import os, sys; print('about to abort', file=sys.stderr, flush=True); os.abort()"
    with pytest.raises(AssertionError) as info:
        run_checked([sys.executable, "-c", code], timeout=120)
    msg = str(info.value)
    assert "killed by SIGABRT (signal 6)" in msg and "about to abort" in msg


def test_an_unexpected_exit_code_and_an_expected_one():
    with pytest.raises(AssertionError, match="expected exit code 0.*\nended with: exit code 3"):
        run_checked([sys.executable, "-c", "raise SystemExit(3)"], timeout=120)
    assert run_checked([sys.executable, "-c", "raise SystemExit(3)"], timeout=120, returncode=3).returncode == 3


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    """The child starts a grandchild (as torchrun starts its ranks); neither outlives the timeout."""
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(600)")
    with pytest.raises(AssertionError, match="timed out after 15 s"):
        run_checked([sys.executable, "-c", code], timeout=15)  # the child only sleeps: room enough when loaded
    assert pid_file.is_file(), "the child never started its grandchild"
    grandchild = int(pid_file.read_text())
    for _ in range(100):  # SIGKILL is delivered asynchronously; init reaps the orphan
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_torchrun_failure_names_the_rank_and_its_signal(tmp_path):
    script = tmp_path / "abort_rank1.py"
    script.write_text(RANK_1_ABORTS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with pytest.raises(AssertionError) as info:
        run_checked(torchrun(2, script, log_dir=tmp_path / "logs"), timeout=300, env=env, cwd=tmp_path)
    msg = str(info.value)
    assert "rank 1 failed: killed by SIGABRT (signal 6)" in msg
    assert "--- rank 1 output (tail) ---\n  rank 1 says hello" in msg
