"""ResumableSampler: seeded per (seed, epoch), rank partitions, enlargement, exact resume."""
from __future__ import annotations

import pytest

from hidiff.data.sampler import ResumableSampler
from hidiff.errors import ConfigError


def indices(sampler):
    return [i for i, _ in sampler]


def test_yields_index_epoch_tuples_and_a_permutation():
    s = ResumableSampler(10, seed=0)
    s.set_epoch(4)
    out = list(s)
    assert all(e == 4 for _, e in out)
    assert sorted(indices(s)) == list(range(10)) and len(s) == 10


def test_order_depends_on_seed_and_epoch_deterministically():
    a, b, c = ResumableSampler(50, seed=1), ResumableSampler(50, seed=1), ResumableSampler(50, seed=2)
    assert indices(a) == indices(b)
    assert indices(a) != indices(c)  # BasicSR seeds by the epoch alone: different seeds would agree here
    first = indices(a)
    a.set_epoch(1)
    assert indices(a) != first
    a.set_epoch(0)
    assert indices(a) == first
    assert indices(ResumableSampler(5, seed=1, shuffle=False)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (7, 2), (5, 8)])
def test_rank_partitions_are_disjoint_and_cover(n, world):
    shares = []
    for rank in range(world):
        s = ResumableSampler(n, seed=9, world_size=world, rank=rank)
        s.set_epoch(3)
        shares.append(indices(s))
    assert len({len(sh) for sh in shares}) == 1  # equal length per rank
    flat = [i for sh in shares for i in sh]
    assert set(flat) == set(range(n))  # covering
    padded = len(flat) - n
    assert 0 <= padded < world or n < world  # only the wrap-around padding repeats
    if padded == 0:
        assert len(flat) == len(set(flat))  # disjoint
    full = ResumableSampler(n, seed=9)
    full.set_epoch(3)
    order = indices(full)
    padded_order = (order * (len(flat) // n + 1))[:len(flat)]
    for rank in range(world):  # rank r takes positions r::world of the (padded) epoch permutation
        assert shares[rank] == padded_order[rank::world]


def test_enlarge_ratio_repeats_with_distinct_indices():
    s = ResumableSampler(4, seed=0, enlarge_ratio=3)
    out = indices(s)
    assert sorted(out) == list(range(12)) and len(s) == 12
    assert sorted(i % 4 for i in out) == sorted(list(range(4)) * 3)


def test_resume_after_k_samples_continues_identically():
    ref = ResumableSampler(23, seed=5, world_size=2, rank=1)
    ref.set_epoch(2)
    full = list(ref)
    for k in (0, 1, 7, len(full)):
        run = ResumableSampler(23, seed=5, world_size=2, rank=1)
        run.set_epoch(2)
        it = iter(run)
        seen = [next(it) for _ in range(k)]
        state = run.state_dict(consumed=k)
        resumed = ResumableSampler(23, seed=5, world_size=2, rank=1)
        resumed.load_state_dict(state)
        resumed.set_epoch(2)  # trainers call this each epoch: the same epoch keeps the position
        assert seen + list(resumed) == full
        assert len(resumed) == len(full) - k
        resumed.set_epoch(3)  # the next epoch starts from its beginning
        nxt = ResumableSampler(23, seed=5, world_size=2, rank=1)
        nxt.set_epoch(3)
        assert list(resumed) == list(nxt)


def test_resume_twice_within_one_epoch():
    full = list(ResumableSampler(30, seed=1))
    a = ResumableSampler(30, seed=1)
    a.skip(5)
    part1 = list(a)[:4]  # consumed 4 after resuming at 5
    b = ResumableSampler(30, seed=1)
    b.load_state_dict(a.state_dict(consumed=4))
    assert full[5:9] == part1 and list(b) == full[9:]


def test_state_without_consumed_counts_handed_out_indices():
    s = ResumableSampler(10, seed=0)
    it = iter(s)
    for _ in range(3):
        next(it)
    assert s.state_dict()["consumed"] == 3


def test_mismatched_layout_and_bad_arguments():
    state = ResumableSampler(10, seed=0).state_dict(consumed=0)
    with pytest.raises(ConfigError, match="seed=0.*seed=1"):
        ResumableSampler(10, seed=1).load_state_dict(state)
    with pytest.raises(ConfigError, match="dataset_len"):
        ResumableSampler(11, seed=0).load_state_dict(state)
    with pytest.raises(ConfigError, match="rank"):
        ResumableSampler(10, seed=0, world_size=2, rank=2)
    with pytest.raises(ConfigError, match="enlarge_ratio"):
        ResumableSampler(10, seed=0, enlarge_ratio=0)
    with pytest.raises(ConfigError, match="empty"):
        ResumableSampler(0, seed=0)
