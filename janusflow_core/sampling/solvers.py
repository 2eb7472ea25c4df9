"""ODE solver steps for dz/dt = v(z, t), integrated from t = 0 (noise) towards t = 1 (image).

Each solver is a pure function of (z, t, dt, velocity_fn) and returns (z_next, v), where v is the
velocity evaluated at (z, t) (the one the step's preview uses).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


def euler_step(z: torch.Tensor, t: float, dt: float, velocity: VelocityFn) -> tuple[torch.Tensor, torch.Tensor]:
    """The official sampler: z + dt * v(z, t)."""
    v = velocity(z, t)
    return z + dt * v, v


def heun_step(z: torch.Tensor, t: float, dt: float, velocity: VelocityFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Heun's second-order method (two velocity evaluations per step; exact for v linear in t)."""
    v = velocity(z, t)
    z_pred = z + dt * v
    v_next = velocity(z_pred, t + dt)
    return z + dt * 0.5 * (v + v_next), v


SOLVERS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"euler": euler_step, "heun": heun_step}
