"""The one ODE loop: uniform time grid, guidance weight, a solver step, one state per step, a step hook."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .solvers import SOLVERS, VelocityFn

GuidedField = Callable[[float], VelocityFn]  # guidance weight w -> the velocity field v(z, t) guided with w


@dataclass
class StepState:
    """What a caller sees after each step (index is 0-based)."""

    index: int
    num_steps: int
    t: float  # time at which the step's velocity was evaluated
    z_t: torch.Tensor  # latent at t, before the step
    velocity: torch.Tensor  # guided velocity at (z_t, t)
    z_next: torch.Tensor  # latent after the step (at t + dt)
    guidance_scale: float = 1.0  # the guidance weight this step's velocity used

    @property
    def x1_hat(self) -> torch.Tensor:
        """Predicted clean latent: follow the velocity straight to t = 1, z_t + (1 - t) * v."""
        return self.z_t + (1.0 - self.t) * self.velocity

    @property
    def finished(self) -> bool:
        """Whether this is the last step of the grid (a run that ends earlier was stopped)."""
        return self.index + 1 == self.num_steps

    @property
    def result(self) -> torch.Tensor:
        """The latent of a run that ends with this step: z_next after the last step of the grid; x̂1 when
        the run stopped earlier (its z_next is still partly noise, x̂1 is the model's best guess)."""
        return self.z_next if self.finished else self.x1_hat


@dataclass(frozen=True)
class StepControl:
    """What a step callback may ask for: stop the run after this step, or a new guidance weight for the
    steps that follow (None keeps the current one)."""

    stop: bool = False
    guidance_scale: float | None = None


StepCallback = Callable[[StepState], "StepControl | None"]


def stop_when(event: threading.Event) -> StepCallback:
    """A step callback that stops the run at the first step end after ``event`` is set (e.g. a Stop button)."""
    return lambda state: StepControl(stop=True) if event.is_set() else None


def timesteps(num_steps: int) -> list[float]:
    """t_k = k / n for k = 0..n-1 (the official grid; t never reaches 1)."""
    return [k / num_steps for k in range(num_steps)]


def sample(field: GuidedField, z0: torch.Tensor, num_steps: int, solver: str = "euler", guidance_scale: float = 1.0,
           callback: StepCallback | None = None) -> Iterator[StepState]:
    """Integrate dz/dt = field(w)(z, t) from z0 at t = 0, yielding a :class:`StepState` after each step.

    ``callback(state)`` runs once per step, after the state has been handed out and before the next step
    starts (so whoever iterates can act on a state first, e.g. show it and press Stop). It may return a
    :class:`StepControl`: ``stop`` ends the run there (``state.result`` is then x̂1), ``guidance_scale``
    is the weight from the next step on. Raises FloatingPointError as soon as a non-finite value appears
    (instead of a black image).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown sampler {solver!r}; allowed: {', '.join(SOLVERS)}")
    step = SOLVERS[solver]
    dt = 1.0 / num_steps
    z, w = z0, float(guidance_scale)
    velocity = field(w)
    for k, t in enumerate(timesteps(num_steps)):
        z_next, v = step(z, t, dt, velocity)
        if not torch.isfinite(z_next).all():
            raise FloatingPointError(
                f"non-finite values appeared in the latent at step {k + 1}/{num_steps} (t={t:.3f}); "
                "the model overflowed in this precision: try bf16 or fp32")
        state = StepState(index=k, num_steps=num_steps, t=t, z_t=z, velocity=v, z_next=z_next, guidance_scale=w)
        yield state
        control = callback(state) if callback is not None else None
        if control is not None and control.stop:
            return
        if control is not None and control.guidance_scale is not None and control.guidance_scale != w:
            w = float(control.guidance_scale)
            velocity = field(w)
        z = z_next


def integrate(velocity: VelocityFn, z0: torch.Tensor, num_steps: int, solver: str = "euler") -> Iterator[StepState]:
    """:func:`sample` for a velocity field without guidance (the weight has nothing to change)."""
    return sample(lambda _w: velocity, z0, num_steps, solver)
