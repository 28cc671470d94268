"""Learning-rate schedules: the official HI-Diff values and agreement with torch's own schedulers."""
import math

import pytest
import torch

from hidiff.models.lr_scheduler import (CosineAnnealingRestartCyclicLR, CosineAnnealingRestartLR,
                                        MultiStepRestartLR, build_scheduler)
from hidiff.errors import ConfigError


def _opt(lr=2e-4):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _official():
    return CosineAnnealingRestartCyclicLR(_opt(2e-4), periods=[100000, 200000], restart_weights=[1, 1],
                                          eta_mins=[2e-4, 1e-6])


@pytest.mark.parametrize("k,expected,rel", [(150000, 1.7086e-4, 1e-4), (200000, 1.0050e-4, 1e-4),
                                            (250000, 3.014e-5, 1e-3), (300000, 1.0e-6, 1e-6)])
def test_official_verified_values(k, expected, rel):
    # docs/architecture.md 3.2, VERIFIED by running the official scheduler
    assert _official().lr_at(k)[0] == pytest.approx(expected, rel=rel)


def test_official_is_flat_for_first_period_plus_one():
    s = _official()
    for k in (1, 2, 50000, 100000, 100001):
        assert s.lr_at(k)[0] == pytest.approx(2e-4, rel=1e-12)
    assert s.lr_at(100002)[0] < 2e-4
    # closed form of docs/architecture.md 3.2 for the second period
    for k in (100002, 123457, 299999):
        ref = 1e-6 + 0.5 * (2e-4 - 1e-6) * (1 + math.cos(math.pi * (k - 1 - 100000) / 200000))
        assert s.lr_at(k)[0] == pytest.approx(ref, rel=1e-12)


def test_step_to_sets_param_groups_and_state_round_trip():
    s = _official()
    s.step_to(150000)
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(1.7086e-4, rel=1e-4)
    s2 = _official()
    s2.load_state_dict(s.state_dict())
    assert s2.optimizer.param_groups[0]["lr"] == s.optimizer.param_groups[0]["lr"]
    assert s2.last_iter == 150000


def test_cosine_restart_matches_torch_cosine_annealing():
    eta_min, T = 1e-5, 37
    ours = CosineAnnealingRestartLR(_opt(1e-3), periods=[T], restart_weights=[1], eta_min=eta_min)
    opt = _opt(1e-3)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=eta_min)
    for k in range(1, T + 2):  # iteration k uses t = k - 1
        assert ours.lr_at(k)[0] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step()
        ref.step()


def test_cosine_restart_second_period_restarts_with_weight():
    s = CosineAnnealingRestartLR(_opt(1.0), periods=[10, 10], restart_weights=[1, 0.5], eta_min=0.0)
    # t = 11 is one step into the second period: 0.5 * 0.5 * (1 + cos(pi / 10))
    assert s.lr_at(12)[0] == pytest.approx(0.25 * (1 + math.cos(math.pi / 10)))
    assert s.lr_at(11)[0] == pytest.approx(0.0, abs=1e-12)  # t = 10: end of period 1


def test_multistep_matches_torch_multistep():
    ours = MultiStepRestartLR(_opt(0.1), milestones=[3, 7, 7], gamma=0.5)
    opt = _opt(0.1)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 7, 7], gamma=0.5)
    for k in range(1, 12):
        assert ours.lr_at(k)[0] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        ref.step()


def test_multistep_restart_by_hand():
    s = MultiStepRestartLR(_opt(1.0), milestones=[2, 4, 6], gamma=0.5, restarts=[0, 5], restart_weights=[1, 0.5])
    got = [s.lr_at(t + 1)[0] for t in range(8)]
    assert got == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.5, 0.25, 0.25])


def test_linear_warmup():
    s = CosineAnnealingRestartCyclicLR(_opt(2e-4), periods=[100], restart_weights=[1], eta_mins=[2e-4],
                                       warmup_iter=4)
    assert [s.lr_at(k)[0] for k in range(1, 6)] == pytest.approx([0.5e-4, 1e-4, 1.5e-4, 2e-4, 2e-4])


def test_build_scheduler_errors_and_default():
    opt = _opt()
    with pytest.raises(ConfigError, match="CosineAnnealingRestartCyclicLR"):
        build_scheduler(opt, {"type": "CosineAnnealingRestartCylicLR", "periods": [10]})
    with pytest.raises(ConfigError, match="periods sum to 10"):
        build_scheduler(opt, {"type": "CosineAnnealingRestartLR", "periods": [10]}, total_iter=20)
    with pytest.raises(ConfigError, match="eta_mins"):
        build_scheduler(opt, {"type": "CosineAnnealingRestartCyclicLR", "periods": [10, 10], "eta_mins": [0]})
    with pytest.raises(ConfigError, match="perods"):
        build_scheduler(opt, {"type": "CosineAnnealingRestartLR", "perods": [10]})
    assert build_scheduler(opt, None).lr_at(1000) == [pytest.approx(2e-4)]


def test_past_the_last_period_the_final_eta_min_is_held():
    """docs/quirks.md S10: the official scheduler crashed past its last period; the shipped Swintormer file stops
    where its periods end (852k)."""
    s = _official()
    assert s.lr_at(300001)[0] == s.lr_at(400000)[0] == pytest.approx(1e-6, rel=1e-12)
    s.step_to(350000)
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-12)
    from pathlib import Path
    from hidiff.config import load_options
    opt = load_options(Path(__file__).resolve().parents[1] / "options" / "train_swintormer_dpdd.yml", is_train=True)
    assert opt.train.total_iter == 852_000 == sum(opt.train.scheduler.kwargs["periods"])
