"""EMA of parameters and buffers, checked against a hand-rolled average."""
import pytest
import torch
from torch import nn

from hidiff.engine.ema import ModelEMA


def test_ema_averages_params_and_float_buffers_copies_int_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    decay = 0.9
    ema = ModelEMA(net, decay)
    expected = {k: v.clone().float() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        net(torch.randn(4, 2, 5, 5)).square().mean().backward()  # train mode: running stats move too
        opt.step()
        opt.zero_grad()
        ema.update(net)
        for k, v in net.state_dict().items():
            expected[k] = decay * expected[k] + (1 - decay) * v.float() if v.is_floating_point() else v.clone()
    got = ema.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k].to(v.dtype), v, rtol=0, atol=1e-6), k
    assert int(got["1.num_batches_tracked"]) == 3
    assert not torch.equal(got["1.running_mean"], net.state_dict()["1.running_mean"])


def test_applied_to_swaps_and_restores():
    net = nn.Linear(3, 2)
    ema = ModelEMA(net, 0.5)
    live = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # shadow = live + 0.5
    after = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.applied_to(net):
        assert torch.allclose(net.weight, live["weight"] + 0.5)
    assert torch.equal(net.weight, after["weight"])
    restored = ModelEMA(nn.Linear(3, 2), 0.5)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.state_dict()["weight"], ema.state_dict()["weight"])
    with pytest.raises(ValueError):
        ModelEMA(net, 1.0)
