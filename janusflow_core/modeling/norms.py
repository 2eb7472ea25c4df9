"""RMSNorm as JanusFlow uses it everywhere (LLM, decoder aligner, inside the U-ViT)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Statistics in float32; the result is cast back to the input dtype BEFORE the weight multiply
    (SPEC 2). ``channels_first`` normalises dim 1 of an NCHW tensor."""

    def __init__(self, dim: int, eps: float = 1e-6, channels_first: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = 1 if self.channels_first else -1
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(dim, keepdim=True) + self.eps)
        w = self.weight.view(-1, 1, 1) if self.channels_first else self.weight
        return w * y.to(x.dtype)
