"""Generation tab handlers: run the sampler at full speed and show its newest step at a display rate.

``GenerationPipeline.iterate`` checks the request and yields one StepState per solver step (Stop ends the
run through the pipeline's step callback; the last state's ``result`` is the final latent, finished or
stopped). The steps are computed in a thread of their own (``background.SamplerThread``), whose forwards
the engine's batcher shares with the other runs in progress; the handler streams the newest step to the page
whenever there is a newer one (the status line counts the steps), and about every ``preview_interval``
seconds (longer when decoding is slow or busy) it decodes the newest step for display: the predicted clean
image x̂1 or the noisy z_t through the VAE (``GenerationPipeline.preview``), or x̂1 through the fitted linear
latent-to-RGB map (``LatentRGB``, approximate, nearly free). Steps it had no time to show are dropped, never
queued. Previews travel at the model's resolution; the page enlarges them.

The Chat tab draws with the same machinery (``GenerateHandlers.begin`` and ``follow``), with the Generate tab's
settings (``Settings``): one sampler thread per run, the same app-wide preview budget, the same batcher.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from janusflow_core.limits import SEED, InputError, check_choice, check_interval
from janusflow_core.sampling import StepState, stop_when
from janusflow_core.vae import to_pil

from .background import SamplerThread
from .components import loaded_or_refuse, refusals, refuse
from .display import grid
from .engine import Engine, Loaded
from .inputs import open_image
from .sessions import Run, Runs, session_id

log = logging.getLogger(__name__)
PREVIEW_MODES = {"x1": "predicted clean image x̂₁ (VAE)", "x1-fast": "x̂₁, fast approximation (linear latent→RGB)",
                 "zt": "noisy latent z_t (VAE)"}
SAMPLER_NAMES = {"euler": "Euler", "heun": "Heun"}
GUIDANCE_NAMES = {"cfg": "CFG", "cfg-zero-star": "CFG-Zero*", "apg": "APG"}
FIELD_NAMES = {"prompt": "The prompt", "steps": "Steps", "guidance_scale": "CFG", "num_images": "Number of images",
               "seed": "Seed", "sampler": "Sampler", "init_image": "Init image", "strength": "Strength",
               "negative_prompt": "The negative prompt", "shift": "Shift", "guidance_interval": "Guidance interval",
               "guidance": "Guidance"}  # the pipeline's refusals name fields by the page's labels

Output = tuple[Any, str, Any]  # (preview image, status line, gallery)
UPDATE_INTERVAL_S = 0.05  # at most 20 updates (status line, maybe a preview) a second per run
UPDATES_PER_S = 40  # and at most about 40 a second for all runs together (each costs the server a few ms)
PREVIEW_INTERVAL_S = 0.05  # at most 20 previews a second per run
PREVIEW_SHARE = 0.5  # all runs' preview decoding together takes at most this share of the time (one decode at once)


def random_seed() -> int:
    return random.randint(*SEED)


@dataclass
class Settings:
    """The Generate tab's sampling settings as they arrive from the page or the API (unchecked): what
    ``/generate`` runs with, and what a drawing in the chat borrows."""

    cfg: Any = None
    steps: Any = None
    seed: Any = 42
    sampler: Any = "euler"
    preview: Any = "x1"
    init_image: Any = None  # a file path (an upload), a PIL image (a direct call) or None
    strength: Any = 1.0
    negative_prompt: Any = None
    shift: Any = 1.0
    guidance_interval_lo: Any = 0.0
    guidance_interval_hi: Any = 1.0
    guidance: Any = "cfg"


@dataclass
class Started:
    """A run whose request was accepted: its steps (computed on demand) and the checked values."""

    states: Iterator[StepState]
    steps: int
    cfg: float
    seed: int
    sampler: str
    strength: float | None  # set when the run starts from an init image


def describe(started: Started) -> str:
    """The settings a status line names: sampler, weight, seed, and the start image's strength if any."""
    text = f"{SAMPLER_NAMES.get(started.sampler, started.sampler)}, CFG {started.cfg:g}, seed {started.seed}"
    return text + ("" if started.strength is None else f", from the init image at strength {started.strength:g}")


class PreviewBudget:
    """App-wide rationing of preview decodes: one at a time; after a decode that took d seconds, none for the
    next d * (1 / share - 1) seconds (previews take at most ``share`` of one worker's time however many runs
    want them); and when several runs ask, the one that has waited longest for a preview goes first (each
    asks at its updates; a run refused shows its status without a preview and asks again at the next)."""

    def __init__(self, share: float = PREVIEW_SHARE, clock: Callable[[], float] = time.perf_counter):
        self.share = share
        self._clock = clock
        self._guard = threading.Lock()
        self._busy = False
        self._free_at = -math.inf
        self._asking: dict[object, float] = {}  # run -> when it last had a preview (or started)

    def decode(self, run: object, since: float, make: Callable[[], Image.Image]) -> Image.Image | None:
        """``make()`` now for ``run`` (which last had a preview at ``since``), or None when another decode is
        running, the budget is resting, or a run that has waited longer is asking too."""
        with self._guard:
            self._asking[run] = since
            if self._busy or self._clock() < self._free_at or min(self._asking, key=self._asking.get) != run:
                return None
            del self._asking[run]
            self._busy = True
        began = self._clock()
        try:
            return make()
        finally:
            done = self._clock()
            with self._guard:
                self._busy = False
                self._free_at = done + (done - began) * (1.0 / self.share - 1.0)

    def forget(self, run: object) -> None:
        """The run has ended: it no longer asks."""
        with self._guard:
            self._asking.pop(run, None)


def preview_images(loaded: Loaded, state: StepState, mode: str) -> list[Image.Image]:
    """One step's images for display, in the given PREVIEW_MODES mode."""
    if mode == "x1-fast":
        return to_pil(loaded.latent_rgb()(state.x1_hat))
    return loaded.generator.preview(state, mode)


class GenerateHandlers:
    def __init__(self, engine: Engine, *, update_interval: float = UPDATE_INTERVAL_S,
                 preview_interval: float = PREVIEW_INTERVAL_S, updates_per_s: float = UPDATES_PER_S):
        self.engine = engine
        self.runs = Runs("generation")
        self.update_interval = update_interval
        self.updates_per_s = updates_per_s
        self.preview_interval = preview_interval
        self.previews = PreviewBudget()  # shared by every run of this app
        self._streaming = 0  # runs sampling now (their updates share updates_per_s)
        self._count_lock = threading.Lock()

    def token_line(self, prompt: Any) -> str:
        """What the prompt box shows under it: the prompt's length in tokens against the model's limit."""
        if self.engine.state == "failed":
            return "No token count: the model failed to load."
        if self.engine.state != "ready":
            return "The token limit shows here once the model is loaded."
        pipe = self.engine.get().generator
        n, limit = pipe.count_prompt_tokens(prompt if isinstance(prompt, str) else ""), pipe.prompt_token_limit
        if n > limit:
            return f"**{n} / {limit} tokens**: too long, shorten the prompt"
        return f"{n} / {limit} tokens"

    def precheck(self, settings: Settings) -> Any:
        """The checks that need no model (the preview mode, the init image read from its file), before a run
        waits for its turn; returns the init image (RGB) or None. Raises InputError."""
        check_choice("Preview", settings.preview, PREVIEW_MODES)  # the page's own setting; the pipeline the rest
        check_interval(FIELD_NAMES["guidance_interval"], (settings.guidance_interval_lo,
                                                           settings.guidance_interval_hi))
        image = settings.init_image
        if isinstance(image, str) and image:  # an upload: named by its file name, never its server path
            try:
                return open_image(image)
            except FileNotFoundError:
                raise InputError(f"Init image {Path(image).name}: no such file") from None
        return None if image is None or (isinstance(image, str) and not image) else image

    def begin(self, loaded: Loaded, run: Run, prompt: Any, num_images: Any, settings: Settings, image: Any,
              names: dict[str, str] | None = None) -> Started:
        """Check the whole request against the pipeline (InputError naming the page's fields) and set up its
        steps, stopped by ``run``'s event at a step end."""
        pipe, names = loaded.generator, {**FIELD_NAMES, **(names or {})}
        steps, cfg, num_images, seed = pipe.check_inputs(prompt, settings.steps, settings.cfg, num_images,
                                                         settings.sampler, settings.seed, names=names)
        options = pipe.check_options(image, settings.strength, settings.negative_prompt, settings.shift,
                                     (settings.guidance_interval_lo, settings.guidance_interval_hi),
                                     settings.guidance, names=names)
        states = pipe.iterate(prompt, steps, cfg, seed, num_images, settings.sampler,
                              callback_on_step_end=stop_when(run.event), init_image=options.init_image,
                              strength=options.strength, negative_prompt=options.negative_prompt,
                              shift=options.shift, guidance_interval=options.guidance_interval,
                              guidance=options.guidance)
        strength = options.strength if options.init_image is not None and options.strength < 1 else None
        return Started(states, steps, cfg, seed, settings.sampler, strength)

    def follow(self, run: Run, loaded: Loaded, states: Iterator[StepState], preview: str,
               ) -> Iterator[tuple[StepState, Image.Image | None, bool]]:
        """Run ``states`` in a sampler thread and yield ``(newest step, preview sheet or None, False)`` whenever
        the sampler has a step newer than the last one yielded, at the display rate (a preview when one is
        due and the app's budget allows), then ``(last step, None, True)``. Raises what the sampler raised.
        Closing it (or any end) stops the run at the sampler's next step end and waits for the thread."""
        sampler_thread = SamplerThread(states)
        with self._count_lock:
            self._streaming += 1
        try:
            state, next_update, next_preview, last_preview = None, 0.0, 0.0, time.perf_counter()
            while True:
                sampler_thread.wait(next_update - time.perf_counter())  # ends early when the run does
                if sampler_thread.done and sampler_thread.error is None:
                    break  # the final images follow at once
                newest = sampler_thread.newer_than(-1 if state is None else state.index)
                if newest is None:
                    break
                sheet = None
                if time.perf_counter() >= next_preview:
                    began = time.perf_counter()
                    sheet = self.previews.decode(id(run), last_preview,
                                                 lambda s=newest: grid(preview_images(loaded, s, preview)))
                    if sheet is not None:
                        next_preview, last_preview = began + self.preview_interval, began
                yield newest, sheet, False
                state = newest
                next_update = time.perf_counter() + max(self.update_interval, self._streaming / self.updates_per_s)
            if sampler_thread.error is not None:
                raise sampler_thread.error
            last = sampler_thread.newest  # the run's last step
            if last is None:
                raise RuntimeError("the sampler ended before its first step")
            yield last, None, True
        finally:  # a page that went away stops its run at the next step end
            run.event.set()
            sampler_thread.join()
            self.previews.forget(id(run))
            with self._count_lock:
                self._streaming -= 1

    def run(self, prompt: str, cfg: float, steps: int, seed: int, num_images: int, sampler: str, preview: str,
            request: gr.Request, init_image: str | None = None, strength: float = 1.0,
            negative_prompt: str | None = None, shift: float = 1.0, guidance_interval_lo: float = 0.0,
            guidance_interval_hi: float = 1.0, guidance: str = "cfg") -> Iterator[Output]:
        """Generate images from a prompt, streaming the newest step as it comes.

        Yields (preview, status, gallery): "Step k / N" whenever the sampler has finished a step the page has
        not seen (the newest one; faster steps are counted, not queued), with a preview of that step about
        every ``preview_interval`` seconds (else ``gr.skip()``), then a last one with the final images in the
        gallery. The pipeline checks the request and owns the run; Stop reaches it through its step callback.
        ``init_image`` (a file) with ``strength`` < 1 starts from that image; the other options go to the
        pipeline by the same names (``guidance_interval`` as its two ends).
        """
        settings = Settings(cfg, steps, seed, sampler, preview, init_image, strength, negative_prompt, shift,
                            guidance_interval_lo, guidance_interval_hi, guidance)
        with refusals():
            image = self.precheck(settings)
        with (self.runs.start(session_id(request)) as run,
              self.engine.model_slot(run.event, kind="generation") as held):
            if not held:  # stopped while waiting for a free model run
                return
            if self.engine.state != "ready":
                yield gr.skip(), "Loading the model …", gr.skip()
            loaded = loaded_or_refuse(self.engine)
            with refusals():  # every value, and the prompt's length in tokens, in the page's words
                started = self.begin(loaded, run, prompt, num_images, settings, image)
            start = time.perf_counter()
            try:
                with closing(self.follow(run, loaded, started.states, preview)) as updates:
                    for state, sheet, done in updates:
                        if done:
                            break
                        status = f"Step **{state.index + 1} / {state.num_steps}** · {time.perf_counter() - start:.1f} s"
                        # the gallery is sent empty again rather than skipped: Gradio answers gr.skip() for a
                        # Gallery by rebuilding the component and its API schema, about 3 ms a time even idle,
                        # and with 8 users that cost the server a third of its time (docs/benchmarks.md)
                        yield (gr.skip() if sheet is None else sheet), status, []
                    images = loaded.generator.decode(state.result)
            except (ValueError, FloatingPointError, RuntimeError) as exc:
                raise refuse(f"Generation failed: {exc}") from None
            except Exception as exc:  # a bug: the operator gets the traceback, the user one line
                log.exception("generation failed")
                raise refuse(f"Generation failed ({type(exc).__name__}): {exc}") from None
            seconds = time.perf_counter() - start
            settings_text = describe(started)
            if not state.finished:
                status = (f"Stopped at step **{state.index + 1} / {state.num_steps}** after {seconds:.1f} s "
                          f"({settings_text})")
                captions = [f"seed {started.seed + k} · stopped at step {state.index + 1}" for k in range(len(images))]
            else:
                status = (f"Done: **{len(images)} image(s)** in {seconds:.1f} s · {state.num_steps} steps "
                          f"({settings_text})")
                captions = [f"seed {started.seed + k}" for k in range(len(images))]
            # the preview stays as it is (re-sending the same image would rewrite the file the page is reading)
            yield gr.skip(), status, list(zip(images, captions))

    def stop(self, request: gr.Request) -> None:
        """Stop this session's generation after the current step (the last preview stays)."""
        self.runs.stop(session_id(request))

    @staticmethod
    def randomise() -> int:
        return random_seed()

