"""distributed.cleanup(): a real (one-rank, gloo) process group is destroyed after a normal end and after an error,
with the barrier of an orderly end only after a normal end."""
from __future__ import annotations

import pytest
import torch.distributed as dist

from hidiff.engine import distributed as D


def _start_group(tmp_path, name: str) -> None:
    store = dist.FileStore(str(tmp_path / name), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert D.is_dist() and D.get_world_size() == 1


def test_cleanup_destroys_the_group_after_a_normal_end_and_after_an_error(tmp_path, monkeypatch):
    barriers = []                     # the group each real barrier ran in: it must still exist then
    real_barrier = dist.barrier

    def counting_barrier(*args, **kwargs):
        barriers.append(D.is_dist())
        return real_barrier(*args, **kwargs)

    monkeypatch.setattr(dist, "barrier", counting_barrier)
    _start_group(tmp_path, "normal")
    D.cleanup()  # barrier first (a normal end), then destroy
    assert not D.is_dist()
    assert barriers == [True], barriers             # one barrier, before the group was destroyed
    _start_group(tmp_path, "error")
    with pytest.raises(RuntimeError, match="a rank failed"):
        try:
            raise RuntimeError("a rank failed")
        finally:
            D.cleanup()  # an exception propagates: no barrier, still destroyed
    assert not D.is_dist()
    assert barriers == [True], barriers             # still only the normal end's barrier
    D.cleanup()  # without a group: nothing to do
    assert barriers == [True], barriers
