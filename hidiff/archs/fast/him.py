"""HIM without a query map (the CPU-fast formulation of :class:`~hidiff.archs.him.HIM`)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from hidiff.archs.fast.memory import residual_add
from hidiff.archs.fast.stripes import inference_chunk
from hidiff.archs.him import HIM
from hidiff.archs.sample_wise import sample_wise


class FastHIM(HIM):
    """HIM's maths with Q never formed: per head, the query projection is folded into the N keys
    (K_h W_q,h) and the output projection into the N values (V_h W_p,h^T), and
    ``scaled_dot_product_attention`` runs on the normalised pixels directly (fewer FLOPs,
    one full-size temporary less).  With ``inplace`` the sum is written into x (and keeps x's memory
    format); otherwise the output is usually channels_last, but its strides are not promised.

    Without autograd, on the CPU, it works through chunks of at most ``inference_chunk_pixels`` pixels
    (``inference_chunk``), so no full-size temporaries besides the output are made; the chunks give the
    whole image's result up to float rounding, in the same dtype.  ``kv`` runs one sample at a time.
    """

    fused = True
    inference_chunk_pixels: Optional[int] = None

    def __init__(self, dim: int, num_heads: int, prior_dim: int, bias: bool = False) -> None:
        super().__init__(dim, num_heads, prior_dim, bias)
        sample_wise(self.kv)

    def forward(self, x: torch.Tensor, prior: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """x + HIM(x, prior).  ``inplace=True`` (no autograd) writes the result into x's storage."""
        if not self.fused:
            return super().forward(x, prior)
        b, c, h, w = x.shape
        n = h * w
        tokens = x.permute(0, 2, 3, 1).reshape(b, n, c)  # a view of x for NCHW and channels_last
        keys = self._keys(*self.kv(self.norm2(prior)).chunk(2, dim=-1))
        step = inference_chunk(x, self.inference_chunk_pixels)
        if not step or step >= n:
            out = residual_add(tokens, self._attend(self.norm1(tokens), keys), inplace)  # x + y with autograd
        else:  # pixels are independent, so attend chunk by chunk into one output
            out = None
            for p0 in range(0, n, step):
                part = tokens[:, p0:p0 + step]
                y = self._attend(self.norm1(part), keys)
                if out is None:  # the sum's dtype, as residual_add gives for the whole image
                    dtype = torch.result_type(part, y)
                    out = tokens if inplace and tokens.dtype == dtype else y.new_empty(b, n, c, dtype=dtype)
                torch.add(part, y, out=out[:, p0:p0 + step])
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, n, d)

    def _keys(self, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Per-head keys/values with W_q folded into K and W_p into V (and the q bias as a score offset)."""
        k, v = self._heads(k), self._heads(v)                         # (B, h, N, d)
        heads, d = k.shape[1], k.shape[-1]
        c = heads * d
        w_q = self.q.weight.view(heads, d, c)                         # rows of W_q per head
        w_p = self.proj.weight.view(c, heads, d).transpose(0, 1)      # columns of W_p per head
        k_eff = k @ w_q                                               # (B, h, N, C): scores = xn . k_eff^T
        v_eff = v @ w_p.transpose(1, 2)                               # (B, h, N, C): out = sum_h attn_h . v_eff
        if self.q.bias is None:
            return k_eff, v_eff
        # the q bias adds a per-key constant to the scores
        mask = (k @ self.q.bias.view(heads, d, 1)).transpose(-2, -1) * self.scale  # (B, h, 1, N)
        return k_eff, v_eff, mask

    def _attend(self, xn: torch.Tensor, keys: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """proj(attention(LN(x) -> prior)) for (B, n, C) normalised pixel tokens."""
        b, n, c = xn.shape
        k_eff, v_eff = keys[0].to(xn.dtype), keys[1].to(xn.dtype)
        mask = keys[2].to(xn.dtype) if len(keys) == 3 else None
        heads = k_eff.shape[1]
        query = xn.unsqueeze(1).expand(b, heads, n, c)
        out = F.scaled_dot_product_attention(query, k_eff, v_eff, attn_mask=mask, scale=self.scale)
        out = out.squeeze(1) if heads == 1 else out.sum(1)
        return out + self.proj.bias.to(out.dtype)
