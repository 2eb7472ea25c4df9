"""Classifier-free guidance as JanusFlow applies it to velocities."""

from __future__ import annotations

import torch


def cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """w * v_cond - (w - 1) * v_uncond on every channel; w = 1 gives the conditional velocity."""
    return w * v_cond - (w - 1.0) * v_uncond
