"""The one ODE loop: uniform time grid, a solver step, one state per step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .solvers import SOLVERS, VelocityFn


@dataclass
class StepState:
    """What a caller sees after each step (index is 0-based)."""

    index: int
    num_steps: int
    t: float  # time at which the step's velocity was evaluated
    z_t: torch.Tensor  # latent at t, before the step
    velocity: torch.Tensor  # guided velocity at (z_t, t)
    z_next: torch.Tensor  # latent after the step (at t + dt)

    @property
    def x1_hat(self) -> torch.Tensor:
        """Predicted clean latent: follow the velocity straight to t = 1, z_t + (1 - t) * v."""
        return self.z_t + (1.0 - self.t) * self.velocity


def timesteps(num_steps: int) -> list[float]:
    """t_k = k / n for k = 0..n-1 (the official grid; t never reaches 1)."""
    return [k / num_steps for k in range(num_steps)]


def integrate(velocity: VelocityFn, z0: torch.Tensor, num_steps: int, solver: str = "euler") -> Iterator[StepState]:
    """Yield a :class:`StepState` after each of ``num_steps`` steps from z0 at t = 0.

    Raises FloatingPointError as soon as a non-finite value appears (instead of a black image).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown sampler {solver!r}; allowed: {', '.join(SOLVERS)}")
    step = SOLVERS[solver]
    dt = 1.0 / num_steps
    z = z0
    for k, t in enumerate(timesteps(num_steps)):
        z_next, v = step(z, t, dt, velocity)
        if not torch.isfinite(z_next).all():
            raise FloatingPointError(
                f"non-finite values appeared in the latent at step {k + 1}/{num_steps} (t={t:.3f}); "
                "the model overflowed in this precision: try bf16 or fp32")
        yield StepState(index=k, num_steps=num_steps, t=t, z_t=z, velocity=v, z_next=z_next)
        z = z_next
