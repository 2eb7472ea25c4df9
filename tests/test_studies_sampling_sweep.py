"""studies/sampling_sweep.py: guidance in an interval through the pipeline's step callback."""

from __future__ import annotations

import torch

from janusflow_core import GenerationPipeline
from studies.sampling_sweep import guidance_interval


def test_guidance_interval_sets_each_steps_weight_from_its_start_time(tiny_bundle):
    pipe = GenerationPipeline(tiny_bundle)
    w, hook = guidance_interval(3.0, 0.5, 1.0, 4)
    states = list(pipe.iterate("a circle", 4, w, 1, guided=True, callback_on_step_end=hook))
    assert [s.guidance_scale for s in states] == [1.0, 1.0, 3.0, 3.0]
    w, hook = guidance_interval(3.0, 0.0, 0.5, 4)
    late = list(pipe.iterate("a circle", 4, w, 1, guided=True, callback_on_step_end=hook))
    assert [s.guidance_scale for s in late] == [3.0, 3.0, 1.0, 1.0]
    assert not torch.equal(states[-1].z_next, late[-1].z_next)
