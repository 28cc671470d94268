"""A U-Net stage that reuses its input's storage at inference (the CPU-fast formulation of
:class:`~hidiff.archs.basic_layer.BasicLayer`)."""
from __future__ import annotations

from typing import Optional

import torch

from hidiff.archs.basic_layer import BasicLayer


class FastBasicLayer(BasicLayer):
    """``forward(x, prior, film, consume_input=True)``: without autograd, the HIM and the blocks
    accumulate into x's storage (the caller must not need x afterwards).  Build it with
    ``fused=True`` (its HIM and blocks are then the fast classes that take ``inplace``)."""

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None,
                film: Optional[torch.Tensor] = None, consume_input: bool = False) -> torch.Tensor:
        own = consume_input
        if self.him is not None:
            x = self.him(x, prior, inplace=own)
            own = True
        for block in self.blocks:
            x = block(x, film, inplace=own)
            own = True
        return x
