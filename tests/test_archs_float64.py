"""A float64 model computes in float64: the attention softmaxes widen reduced types to float32, never narrow."""
from __future__ import annotations

import pytest
import torch

from hidiff.archs.fast.him import FastHIM
from hidiff.archs.fast.mdta import FastMDTA
from hidiff.archs.him import HIM
from hidiff.archs.mdta import MDTA
from hidiff.archs.swin_attention import SWDA


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module.eval()


@pytest.mark.parametrize("kind", ["mdta", "him"])
def test_fast_and_textbook_agree_to_float64_rounding(kind):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 9, 7, generator=g, dtype=torch.float64)
    if kind == "mdta":
        fast, textbook, args = FastMDTA(16, 2, bias=True), MDTA(16, 2, bias=True), ()
    else:
        fast, textbook = FastHIM(16, 2, 24, bias=True), HIM(16, 2, 24, bias=True)
        args = (torch.randn(2, 4, 24, generator=g, dtype=torch.float64),)
    fast = _perturbed(fast.double())
    textbook.double().load_state_dict(fast.state_dict())
    with torch.no_grad():
        ref = textbook.eval()(x, *args)
        for chunk in (None, 20):                      # whole image, then stripes / pixel chunks
            fast.inference_chunk_pixels = chunk
            out = fast(x, *args)
            assert out.dtype == torch.float64
            assert (out - ref).abs().max().item() <= 1e-12, chunk


@pytest.mark.parametrize("options", [{"attn_split": 0.5, "channel_attn_temperature": True},
                                     {"attn_split": 1.0, "softmax": "standard"}], ids=["swda", "swin"])
def test_window_attention_gradcheck_in_float64(options):
    torch.manual_seed(0)
    attn = _perturbed(SWDA(4, 1, window_size=4, shift_size=2, **options).double())
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(attn, (x,), eps=1e-6, atol=1e-6)
