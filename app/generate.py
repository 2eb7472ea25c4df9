"""Generation tab handlers: run the sampler and show every step's preview, then the final images.

``GenerationPipeline.iterate`` checks the request and yields one StepState per solver step (Stop ends the
run through the pipeline's step callback; the last state's ``result`` is the final latent, finished or
stopped). Each state is decoded for display and sent to the page at once: the predicted clean image x̂1 or
the noisy z_t through the VAE (``GenerationPipeline.preview``), or x̂1 through the fitted linear
latent-to-RGB map (``LatentRGB``, approximate, nearly free). Previews travel at the model's resolution; the
page enlarges them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
from PIL import Image

from janusflow_core.limits import SEED, check_choice
from janusflow_core.sampling import StepState, stop_when
from janusflow_core.vae import to_pil

from .components import refusals, refuse
from .display import grid
from .engine import Engine, EngineError, Loaded
from .sessions import Runs, session_id

log = logging.getLogger(__name__)
PREVIEW_MODES = {"x1": "predicted clean image x̂₁ (VAE)", "x1-fast": "x̂₁, fast approximation (linear latent→RGB)",
                 "zt": "noisy latent z_t (VAE)"}
SAMPLER_NAMES = {"euler": "Euler", "heun": "Heun"}
FIELD_NAMES = {"prompt": "The prompt", "steps": "Steps", "guidance_scale": "CFG", "num_images": "Number of images",
               "seed": "Seed", "sampler": "Sampler"}  # the pipeline's refusals name fields by the page's labels

Output = tuple[Any, str, Any]  # (preview image, status line, gallery)


def random_seed() -> int:
    return random.randint(*SEED)


def preview_images(loaded: Loaded, state: StepState, mode: str) -> list[Image.Image]:
    """One step's images for display, in the given PREVIEW_MODES mode."""
    if mode == "x1-fast":
        return to_pil(loaded.latent_rgb()(state.x1_hat))
    return loaded.generator.preview(state, mode)


class GenerateHandlers:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.runs = Runs("generation")

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

    def run(self, prompt: str, cfg: float, steps: int, seed: int, num_images: int, sampler: str, preview: str,
            request: gr.Request) -> Iterator[Output]:
        """Generate images from a prompt, streaming a preview after every solver step.

        Yields (preview, status, gallery): one yield per step with the step's preview and
        "Step k / N", then a last one with the final images in the gallery. The pipeline checks the
        request and owns the run; Stop reaches it through its step callback.
        """
        with refusals():
            check_choice("Preview", preview, PREVIEW_MODES)  # the page's own setting; the pipeline checks the rest
        with self.runs.start(session_id(request)) as run, self.engine.model_slot(run.event) as held:
            if not held:  # stopped while waiting for a free model run
                return
            if self.engine.state != "ready":
                yield gr.skip(), "Loading the model …", gr.skip()
            try:
                loaded = self.engine.get()
            except EngineError as exc:
                raise refuse(str(exc)) from None
            pipe = loaded.generator
            with refusals():  # every value, and the prompt's length in tokens, in the page's words
                steps, cfg, num_images, seed = pipe.check_inputs(prompt, steps, cfg, num_images, sampler, seed,
                                                                 names=FIELD_NAMES)
                states = pipe.iterate(prompt, steps, cfg, seed, num_images, sampler,
                                      callback_on_step_end=stop_when(run.event))
            start = time.perf_counter()
            try:
                for state in states:
                    sheet = grid(preview_images(loaded, state, preview))
                    status = f"Step **{state.index + 1} / {steps}** · {time.perf_counter() - start:.1f} s"
                    yield sheet, status, ([] if state.index == 0 else gr.skip())
                images = pipe.decode(state.result)
            except (ValueError, FloatingPointError, RuntimeError) as exc:
                raise refuse(f"Generation failed: {exc}") from None
            except Exception as exc:  # a bug: the operator gets the traceback, the user one line
                log.exception("generation failed")
                raise refuse(f"Generation failed ({type(exc).__name__}): {exc}") from None
            seconds = time.perf_counter() - start
            settings = f"{SAMPLER_NAMES.get(sampler, sampler)}, CFG {cfg:g}, seed {seed}"
            if not state.finished:
                status = f"Stopped at step **{state.index + 1} / {steps}** after {seconds:.1f} s ({settings})"
                captions = [f"seed {seed + k} · stopped at step {state.index + 1}" for k in range(len(images))]
            else:
                status = f"Done: **{len(images)} image(s)** in {seconds:.1f} s · {steps} steps ({settings})"
                captions = [f"seed {seed + k}" for k in range(len(images))]
            # the preview stays as it is (re-sending the same image would rewrite the file the page is reading)
            yield gr.skip(), status, list(zip(images, captions))

    def stop(self, request: gr.Request) -> None:
        """Stop this session's generation after the current step (the last preview stays)."""
        self.runs.stop(session_id(request))

    @staticmethod
    def randomise() -> int:
        return random_seed()

