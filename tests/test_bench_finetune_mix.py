"""bench/finetune_mix.py: the share of two-object scenes it reports must be the share it trains on."""

from __future__ import annotations

import collections

import numpy as np
import torch
from conftest import load_bench

from janusflow_core.shapes import TASKS
from janusflow_core.training.data import GenerationPool


def test_reweighted_pool_keeps_every_two_object_scene_at_the_asked_share():
    fm = load_bench("finetune_mix")
    n = 600  # drawn task by task in TASKS order, as build_generation_pool does with uniform weights
    pool = GenerationPool([[f"scene {i}"] for i in range(n)], torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1),
                          np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(3, -1))
    out = fm.reweighted(pool, 0.75)
    kept = [int(c[0].split()[1]) for c in out.captions]
    tasks = collections.Counter(TASKS[i % len(TASKS)] for i in kept)
    assert sum(tasks[t] for t in fm.TWO_OBJECT_TASKS) == 300  # all of them
    assert sum(tasks.values()) == 400  # 300 / 0.75
    assert out.latents.flatten().tolist() == [float(i) for i in kept]  # rows stay aligned with captions
    assert out.images[:, 0, 0, 0].tolist() == [i % 256 for i in kept]
    assert len(fm.reweighted(pool, 1.0).captions) == 300
