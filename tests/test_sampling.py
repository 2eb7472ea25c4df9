"""Step maths: guidance, solvers, the time convention and the loop."""

from __future__ import annotations

import threading

import pytest
import torch

from janusflow_core.sampling import (
    APGSettings,
    StepControl,
    apg,
    cfg,
    cfg_zero_star,
    euler_step,
    heun_step,
    integrate,
    optimized_scale,
    sample,
    shift_time,
    start_index,
    stop_when,
    time_grid,
    timesteps,
)


def test_cfg_weight_one_is_the_conditional_velocity_and_is_linear():
    vc, vu = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(cfg(vc, vu, 1.0), vc)
    torch.testing.assert_close(cfg(vc, vu, 0.0), vu)
    torch.testing.assert_close(cfg(vc, vu, 2.0), 2 * vc - vu)  # every channel, not 3 of 4


def test_time_convention_t0_noise_t1_image():
    """With the straight-path velocity v = x - z0 (rectified flow), Euler from t = 0 lands on the image."""
    z0, x = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    states = list(integrate(lambda z, t: x - z0, z0, 7))
    assert [s.t for s in states] == timesteps(7) == [k / 7 for k in range(7)]
    torch.testing.assert_close(states[-1].z_next, x, atol=1e-6, rtol=0)
    # x1_hat = z_t + (1 - t) v predicts the image at every step
    for s in states:
        torch.testing.assert_close(s.x1_hat, x, atol=1e-6, rtol=0)


def test_euler_is_exact_on_constant_field_and_heun_on_linear_in_t_field():
    z = torch.zeros(3)
    a, b = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.1, -1.0])
    z1, v = euler_step(z, 0.25, 0.5, lambda z, t: a)
    torch.testing.assert_close(z1, 0.5 * a)
    torch.testing.assert_close(v, a)
    field = lambda z, t: a + b * t  # noqa: E731
    zh, _ = heun_step(z, 0.25, 0.5, field)
    exact = a * 0.5 + b * (0.75 ** 2 - 0.25 ** 2) / 2
    torch.testing.assert_close(zh, exact)
    ze, _ = euler_step(z, 0.25, 0.5, field)
    assert not torch.allclose(ze, exact)


def test_loop_yields_once_per_step_and_stops_on_nan():
    calls = []
    states = list(integrate(lambda z, t: calls.append(t) or torch.ones_like(z), torch.zeros(2), 5))
    assert len(states) == 5 and len(calls) == 5 and [s.index for s in states] == list(range(5))
    with pytest.raises(FloatingPointError, match="step 3/4"):
        list(integrate(lambda z, t: torch.full_like(z, float("nan")) if t >= 0.5 else z, torch.ones(2), 4))
    with pytest.raises(ValueError, match="allowed: euler, heun"):
        list(integrate(lambda z, t: z, torch.ones(2), 4, solver="ddim"))


def weighted(a: torch.Tensor):
    """A guided field whose velocity is w * a: each step moves z by w * a / n."""
    return lambda w, _t: (lambda z, t: w * a)


def test_the_hook_sees_every_step_and_can_stop_after_k():
    a, seen = torch.tensor([1.0, -2.0]), []
    states = list(sample(weighted(a), torch.zeros(2), 5, guidance_scale=1.0, callback=lambda s: seen.append(s.index)))
    assert seen == [0, 1, 2, 3, 4] and states[-1].finished and states[-1].result.equal(states[-1].z_next)
    stopped = list(sample(weighted(a), torch.zeros(2), 5, callback=lambda s: StepControl(stop=s.index == 1)))
    assert len(stopped) == 2 and not stopped[-1].finished
    torch.testing.assert_close(stopped[-1].z_next, 2 * a / 5)  # two steps of a / 5
    torch.testing.assert_close(stopped[-1].result, a)  # x̂1 = z_t + (1 - t) v = a / 5 + 4/5 a


def test_a_new_guidance_weight_applies_from_the_next_step():
    a = torch.tensor([1.0, 3.0])
    states = list(sample(weighted(a), torch.zeros(2), 4, guidance_scale=2.0,
                         callback=lambda s: StepControl(guidance_scale=0.5) if s.index == 0 else None))
    assert [s.guidance_scale for s in states] == [2.0, 0.5, 0.5, 0.5]
    torch.testing.assert_close(states[0].velocity, 2.0 * a)
    torch.testing.assert_close(states[-1].z_next, (2.0 + 3 * 0.5) * a / 4)


def test_stop_when_stops_at_the_first_step_end_after_the_event():
    event, a = threading.Event(), torch.ones(1)
    run = sample(weighted(a), torch.zeros(1), 10, callback=stop_when(event))
    first, second = next(run), next(run)
    event.set()  # e.g. a Stop button pressed while the second state is on screen
    assert list(run) == [] and second.index == 1 and not second.finished
    assert stop_when(threading.Event())(first) is None


# -- the time grid ------------------------------------------------------------------------------------

def test_shift_one_is_the_official_grid_exactly():
    for n in (1, 7, 30, 100):
        assert time_grid(n) == time_grid(n, 1.0) == [(k / n, 1.0 / n) for k in range(n)]
        assert timesteps(n, 1.0) == [k / n for k in range(n)]


@pytest.mark.parametrize("shift", [0.1, 0.5, 2.0, 3.0, 10.0])
def test_a_shifted_grid_rises_from_0_to_1_and_follows_sd3s_formula(shift):
    grid = time_grid(30, shift)
    times = [t for t, _ in grid] + [grid[-1][0] + grid[-1][1]]
    assert times[0] == 0.0 and times[-1] == pytest.approx(1.0, abs=1e-12)
    assert all(a < b for a, b in zip(times, times[1:])) and all(dt > 0 for _, dt in grid)
    uniform = [k / 30 for k in range(1, 30)]
    # shift > 1 spends the steps nearer the noise (smaller t), shift < 1 nearer the image
    assert all((t < u) if shift > 1 else (t > u) for t, u in zip(times[1:30], uniform))
    for t in (0.1, 0.5, 0.9):  # SD3: sigma' = s sigma / (1 + (s - 1) sigma) with sigma = 1 - t
        sigma = 1 - t
        assert 1 - shift_time(t, shift) == pytest.approx(shift * sigma / (1 + (shift - 1) * sigma), abs=1e-12)
    assert shift_time(0.5, 3.0) == 0.25


def test_euler_lands_on_the_image_on_any_grid():
    z0, x = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    states = list(integrate(lambda z, t: x - z0, z0, time_grid(9, 3.0)))
    assert [s.t for s in states] == timesteps(9, 3.0) and [s.dt for s in states] == [dt for _, dt in time_grid(9, 3.0)]
    torch.testing.assert_close(states[-1].z_next, x, atol=1e-6, rtol=0)
    tail = list(integrate(lambda z, t: x - z0, 0.4 * x + 0.6 * z0, time_grid(10)[4:]))  # start at t = 0.4
    assert len(tail) == 6 and tail[0].t == 0.4 and tail[-1].finished
    torch.testing.assert_close(tail[-1].z_next, x, atol=1e-6, rtol=0)


def test_a_start_time_joins_the_grid_at_the_last_point_at_or_before_it():
    grid = time_grid(30)
    assert start_index(grid, 0.0) == 0  # strength 1: the whole grid
    assert start_index(grid, 1 - 0.1) == 27  # 1 - 0.1 = 0.9 = 27 / 30 despite the last bit
    assert start_index(grid, 0.5) == 15 and start_index(grid, 0.51) == 15  # rounds towards the noise
    assert start_index(grid, 0.999) == 29 and start_index(grid, 1.0) == 29  # at least one step runs
    shifted = time_grid(30, 3.0)
    k = start_index(shifted, 0.5)
    assert shifted[k][0] <= 0.5 < shifted[k + 1][0]


# -- guidance rules -----------------------------------------------------------------------------------

def test_cfg_zero_star_scales_the_unconditional_velocity_per_sample():
    v_c = torch.tensor([[2.0, 0.0], [2.0, 2.0]])
    v_u = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    s = optimized_scale(v_c, v_u)
    torch.testing.assert_close(s.flatten(), torch.tensor([1.0, 2.0]))  # <v_c, v_u> / ||v_u||^2 per sample
    out = cfg_zero_star(v_c, v_u, 3.0)
    torch.testing.assert_close(out[0], cfg(v_c[0], v_u[0], 3.0))  # s* = 1: plain CFG
    torch.testing.assert_close(out[1], v_c[1])  # v_c a multiple of v_u: nothing left to guide
    torch.testing.assert_close(cfg_zero_star(v_c, v_u, 1.0), v_c)
    images = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)  # per sample over channels and pixels
    manual = (images[0][1] * images[1][1]).sum() / (images[1][1] ** 2).sum()
    torch.testing.assert_close(optimized_scale(*images)[1].flatten(), manual.reshape(1))


def test_apg_splits_the_update_along_the_conditional_prediction():
    x_c, x_u = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, -1.0]])  # update (1, 1): parallel (1, 0)
    plain = APGSettings(eta=0.0, norm_threshold=0.0, momentum=0.0)
    out, running = apg(x_c, x_u, 3.0, settings=plain)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0]]))  # x_c + 2 * orthogonal part (0, 1)
    torch.testing.assert_close(running, torch.tensor([[1.0, 1.0]]))
    full = APGSettings(eta=1.0, norm_threshold=0.0, momentum=0.0)  # both parts, no clipping: CFG
    torch.testing.assert_close(apg(x_c, x_u, 3.0, settings=full)[0], cfg(x_c, x_u, 3.0))
    clipped = APGSettings(eta=0.0, norm_threshold=1.0, momentum=0.0)  # update clipped to norm 1
    torch.testing.assert_close(apg(x_c, x_u, 3.0, settings=clipped)[0], torch.tensor([[1.0, 2 * 0.5 ** 0.5]]))
    small = torch.tensor([[0.5, 0.0]])  # an update already within the threshold is left alone
    torch.testing.assert_close(apg(x_c, small, 2.0, settings=clipped)[0], x_c)  # and it is all parallel
    moving = APGSettings(eta=0.0, norm_threshold=0.0, momentum=-0.5)
    out, running = apg(x_c, x_u, 3.0, previous=torch.tensor([[1.0, 0.0]]), settings=moving)
    torch.testing.assert_close(running, torch.tensor([[0.5, 1.0]]))  # (1, 1) - 0.5 * (1, 0)
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(apg(x_c, x_u, 1.0)[0], x_c)  # w = 1: the conditional prediction
