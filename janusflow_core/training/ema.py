"""Exponential moving average of the trained weights (the shipped weights are the EMA ones)."""

from __future__ import annotations

import torch
from torch import nn


def ema_init(model: nn.Module) -> dict[str, torch.Tensor]:
    """A float32 copy of every floating-point parameter, keyed by name."""
    return {k: p.detach().float().clone() for k, p in model.named_parameters()}


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * param, for the parameters that train; frozen ones are copied."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            ema[name].mul_(decay).add_(p.detach().float(), alpha=1 - decay)
        else:
            ema[name].copy_(p.detach())


@torch.no_grad()
def copy_ema_into(ema: dict[str, torch.Tensor], model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.copy_(ema[name].to(p.dtype))
