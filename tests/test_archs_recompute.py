"""train.recompute_ffn: the fast GDFN recomputes its depthwise conv and GELU gate in backward.  The gradients
are the same bit for bit, fewer activations are stored, and the trainer and the training benchmark honour it."""
from __future__ import annotations

import pytest
import torch

from conftest import REPO
from hidiff.archs.fast.gdfn import FastGDFN, set_ffn_recompute
from hidiff.config import config_hash, load_options
from test_archs_checkpoint import TINY_G, TINY_SWIN, _loss_and_grads, _net


def _stored_bytes(net, x, z) -> int:
    """Bytes of the distinct storages kept for backward in one training forward (weights left out): what
    autograd saves, seen by a hook, and the inputs of each recomputed region, which the checkpoint holds
    outside that hook (the two halves of ``project_in``'s output)."""
    seen, weights = {}, {p.untyped_storage().data_ptr() for p in net.parameters()}

    def keep(t):
        if t.untyped_storage().data_ptr() not in weights:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def held_by_checkpoint(block):
        region = block._depthwise_gate

        def counted(x1, x2):
            keep(x1), keep(x2)
            return region(x1, x2)
        return counted

    blocks = [m for m in net.modules() if isinstance(m, FastGDFN)]
    wrapped = {m: m.__dict__.get("_depthwise_gate") for m in blocks}   # a caller's own wrapper stays in place
    for m in blocks:
        m._depthwise_gate = held_by_checkpoint(m)
    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            (net(x, z) - x).abs().mean()
    finally:
        for m, before in wrapped.items():
            if before is None:
                del m._depthwise_gate
            else:
                m._depthwise_gate = before
    return sum(seen.values())


def _count_calls(module, method: str) -> list:
    calls, original = [0], getattr(module, method)

    def counted(*a, **k):
        calls[0] += 1
        return original(*a, **k)

    setattr(module, method, counted)
    return calls


@pytest.mark.parametrize("spec,shape", [(TINY_G, (2, 3, 16, 24)),
                                        ({**TINY_SWIN, "ffn_type": "gdfn"}, (2, 3, 32, 32))],
                         ids=["hidiff", "swin_gdfn"])
@pytest.mark.parametrize("levels", [[], [1, 2, 3, 4, "refinement"]], ids=["alone", "inside_checkpointed_levels"])
def test_recomputed_feed_forward_gives_identical_gradients_and_stores_less(spec, shape, levels):
    net = _net(spec)
    net.set_checkpoint_levels(levels)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    z = torch.randn(shape[0], 16, net.prior_dim, generator=torch.Generator().manual_seed(3))
    stored = _stored_bytes(net, x, z)
    ref_loss, ref_grads = _loss_and_grads(net, x, z)
    assert set_ffn_recompute(net, True) == sum(isinstance(m, FastGDFN) for m in net.modules()) > 0
    first = next(m for m in net.modules() if isinstance(m, FastGDFN))
    calls = _count_calls(first, "_depthwise_gate")
    loss, grads = _loss_and_grads(net, x, z)
    assert torch.equal(loss, ref_loss)
    for key, g in grads.items():
        assert torch.equal(g, ref_grads[key]), key
    assert calls[0] == (2 if not levels else 3)    # forward, recomputation (+ the stage's own recomputation)
    if not levels:                                 # with levels checkpointed, the stages store only their inputs
        assert _stored_bytes(net, x, z) < 0.85 * stored
        assert calls[0] == 3                       # the counter is still attached after the count
    calls[0] = 0
    net.eval()
    with torch.no_grad():                          # inference computes as before: nothing to recompute
        net(x, z)
    assert calls[0] == 0


def test_the_official_formulation_never_recomputes():
    net = _net(TINY_G, fused_attention=False)
    x, z = torch.rand(1, 3, 16, 16), torch.randn(1, 16, net.prior_dim)
    ref_loss, _ = _loss_and_grads(net, x, z)
    set_ffn_recompute(net, True)
    stored = _stored_bytes(net, x, z)
    set_ffn_recompute(net, False)
    assert stored == _stored_bytes(net, x, z)      # fused=False takes the official path, stored as before
    loss, _ = _loss_and_grads(net, x, z)
    assert torch.equal(loss, ref_loss)


def test_the_option_defaults_on_and_does_not_change_the_config_hash():
    opt = REPO / "options" / "stage1_gopro.yml"
    on, off = load_options(opt, is_train=True), load_options(opt, ["train.recompute_ffn=false"], is_train=True)
    assert on.train.recompute_ffn and not off.train.recompute_ffn
    assert config_hash(on) == config_hash(off)     # memory for time: a run resumes whichever way it is set


def test_the_training_benchmark_steps_as_the_trainer_does():
    from hidiff.profiling.train_step import StepSpec, TrainStep

    steps = {}
    for formulation, overrides in (("fast", []), ("fast", ["train.recompute_ffn=false"]), ("plain", [])):
        spec = StepSpec(opt=str(REPO / "options" / "default_stage1.yml"), formulation=formulation, batch=1,
                        size=(32, 32), overrides=overrides)
        ts = TrainStep(spec)
        flags = {m.recompute_hidden for net in ts.model.trainable.values() for m in net.modules()
                 if isinstance(m, FastGDFN)}
        steps[(formulation, bool(overrides))] = (flags, ts.step())
    assert steps[("fast", False)][0] == {True} and steps[("fast", True)][0] == {False}
    assert True not in steps[("plain", False)][0]              # the official formulation stores as it did
    assert steps[("fast", False)][1] == steps[("fast", True)][1]   # the same losses and gradient norm
