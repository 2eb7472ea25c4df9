"""The time grid the ODE loop walks: (t_k, dt_k) for each step, t = 0 noise, t = 1 image.

The official grid is uniform: t_k = k / n, dt = 1 / n for k = 0 .. n - 1 (SPEC 5.4), so t_n = 1 is never
evaluated by Euler. The SD3 time shift (Esser et al. 2024, eq. 23) moves the grid's points towards the
noise end; it is written for sigma = 1 - t, the noise level of a convention where sigma = 1 is noise:

    sigma' = s * sigma / (1 + (s - 1) * sigma)

Substituting sigma = 1 - t and t' = 1 - sigma' gives, in this project's convention,

    t' = t / (s - (s - 1) * t)

which maps 0 to 0 and 1 to 1, is increasing for every s > 0, is the identity for s = 1, and for s > 1
spends more of the steps at small t (near the noise), where the velocity changes most. The shifted grid
applies it to the uniform points: t_k = shift_time(k / n, s), dt_k = t_{k+1} - t_k.
"""

from __future__ import annotations

Grid = list[tuple[float, float]]  # (t_k, dt_k) per step


def shift_time(t: float, shift: float) -> float:
    """The SD3 time shift in this project's convention (t = 0 noise): t / (s - (s - 1) t)."""
    return t / (shift - (shift - 1.0) * t)


def time_grid(num_steps: int, shift: float = 1.0) -> Grid:
    """(t_k, dt_k) for k = 0 .. n - 1 with t_0 = 0 and t_{n-1} + dt_{n-1} = 1.

    ``shift`` 1 is the official grid exactly: t_k = k / n and dt = 1 / n (not differences of neighbours,
    which round differently). Other shifts use the points shift_time(k / n, s) and their differences.
    """
    if num_steps < 1:
        raise ValueError(f"a time grid needs at least one step, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"the time shift must be above 0, got {shift}")
    if shift == 1.0:
        return [(k / num_steps, 1.0 / num_steps) for k in range(num_steps)]
    points = [shift_time(k / num_steps, shift) for k in range(num_steps)] + [1.0]
    return [(points[k], points[k + 1] - points[k]) for k in range(num_steps)]


def start_index(grid: Grid, t0: float) -> int:
    """Where a run that starts at time ``t0`` (image-to-image: t0 = 1 - strength) joins ``grid``: the last
    grid time at or before t0 (rounding towards the noise, so the run never skips noise it was asked to
    add), and never past the last step (at least one step runs). t0 = 0 gives 0, the whole grid."""
    k0 = 0
    for k, (t, _) in enumerate(grid):
        if t <= t0 + 1e-9:  # 1 - 0.1 and 27 / 30 differ in the last bit
            k0 = k
    return k0
