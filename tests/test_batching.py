"""Cross-request batching (janusflow_core/pipelines/batching.py): concurrent runs share forwards and each gets
what it gets alone, within the stated bound (latents 1e-4, pixels 1/255)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from janusflow_core import GenerationPipeline
from janusflow_core.pipelines import VelocityBatcher, join_prompts
from janusflow_core.sampling import StepControl

# (prompt, steps, cfg, seed, num_images, sampler): different lengths, step counts, weights (1 has no uncond
# rows), seeds, batch sizes and samplers (Heun evaluates twice per step)
REQUESTS = [
    ("a red circle", 5, 2.0, 1, 1, "euler"),
    ("three big blue squares left of a small green triangle above a circle", 7, 3.5, 2, 2, "heun"),
    ("x", 4, 1.0, 3, 1, "euler"),
    ("a green triangle above a circle", 6, 0.0, 4, 3, "euler"),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pipes(tiny_bundle):
    """A pipeline alone and one with a batcher, on the same model."""
    alone, shared = GenerationPipeline(tiny_bundle), GenerationPipeline(tiny_bundle)
    shared.batcher = VelocityBatcher(tiny_bundle.model)
    yield alone, shared
    shared.batcher.close()


def together(pipe, requests, callbacks=None, latents=None) -> list:
    """Run the requests in threads that start sampling at the same moment; each one's last state, or its error."""
    runs = [pipe.iterate(p, s, w, seed, n, smp, latents=None if latents is None else latents[i],
                         callback_on_step_end=None if callbacks is None else callbacks[i])
            for i, (p, s, w, seed, n, smp) in enumerate(requests)]
    out: list = [None] * len(runs)
    start = threading.Barrier(len(runs))

    def go(i):
        start.wait()
        try:
            out[i] = list(runs[i])[-1]
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def assert_same_images(pipe, a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    for x, y in zip(pipe.decode(a), pipe.decode(b)):
        diff = np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int))
        assert diff.max() <= 1


def test_joined_prompts_of_different_lengths_give_each_row_its_own_velocity(tiny_bundle):
    pipe = GenerationPipeline(tiny_bundle)
    model = tiny_bundle.model
    states = [pipe.encode_prompt(*pipe.prompt_rows(p, n, guided)) for p, n, guided in
              [("a red circle", 1, True), ("three big blue squares left of a small green triangle", 2, True),
               ("x", 1, False)]]
    assert len({s.length for s in states}) == 3
    joined = join_prompts(states)
    assert joined.rows == 2 + 4 + 1 and joined.length == max(s.length for s in states)
    assert joined.next_position.tolist() == [s.length for s in states for _ in range(s.rows)]
    assert joined.attention_mask[0, states[0].length:].sum() == 0  # the padding is masked
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(s.rows, 4, 8, 8, generator=g) for s in states]
    ts = [torch.rand(s.rows, generator=g) for s in states]  # every row at its own time
    with torch.inference_mode():
        alone = [model.velocity(z, t, s) for z, t, s in zip(zs, ts, states)]
        shared = model.velocity(torch.cat(zs), torch.cat(ts), joined)
        again = model.velocity(torch.cat(zs), torch.cat(ts), joined)  # the joined cache is cropped back
    torch.testing.assert_close(shared, torch.cat(alone), atol=2e-5, rtol=0)
    torch.testing.assert_close(again, shared, atol=0, rtol=0)


def test_concurrent_requests_share_forwards_and_get_what_they_get_alone(pipes):
    alone, shared = pipes
    solo = [list(alone.iterate(*r))[-1] for r in REQUESTS]
    batched = together(shared, REQUESTS)
    evaluations = sum(s * (2 if smp == "heun" else 1) for _, s, _, _, _, smp in REQUESTS)
    assert shared.batcher.forwards < evaluations  # forwards were shared ...
    assert shared.batcher.batched_rows == sum(s * (2 if smp == "heun" else 1) * n * (1 if w == 1 else 2)
                                              for _, s, w, _, n, smp in REQUESTS)  # ... and every row ran once
    for a, b in zip(solo, batched):
        assert b.finished and b.index == a.index
        assert_same_images(alone, a.result, b.result)


def test_stopping_one_request_leaves_the_others_untouched(pipes):
    alone, shared = pipes
    requests = REQUESTS[:3]
    solo = [list(alone.iterate(*r))[-1].result for r in requests]
    stop_second = [None, lambda state: StepControl(stop=True) if state.index == 1 else None, None]
    batched = together(shared, requests, callbacks=stop_second)
    assert batched[1].index == 1 and not batched[1].finished
    expected_stop = list(alone.iterate(*requests[1], callback_on_step_end=stop_second[1]))[-1].result
    assert_same_images(alone, batched[1].result, expected_stop)
    for k in (0, 2):
        assert batched[k].finished
        assert_same_images(alone, batched[k].result, solo[k])


def test_a_failing_request_never_affects_another(pipes):
    alone, shared = pipes
    requests = REQUESTS[:3]
    solo = [list(alone.iterate(*r))[-1].result for r in requests]
    nan = torch.full((2, 4, 8, 8), float("nan"))  # the second request overflows at its first step
    batched = together(shared, requests, latents=[None, nan, None])
    assert isinstance(batched[1], FloatingPointError)
    for k in (0, 2):
        assert_same_images(alone, batched[k].result, solo[k])


def test_a_forward_that_fails_in_a_batch_is_retried_alone_so_only_its_run_fails(tiny_bundle):
    pipe = GenerationPipeline(tiny_bundle)
    batcher = VelocityBatcher(tiny_bundle.model, gather=1e6, max_wait_s=5.0)
    good = pipe.encode_prompt(*pipe.prompt_rows("a red circle", 1, True))
    other = pipe.encode_prompt(*pipe.prompt_rows("a blue square", 1, True))
    z, t = torch.randn(2, 4, 8, 8), torch.full((2,), 0.25)
    with torch.inference_mode():
        expected = tiny_bundle.model.velocity(z, t, good)
    results: dict = {}
    both_running = threading.Barrier(2)

    def call(name, zz, state):
        with batcher.running():
            both_running.wait()  # the worker now waits for both evaluations
            try:
                results[name] = batcher.velocity(zz, t, state)
            except Exception as exc:
                results[name] = exc

    threads = [threading.Thread(target=call, args=("good", z, good)),
               threading.Thread(target=call, args=("bad", torch.randn(2, 5, 8, 8), other))]  # a wrong channel count
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert batcher.forwards == 1  # the two met in one forward, which failed and was retried for each alone
    assert isinstance(results["bad"], RuntimeError)
    torch.testing.assert_close(results["good"], expected, atol=1e-5, rtol=0)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.velocity(z, t, good)


def test_without_a_cache_a_request_runs_alone_in_the_batcher(pipes):
    alone, shared = pipes
    expected = list(alone.iterate("a red circle", 3, 2.0, 5, 1, use_cache=False))[-1].result
    got = list(shared.iterate("a red circle", 3, 2.0, 5, 1, use_cache=False))[-1].result
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
