"""Cross-request batching: concurrent generation runs share one LLM forward per velocity evaluation.

Every run keeps its own sampling loop, in its own thread, with its own prompt, seed, guidance weight, step
count, sampler and stop flag; only the model call inside ``GenerationPipeline.forward_velocity`` is shared.
That call submits the run's latent rows, their times and its :class:`PromptState` to the batcher's one
worker thread and waits. The worker gathers what is waiting (it waits briefly for the other running
requests, which are between two evaluations), stacks the rows, joins the prompt caches into one and runs
one forward, then hands each run its own rows back. Runs at different steps, or in the two evaluations of a
Heun step, share a forward: the time embedding is per row.

Prompts of different lengths: each run's cached prefix (R_i rows, P_i positions) is copied into a cache of
P = max P_i positions, right-padded with zeros that the attention mask hides, and each row keeps its own
positions (``PromptState.next_position``), so every row attends to exactly what it attends to alone. The
joined cache is kept while the same runs keep meeting. What changes is only the batch size of the matmuls
and the length of the masked attention rows: results agree with a run alone up to float rounding (measured
and bounded in tests/test_batching.py; on CPU in fp32 latents within 1e-4, images within 1/255).

Prompts without a cache (``use_cache=False``) or with the CUDA fast path's static cache run alone. A
forward that fails is retried for each run alone, so one run's failure reaches only that run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from ..modeling import JanusFlowModel, PromptState


@dataclass
class _Evaluation:
    z: torch.Tensor  # (R, C, h, w)
    t: torch.Tensor  # (R,)
    prompt: PromptState
    done: threading.Event = field(default_factory=threading.Event)
    velocity: torch.Tensor | None = None
    error: BaseException | None = None


def join_prompts(states: list[PromptState]) -> PromptState:
    """One cached PromptState holding the rows of ``states`` in order, right-padded to the longest prefix.

    Padding positions get zero keys and values and attention mask 0; ``next_position`` keeps each row's own
    length, so the tokens appended after the prefix take the positions they take alone.
    """
    length = max(s.length for s in states)
    embeds, masks, starts = [], [], []
    for s in states:
        pad = length - s.length
        embeds.append(torch.nn.functional.pad(s.embeds, (0, 0, 0, pad)))  # (R_i, P, D)
        masks.append(torch.nn.functional.pad(s.attention_mask, (0, pad)))  # (R_i, P), 0 on the padding
        starts.append(s.positions(1)[:, 0])  # (R_i,)
    layers = []
    for i in range(len(states[0].cache.layers)):
        keys, values = [], []
        for s in states:
            layer = s.cache.layers[i]
            pad = length - s.length
            keys.append(torch.nn.functional.pad(layer.keys, (0, 0, 0, pad)))  # (R_i, H, P, d)
            values.append(torch.nn.functional.pad(layer.values, (0, 0, 0, pad)))
        layers.append((torch.cat(keys), torch.cat(values)))
    return PromptState(embeds=torch.cat(embeds), attention_mask=torch.cat(masks),
                       cache=DynamicCache(ddp_cache_data=layers), next_position=torch.cat(starts))


class VelocityBatcher:
    """Runs ``model.velocity`` for many threads at once: ``velocity`` has the model's signature and blocks
    until the forward that carried its rows has run.

    ``running()`` marks a run as in progress for as long as it samples: the worker waits (at most
    ``gather`` times the last forward's duration, capped at ``max_wait_s``) until every running run has
    submitted before it starts a forward. ``max_rows`` caps the rows of one forward (the oldest evaluations
    go first; one evaluation larger than the cap runs alone).
    """

    def __init__(self, model: JanusFlowModel, *, max_rows: int = 64, gather: float = 0.5, max_wait_s: float = 0.05):
        self.model = model
        self.max_rows = max_rows
        self.gather = gather
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._queue: list[_Evaluation] = []
        self._running = 0
        self._worker: threading.Thread | None = None
        self._closed = False
        self._forward_s = max_wait_s  # moving average of one forward's duration (before the first: the cap)
        self._joined: tuple[tuple[PromptState, ...], PromptState] | None = None  # the last joined cache
        self.forwards = 0  # counters, for tests and benchmarks
        self.batched_rows = 0

    # -- what the runs call --------------------------------------------------------------------------------
    @contextmanager
    def running(self) -> Iterator[None]:
        """Count the caller as a running run (its evaluations are worth waiting for) while in the block."""
        with self._cond:
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def velocity(self, z: torch.Tensor, t: torch.Tensor, prompt: PromptState) -> torch.Tensor:
        """``model.velocity(z, t, prompt)``, computed in a forward shared with the other waiting runs."""
        job = _Evaluation(z, t, prompt)
        with self._cond:
            if self._closed:
                raise RuntimeError("the velocity batcher is closed")
            self._queue.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="janusflow-batcher", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.velocity

    def close(self) -> None:
        """Stop the worker once the queue is empty (later calls raise)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the worker ------------------------------------------------------------------------------------------
    def _take(self) -> list[_Evaluation] | None:
        """Wait for evaluations, then for the other running runs' (briefly); the oldest that fit ``max_rows``."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = time.perf_counter() + min(self.max_wait_s, self.gather * self._forward_s)
            while len(self._queue) < self._running and sum(j.z.shape[0] for j in self._queue) < self.max_rows:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken, rows = [], 0
            for job in self._queue:
                if taken and rows + job.z.shape[0] > self.max_rows:
                    break
                taken.append(job)
                rows += job.z.shape[0]
            del self._queue[:len(taken)]
            return taken

    def _serve(self) -> None:
        while (jobs := self._take()) is not None:
            start = time.perf_counter()
            with torch.inference_mode():
                try:
                    self._forward(jobs)
                except Exception:  # retried one by one: a failure reaches only the run that causes it
                    self._joined = None  # its cache may hold the failed forward's positions
                    for job in jobs:
                        job.velocity, job.error = None, None
                        try:
                            self._forward([job])
                        except Exception as exc:
                            job.error = exc
            seconds = time.perf_counter() - start
            self._forward_s = seconds if self.forwards == 0 else 0.8 * self._forward_s + 0.2 * seconds
            self.forwards += 1
            self.batched_rows += sum(j.z.shape[0] for j in jobs)
            for job in jobs:
                job.done.set()

    def _forward(self, jobs: list[_Evaluation]) -> None:
        # a DynamicCache prefix joins others; a StaticCache one (the CUDA fast path's fixed buffers, captured by
        # CUDA graphs) and no cache at all run alone
        shareable = [j for j in jobs if isinstance(j.prompt.cache, DynamicCache)]
        for job in jobs:
            if len(shareable) < 2 or not isinstance(job.prompt.cache, DynamicCache):  # the unbatched call
                job.velocity = self.model.velocity(job.z, job.t, job.prompt)
        if len(shareable) < 2:
            return
        prompts = tuple(j.prompt for j in shareable)
        if self._joined is None or len(self._joined[0]) != len(prompts) or any(
                a is not b for a, b in zip(self._joined[0], prompts)):
            self._joined = (prompts, join_prompts(list(prompts)))
        joined = self._joined[1]
        z = torch.cat([j.z for j in shareable])  # (sum R_i, C, h, w)
        t = torch.cat([j.t.to(z.device) for j in shareable])
        v = self.model.velocity(z, t, joined)
        for job, part in zip(shareable, torch.split(v, [j.z.shape[0] for j in shareable])):
            job.velocity = part
