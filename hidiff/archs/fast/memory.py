"""Results written into existing storage when autograd is off (no new full-size allocation)."""
from __future__ import annotations

import torch


def matmul_into(dst: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """dst[...] = a @ b for a (B, n, k) and b (k, m) or (B, k, m), dst (B, rows, W, m); no temporary if possible."""
    b = b.to(a.dtype)
    autocast = a.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(a.device.type)  # 'meta' has none
    if dst.is_contiguous() and dst.dtype == a.dtype and not autocast:
        torch.matmul(a, b, out=dst.view(a.shape[0], -1, dst.shape[-1]))
    else:
        dst.copy_(torch.matmul(a, b).view(dst.shape))


def residual_add(x: torch.Tensor, y: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """x + y without a new full-size allocation when autograd is off.

    The sum goes into x's storage when ``inplace`` (the caller hands x over), else
    into y's (a fresh branch output).  With autograd on it is a plain ``x + y``.
    """
    if torch.is_grad_enabled() or y.shape != x.shape:
        return x + y
    dtype = torch.result_type(x, y)
    if inplace and x.dtype == dtype:
        return x.add_(y)
    return y.add_(x) if y.dtype == dtype else x + y
