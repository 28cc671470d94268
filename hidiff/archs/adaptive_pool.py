"""Adaptive average pooling that stays correct for every input size in an exported graph.

``nn.AdaptiveAvgPool2d`` is exported to ONNX as an ``AveragePool`` whose kernel
and stride are fixed from the example input, so the latent encoder (which pools
any image to group x group tokens) would only work at the exported size.  At
export time this layer instead writes the pooling as two small matrix products,
``P_h @ x @ P_w^T``, whose averaging matrices are built from the input's
(symbolic) height and width with PyTorch's bin rule
``[floor(i*n/out), ceil((i+1)*n/out))``.  In eager mode it is the stock layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _exporting() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_exporting", None) is not None and compiler.is_exporting():
        return True
    return bool(torch.onnx.is_in_onnx_export())


def pooling_matrix(n, out: int, like: torch.Tensor) -> torch.Tensor:
    """(out, n) matrix whose row i averages the input positions of adaptive-pooling bin i."""
    pos = torch.arange(n, device=like.device)
    i = torch.arange(out, device=like.device)
    start = torch.div(i * n, out, rounding_mode="floor")
    end = torch.div((i + 1) * n + out - 1, out, rounding_mode="floor")
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def adaptive_avg_pool2d_matmul(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, (out_h, out_w))`` as P_h @ x @ P_w^T (equal up to rounding)."""
    p_h = pooling_matrix(x.shape[-2], out_h, x)
    p_w = pooling_matrix(x.shape[-1], out_w, x)
    return torch.matmul(torch.matmul(p_h, x), p_w.transpose(0, 1))


class ExportableAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` (same behaviour, no parameters) that exports for any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _exporting():
            return super().forward(x)
        size = self.output_size
        out_h, out_w = (size, size) if isinstance(size, int) else size
        if out_h is None or out_w is None:
            raise ValueError("ExportableAdaptiveAvgPool2d needs an explicit output size to export")
        return adaptive_avg_pool2d_matmul(x, int(out_h), int(out_w))
