"""On a CPU the trainer has glibc's malloc keep freed memory, so a step's large activations are not faulted in
again at every step (hidiff/utils/malloc.py); the option does not change a run's config hash."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_env
from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import config_hash, load_options
from procs import run_checked

FAULTS = """
import resource, sys, torch
from hidiff.utils.malloc import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def step():
    torch.empty(16 * 2**20).fill_(1.0)      # 64 MiB, above any mmap threshold, every page touched, then freed
for _ in range(10):                         # glibc settles its free lists within a few steps
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_kept_memory_is_reused_instead_of_faulted_in_at_every_step():
    def faults(mode: str) -> tuple:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=run_env(),
                             cwd=REPO, timeout=120, check=True).stdout.split()
        return out[0] == "True", int(out[1])

    kept, with_keep = faults("keep")
    _, without = faults("system")
    pages = 5 * 64 * 2**20 // 4096
    assert kept, "keep_freed_memory() did not take on this glibc system"
    assert without > 0.9 * pages, without          # every step faulted its 64 MiB in again
    assert with_keep < 0.02 * pages, with_keep     # the freed block was reused


def test_the_trainer_keeps_cpu_memory_by_default_and_the_option_does_not_change_the_config_hash(tmp_path):
    write_pairs(tmp_path / "data")
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(tiny_options(tmp_path, train={"total_iter": 1}), sort_keys=False))
    res = run_checked([sys.executable, str(REPO / "scripts" / "train.py"), "-opt", str(cfg)], cwd=tmp_path,
                      env=run_env(), timeout=300)
    expected = "freed CPU memory kept for reuse " + ("yes" if sys.platform.startswith("linux") else "no")
    assert expected in res.stderr, res.stderr[-2000:]
    off = run_checked([sys.executable, str(REPO / "scripts" / "train.py"), "-opt", str(cfg), "-o",
                       "train.keep_cpu_memory=false", "-o", "name=tiny_off"], cwd=tmp_path, env=run_env(), timeout=300)
    assert "freed CPU memory kept for reuse no" in off.stderr, off.stderr[-2000:]
    on, other = load_options(cfg, is_train=True), load_options(cfg, ["train.keep_cpu_memory=false"], is_train=True)
    assert on.train.keep_cpu_memory and not other.train.keep_cpu_memory
    assert config_hash(on) == config_hash(other)      # runs from before the option resume; --resume auto agrees
