"""Text-to-image generation: prompt rows -> cached prefix -> CFG rectified-flow ODE -> VAE decode.

The pipeline owns the run: it checks the request, takes unset steps and guidance weight from the model's
``sampling.json``, runs the one sampling loop (:func:`janusflow_core.sampling.sample`) and says which latent
a finished or stopped run returns (:attr:`StepState.result`). Every step is exposed (``iterate`` yields a
StepState per step, so a UI can preview the predicted clean image x̂1 = z_t + (1 - t) v while the sampler
runs), and a per-step hook, ``callback_on_step_end(state) -> StepControl | None``, may stop the run or change
the guidance weight for the steps that follow; ``__call__`` is the same loop with a final decode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .. import limits
from ..bundle import DEFAULT_SAMPLING, JanusFlowBundle
from ..modeling import PromptState
from ..sampling import SOLVERS, StepCallback, StepState, cfg, sample
from ..vae import to_pil
from .batching import VelocityBatcher

PARAMETERS = ("prompt", "steps", "guidance_scale", "num_images", "sampler", "seed")


def field_names(names: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the messages call each request field: the parameter's name unless ``names`` renames it."""
    return {p: p for p in PARAMETERS} | {"prompt": "the prompt"} | dict(names or {})


def check_generation_inputs(prompt: str, steps: int | None, guidance_scale: float | None, num_images: int,
                            sampler: str, seed: int, *, names: Mapping[str, str] | None = None,
                            ) -> tuple[int | None, float | None, int, int]:
    """Check one request against :mod:`janusflow_core.limits` before any model work; raises InputError.

    ``steps`` / ``guidance_scale`` may be None (the model's recommendation is used). ``names`` renames
    fields in the messages for callers whose users know them by other names (the CLI's ``--cfg``, a
    JSONL file's ``"cfg"``): e.g. ``{"guidance_scale": "cfg"}``. Returns (steps, guidance_scale,
    num_images, seed) as numbers.
    """
    name = field_names(names)
    limits.check_text(name["prompt"], prompt)
    if steps is not None:
        steps = limits.check_number(name["steps"], steps, limits.STEPS, integer=True)
    if guidance_scale is not None:
        guidance_scale = limits.check_number(name["guidance_scale"], guidance_scale, limits.GUIDANCE)
    num_images = limits.check_number(name["num_images"], num_images, limits.IMAGES, integer=True)
    limits.check_choice(name["sampler"], sampler, SOLVERS)
    seed = limits.check_number(name["seed"], seed, limits.SEED, integer=True)
    return steps, guidance_scale, num_images, seed


@dataclass(frozen=True)
class SamplingDefaults:
    """What a request that leaves steps or the guidance weight unset gets."""

    steps: int
    guidance_scale: float

    @classmethod
    def from_sampling(cls, sampling: Mapping[str, Any]) -> SamplingDefaults:
        """A model's ``sampling.json`` settings (keys ``steps`` and ``cfg``) over the published defaults."""
        merged = {**DEFAULT_SAMPLING, **sampling}
        return cls(steps=int(merged["steps"]), guidance_scale=float(merged["cfg"]))


@dataclass
class GenerationResult:
    images: list[Image.Image]
    latents: torch.Tensor  # (B, C, h, w) final scaled latents, float32 (x̂1 of the last step when stopped)
    prompt: str
    seed: int
    steps: int
    guidance_scale: float  # the weight the run started with (a step callback may have changed it later)
    sampler: str
    interrupted: bool = False
    steps_done: int = 0
    seconds: float = 0.0


class GenerationPipeline:
    def __init__(self, bundle: JanusFlowBundle):
        self.bundle = bundle
        self.model = bundle.model
        self.config = bundle.config
        self.batcher: VelocityBatcher | None = None  # concurrent runs share forwards when set

    @property
    def defaults(self) -> SamplingDefaults:
        """Steps and guidance weight for requests that leave them unset: the model's ``sampling.json``."""
        return SamplingDefaults.from_sampling(self.bundle.sampling)

    @property
    def prompt_token_limit(self) -> int:
        """The longest prompt in tokens (chat template included): the context less the time position and
        the image tokens."""
        return self.config.llm.max_position_embeddings - 1 - self.config.num_gen_tokens

    def count_prompt_tokens(self, prompt: str) -> int:
        """The prompt's length in tokens, chat template included, as :meth:`prompt_rows` encodes it."""
        return len(self.bundle.processor.encode_generation_prompt(prompt))

    # 1. check inputs ---------------------------------------------------------------------------------
    def check_inputs(self, prompt: str, steps: int | None, guidance_scale: float | None, num_images: int,
                     sampler: str, seed: int, *, names: Mapping[str, str] | None = None) -> tuple[int, float, int, int]:
        """(steps, guidance_scale, num_images, seed) after the limits checks and the prompt's length in tokens,
        unset values taken from :attr:`defaults`. ``names``: as in :func:`check_generation_inputs`."""
        steps, guidance_scale, num_images, seed = check_generation_inputs(prompt, steps, guidance_scale,
                                                                          num_images, sampler, seed, names=names)
        n = self.count_prompt_tokens(prompt)
        if n > self.prompt_token_limit:
            raise limits.InputError(f"{field_names(names)['prompt']} is {n} tokens; the limit is "
                                    f"{self.prompt_token_limit}. Shorten it.")
        steps = self.defaults.steps if steps is None else steps
        guidance_scale = self.defaults.guidance_scale if guidance_scale is None else guidance_scale
        return steps, guidance_scale, num_images, seed

    # 2. noise -------------------------------------------------------------------------------------------
    def initial_noise(self, seed: int, num_images: int) -> torch.Tensor:
        """Image k gets its own generator seeded with seed + k: its noise is bit-identical whatever num_images.

        The image itself is the same up to rounding, not bit for bit: the LLM velocity and the VAE decode run
        all images as one batch, and matmul kernels round differently for different batch sizes. Measured on
        the embedded shapes model (CPU, fp32, 30 Euler steps, 3 prompts, image k of num_images 1 vs 4 vs 8):
        final latents within 2.5e-6 (LLM velocity up to 7e-6 per step, VAE decode 1.7e-6), and no pixel
        differed in 18 comparisons; a value that sits on a rounding boundary can still come out 1/255 apart.
        tests/test_pipelines.py pins latents within 1e-4 and pixels within 1/255. Exactness would need one
        LLM pass per image (batch 1): about 1.9x the time of 8 images in one batch, so it is not done.
        """
        c, s = self.config.latent_channels, self.config.gen_latent_size
        z = [torch.randn(c, s, s, generator=torch.Generator().manual_seed(int(seed) + k)) for k in range(num_images)]
        return torch.stack(z).to(self.model.device)  # (B, C, h, w), float32

    # 3. prompt rows and their cached prefix ---------------------------------------------------------
    def prompt_rows(self, prompt: str, num_images: int, guided: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows and mask: ``num_images`` conditional rows, then (``guided``) as many unconditional
        ones (ValueError for a prompt longer than :attr:`prompt_token_limit`; ``check_inputs`` says so first)."""
        ids = self.bundle.processor.encode_generation_prompt(prompt, max_length=self.prompt_token_limit)
        tokens, mask = self.bundle.processor.cfg_rows(ids, num_images)
        if not guided:  # w = 1: v_cfg == v_cond, the unconditional rows are not needed
            tokens, mask = tokens[:num_images], mask[:num_images]
        return tokens, mask

    @torch.inference_mode()
    def encode_prompt(self, tokens: torch.Tensor, mask: torch.Tensor, use_cache: bool = True) -> PromptState:
        return self.model.prepare_prompt(tokens, mask, use_cache=use_cache)

    # 4. guided velocity ------------------------------------------------------------------------------
    def guided_velocity(self, prompt: PromptState, guidance_scale: float) -> Callable[[torch.Tensor, float],
                                                                                      torch.Tensor]:
        """v(z, t): ``cfg`` of the conditional and unconditional rows' velocities with weight ``guidance_scale``
        (the conditional velocity alone for a prompt without unconditional rows, which only w = 1 allows)."""
        w = float(guidance_scale)

        @torch.inference_mode()
        def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
            b = z.shape[0]
            paired = prompt.rows == 2 * b  # cond rows then uncond rows; else cond rows only (w = 1)
            if not paired and prompt.rows != b:
                raise ValueError(f"{b} latents do not fit a prompt of {prompt.rows} rows")
            if not paired and w != 1.0:
                raise ValueError(f"guidance_scale {w:g} needs the unconditional rows, and this run has none (it "
                                 "started at guidance_scale 1); start it with guided=True to change the weight later")
            rows = torch.cat([z, z]) if paired else z  # cond and uncond rows share the latent
            t_rows = torch.full((rows.shape[0],), t, device=z.device, dtype=torch.float32)
            v = self.forward_velocity(rows, t_rows, prompt).float()
            return cfg(v[:b], v[b:], w) if paired else v

        return velocity

    def forward_velocity(self, rows: torch.Tensor, t_rows: torch.Tensor, prompt: PromptState) -> torch.Tensor:
        """The model's velocity for every prompt row: one forward of its own, or with :attr:`batcher` set (a
        server sets it) a share of one forward with the other runs in progress (pipelines/batching.py)."""
        return (self.model if self.batcher is None else self.batcher).velocity(rows, t_rows, prompt)

    # 5. denoise ----------------------------------------------------------------------------------------
    def iterate(self, prompt: str, steps: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                num_images: int = 1, sampler: str = "euler", *, latents: torch.Tensor | None = None,
                use_cache: bool = True, guided: bool | None = None,
                callback_on_step_end: StepCallback | None = None) -> Iterator[StepState]:
        """Check the request now (InputError), then yield one StepState per solver step (no decoding).

        ``callback_on_step_end(state)`` runs after each state is handed out and may return a StepControl:
        stop there, or a guidance weight for the steps that follow. The last state's ``result`` is the
        run's latent whether it finished (z_next) or stopped (x̂1). ``guided`` encodes the unconditional
        rows CFG needs (default: when guidance_scale is not 1); pass True to start at 1 and raise the
        weight from a callback.
        """
        steps, guidance_scale, num_images, seed = self.check_inputs(prompt, steps, guidance_scale, num_images,
                                                                    sampler, seed)
        tokens, mask = self.prompt_rows(prompt, num_images, guidance_scale != 1.0 if guided is None else guided)
        z0 = self.initial_noise(seed, num_images) if latents is None else latents.to(self.model.device).float()
        return self._denoise(tokens, mask, use_cache, z0, steps, sampler, guidance_scale, callback_on_step_end)

    def _denoise(self, tokens: torch.Tensor, mask: torch.Tensor, use_cache: bool, z0: torch.Tensor, steps: int,
                 sampler: str, guidance_scale: float, callback: StepCallback | None) -> Iterator[StepState]:
        state = self.encode_prompt(tokens, mask, use_cache)  # on the first step, by whoever iterates

        def field(w: float) -> Callable[[torch.Tensor, float], torch.Tensor]:  # w may come from the callback
            return self.guided_velocity(state, limits.check_number("guidance_scale", w, limits.GUIDANCE))

        with nullcontext() if self.batcher is None else self.batcher.running():
            yield from sample(field, z0, steps, sampler, guidance_scale, callback)

    # 6. decode ----------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        if self.bundle.vae is None:
            raise RuntimeError("this bundle was loaded without a VAE; images cannot be decoded")
        return to_pil(self.bundle.vae.decode(latents))

    def preview(self, state: StepState, mode: str = "x1") -> list[Image.Image]:
        """Decode a step for display: ``x1`` the predicted clean image, ``zt`` the noisy latent."""
        if mode not in ("x1", "zt"):
            raise ValueError(f"preview mode must be 'x1' or 'zt', got {mode!r}")
        return self.decode(state.x1_hat if mode == "x1" else state.z_t)

    def __call__(self, prompt: str, steps: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                 num_images: int = 1, sampler: str = "euler", *, latents: torch.Tensor | None = None,
                 use_cache: bool = True, guided: bool | None = None,
                 callback_on_step_end: StepCallback | None = None) -> GenerationResult:
        """Generate ``num_images`` images: :meth:`iterate` run to its end, then decoded. A callback that
        stops the run early gives the last step's predicted clean images (``interrupted`` is then True)."""
        start = time.perf_counter()
        steps, guidance_scale, _, seed = self.check_inputs(prompt, steps, guidance_scale, num_images, sampler, seed)
        *_, last = self.iterate(prompt, steps, guidance_scale, seed, num_images, sampler, latents=latents,
                                use_cache=use_cache, guided=guided, callback_on_step_end=callback_on_step_end)
        final = last.result
        return GenerationResult(images=self.decode(final), latents=final, prompt=prompt, seed=seed,
                                steps=steps, guidance_scale=guidance_scale, sampler=sampler,
                                interrupted=not last.finished, steps_done=last.index + 1,
                                seconds=time.perf_counter() - start)
