"""FastHIM's pixel chunks: taken under the stripes' device rule (hidiff/archs/fast/stripes.py), and giving the
whole image's result, in its dtype, under bf16 autocast too."""
from __future__ import annotations

import pytest
import torch

from hidiff.archs.fast.him import FastHIM
from hidiff.archs.him import HIM

DIM, HEADS, PRIOR_DIM = 16, 2, 24


def _pair():
    torch.manual_seed(0)
    fast = FastHIM(DIM, HEADS, PRIOR_DIM, bias=True).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    textbook = HIM(DIM, HEADS, PRIOR_DIM, bias=True).eval()
    textbook.load_state_dict(fast.state_dict())
    return fast, textbook


def _inputs():
    g = torch.Generator().manual_seed(2)
    return 4 * torch.randn(2, DIM, 9, 7, generator=g), torch.randn(2, 4, PRIOR_DIM, generator=g)


def _attend_calls(him: FastHIM) -> list:
    calls = [0]
    attend = him._attend

    def counted(*args):
        calls[0] += 1
        return attend(*args)

    him._attend = counted
    return calls


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_chunks_under_bf16_autocast_are_as_precise_as_the_whole_image(channels_last):
    fast, textbook = _pair()
    x, prior = _inputs()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = textbook(x, prior)                        # fp32
        out = {}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["textbook"] = textbook(x, prior)
            for chunk in (None, 20):                    # 63 pixels: whole, then 20-pixel chunks
                fast.inference_chunk_pixels = chunk
                for inplace in (False, True):
                    out[chunk, inplace] = fast(x.clone(), prior, inplace=inplace)
    err = {key: (y.float() - ref).abs().max().item() for key, y in out.items()}
    whole = err[None, False]
    assert whole <= 2 * err["textbook"], err            # both formulations round in bf16, differently
    for key, y in out.items():
        if key != "textbook":
            assert err[key] <= 1.25 * whole, err
            assert y.dtype == out[None, False].dtype, (key, y.dtype)
    assert torch.equal(out[20, False], out[20, True]) and torch.equal(out[None, False], out[None, True])


def test_chunks_only_without_autograd_on_the_cpu():
    fast, _ = _pair()
    fast.inference_chunk_pixels = 20
    calls = _attend_calls(fast)
    x, prior = _inputs()
    with torch.no_grad():
        fast(x, prior)
        assert calls[0] == 4                            # ceil(63 / 20) chunks
        calls[0] = 0
        fast.to("meta")(x.to("meta"), prior.to("meta"))  # any other device (CUDA) takes the image whole
        assert calls[0] == 1
    calls[0] = 0
    fast.to_empty(device="cpu")(x, prior)               # with autograd: whole
    assert calls[0] == 1
