"""hidiff/utils/atomic.py: parallel writes keep the process umask; a long legal name is written atomically."""
from __future__ import annotations

import os
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hidiff.utils import atomic
from hidiff.utils.atomic import atomic_open, atomic_write_bytes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_threads_reading_the_umask_leave_it_as_it_was(umask_022):
    """Reading the umask sets it to 0 for a moment: without the lock, two threads can leave it at 0 for good."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as possible
    seen: set = set()
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        for _ in range(2000):
            seen.add(atomic._umask())

    try:
        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert seen == {0o022}
    assert os.umask(0o022) == 0o022


def test_parallel_atomic_writes_get_the_umask_permissions(tmp_path, umask_022):
    """data/prepare/crops.py writes from a thread pool: every file gets 0644 and the umask stays 022."""
    paths = [tmp_path / f"crop_{i:03d}.png" for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: atomic_write_bytes(p, b"x"), paths))
    assert os.umask(0o022) == 0o022
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o644}


@pytest.mark.parametrize("name", ["n" * 246 + ".png", "é" * 125 + ".png"], ids=["250-bytes", "multibyte"])
def test_a_long_legal_name_is_written_atomically(tmp_path, name):
    """``.<name>.XXXXXXXX.tmp`` adds 14 bytes: the name is cut in the temporary file's, which still matches
    ``.*.tmp`` (CheckpointStore.remove_stale_temp_files)."""
    assert 250 <= len(os.fsencode(name)) <= 255
    target = tmp_path / name
    with atomic_open(target, "wb") as fh:
        fh.write(b"first")
        temps = list(tmp_path.glob(".*.tmp"))
        assert len(temps) == 1 and len(os.fsencode(temps[0].name)) <= 255, temps
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == [name]
