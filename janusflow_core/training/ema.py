"""Exponential moving average of the trained weights (the shipped weights are the EMA ones)."""

from __future__ import annotations

import torch
from torch import nn


def ema_init(model: nn.Module) -> dict[str, torch.Tensor]:
    """A float32 copy of every floating-point parameter, keyed by name."""
    return {k: p.detach().float().clone() for k, p in model.named_parameters()}


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * param, for the parameters that train; frozen ones are copied.
    One fused (foreach) update per group instead of a kernel per tensor: on a GPU this tiny model's step is
    bound by kernel launches."""
    trained, frozen = ([], []), ([], [])
    for name, p in model.named_parameters():
        dst = trained if p.requires_grad else frozen
        dst[0].append(ema[name])
        dst[1].append(p.detach().float())
    if trained[0]:
        torch._foreach_lerp_(trained[0], trained[1], 1 - decay)
    if frozen[0]:
        torch._foreach_copy_(frozen[0], frozen[1])


@torch.no_grad()
def copy_ema_into(ema: dict[str, torch.Tensor], model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.copy_(ema[name].to(p.dtype))
