"""Guidance rules: how the conditional and unconditional predictions combine into one.

Each rule is a pure function of the two predictions and the weight w; w = 1 gives the conditional one.
Norms and inner products are per sample, over all of its channels and pixels. ``GUIDANCE`` names them
for the pipeline; the step-level rules (which steps are guided, CFG-Zero*'s zeroed first step) belong to
the pipeline, which knows the time grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """w * v_cond - (w - 1) * v_uncond on every channel; w = 1 gives the conditional velocity."""
    return w * v_cond - (w - 1.0) * v_uncond


def _sample_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def optimized_scale(v_cond: torch.Tensor, v_uncond: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CFG-Zero*'s s* = <v_c, v_u> / ||v_u||^2 per sample, shaped (B, 1, ..., 1): the multiple of v_u
    closest to v_c (least squares), so that s* v_u is what the unconditional velocity agrees with."""
    dims = _sample_dims(v_cond)
    return (v_cond * v_uncond).sum(dims, keepdim=True) / ((v_uncond * v_uncond).sum(dims, keepdim=True) + eps)


def cfg_zero_star(v_cond: torch.Tensor, v_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models"):
    CFG against the rescaled unconditional velocity, w * v_c - (w - 1) * s* v_u with s* from
    :func:`optimized_scale`. s* = 1 is plain CFG; w = 1 the conditional velocity. The paper's other half,
    zeroing the first step(s) of the ODE, is :data:`ZERO_INIT_STEPS` in the pipeline."""
    return w * v_cond - (w - 1.0) * optimized_scale(v_cond, v_uncond) * v_uncond


ZERO_INIT_STEPS = 1  # CFG-Zero*: the velocity of the first grid step is zero (the paper's zero-init, K = 1)


@dataclass(frozen=True)
class APGSettings:
    """Adaptive projected guidance's three parameters (Sadat et al. 2024, "Eliminating Oversaturation and
    Artifacts of High Guidance Scales in Diffusion Models", sec. 4-5).

    ``eta``: weight of the update's part parallel to the conditional prediction (0 drops it: the part that
    oversaturates). ``norm_threshold`` r: the update's norm is clipped at r per sample (0 = no clipping).
    ``momentum`` beta: the update is a running sum diff + beta * previous; the paper's beta is negative,
    which pushes each step away from the previous steps' update.

    Values: eta 0 and beta -0.5 as the paper recommends; r = 2 is scaled to this model's latents. On the
    shapes model the predicted clean latent has norm about 32 and the update x_c - x_u 1 to 4 while t < 0.4,
    below 1 after t = 0.5; r = 2 is about the same share of the latent's norm (6 %) as diffusers' default
    r = 15 is of an SDXL latent (4 x 128 x 128 values of unit scale, norm about 256), so the clipping bites
    on the early steps that set the layout and not on the late ones.
    """

    eta: float = 0.0
    norm_threshold: float = 2.0
    momentum: float = -0.5


APG_DEFAULTS = APGSettings()


def apg(x_cond: torch.Tensor, x_uncond: torch.Tensor, w: float, previous: torch.Tensor | None = None,
        settings: APGSettings = APG_DEFAULTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive projected guidance on predicted clean samples; returns (guided prediction, running update).

    diff = x_c - x_u (+ momentum * ``previous``, the running update of the last step) is clipped to norm
    ``norm_threshold``, split into its parts parallel and orthogonal to x_c, and
    guided = x_c + (w - 1) * (orthogonal + eta * parallel). With eta = 1, no clipping and no momentum this
    is CFG: x_c + (w - 1) * (x_c - x_u). Pass the returned running update as ``previous`` next step.
    """
    dims = _sample_dims(x_cond)
    diff = x_cond - x_uncond
    if previous is not None and settings.momentum != 0.0:
        diff = diff + settings.momentum * previous
    running = diff
    if settings.norm_threshold > 0:
        norm = torch.linalg.vector_norm(diff, dim=dims, keepdim=True)
        diff = diff * torch.clamp(settings.norm_threshold / norm.clamp_min(1e-12), max=1.0)
    unit = x_cond / torch.linalg.vector_norm(x_cond, dim=dims, keepdim=True).clamp_min(1e-12)
    parallel = (diff * unit).sum(dims, keepdim=True) * unit
    orthogonal = diff - parallel
    return x_cond + (w - 1.0) * (orthogonal + settings.eta * parallel), running


GUIDANCE = ("cfg", "cfg-zero-star", "apg")  # the rules a request may name (the pipeline applies them)
