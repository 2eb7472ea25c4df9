"""Step maths: guidance, solvers, the time convention and the loop."""

from __future__ import annotations

import threading

import pytest
import torch

from janusflow_core.sampling import StepControl, cfg, euler_step, heun_step, integrate, sample, stop_when, timesteps


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
    return lambda w: (lambda z, t: w * a)


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
