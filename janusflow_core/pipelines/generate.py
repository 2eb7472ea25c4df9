"""Text-to-image generation: prompt rows -> cached prefix -> CFG rectified-flow ODE -> VAE decode.

Every Euler step is exposed (``iterate`` yields a StepState per step; ``__call__`` takes a callback),
so a UI can preview the predicted clean image x̂1 = z_t + (1 - t) v while the sampler runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from .. import limits
from ..checkpoint import JanusFlowBundle
from ..modeling import PromptState
from ..sampling import SOLVERS, StepState, cfg, integrate
from ..vae import to_pil


def check_generation_inputs(prompt: str, steps: int | None, cfg_weight: float | None, num_images: int, sampler: str,
                            seed: int) -> tuple[int | None, float | None, int, int]:
    """Check one request against :mod:`janusflow_core.limits` before any model work; raises InputError.

    ``steps`` / ``cfg_weight`` may be None (the model's recommendation is used, checked when it is read).
    Returns (steps, cfg_weight, num_images, seed) as numbers.
    """
    limits.check_text("the prompt", prompt)
    if steps is not None:
        steps = limits.check_number("steps", steps, limits.STEPS, integer=True)
    if cfg_weight is not None:
        cfg_weight = limits.check_number("cfg", cfg_weight, limits.GUIDANCE)
    num_images = limits.check_number("num_images", num_images, limits.IMAGES, integer=True)
    limits.check_choice("sampler", sampler, SOLVERS)
    seed = limits.check_number("seed", seed, limits.SEED, integer=True)
    return steps, cfg_weight, num_images, seed


@dataclass
class GenerationResult:
    images: list[Image.Image]
    latents: torch.Tensor  # (B, C, h, w) final scaled latents, float32
    prompt: str
    seed: int
    steps: int
    cfg: float
    sampler: str
    interrupted: bool = False
    steps_done: int = 0
    seconds: float = 0.0


class GenerationPipeline:
    def __init__(self, bundle: JanusFlowBundle):
        self.bundle = bundle
        self.model = bundle.model
        self.config = bundle.config

    # 1. check inputs ---------------------------------------------------------------------------------
    def check_inputs(self, prompt: str, steps: int | None, cfg_weight: float | None, num_images: int,
                     sampler: str, seed: int) -> tuple[int, float]:
        """(steps, cfg weight) after the limits checks, unset values taken from the model's sampling.json."""
        steps, cfg_weight, _, _ = check_generation_inputs(prompt, steps, cfg_weight, num_images, sampler, seed)
        steps = int(self.bundle.sampling.get("steps", 30)) if steps is None else steps
        cfg_weight = float(self.bundle.sampling.get("cfg", 2.0)) if cfg_weight is None else cfg_weight
        return steps, cfg_weight

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
        limit = self.config.llm.max_position_embeddings - 1 - self.config.num_gen_tokens
        ids = self.bundle.processor.encode_generation_prompt(prompt, max_length=limit)
        tokens, mask = self.bundle.processor.cfg_rows(ids, num_images)
        if not guided:  # w = 1: v_cfg == v_cond, the unconditional rows are not needed
            tokens, mask = tokens[:num_images], mask[:num_images]
        return tokens, mask

    @torch.inference_mode()
    def encode_prompt(self, tokens: torch.Tensor, mask: torch.Tensor, use_cache: bool = True) -> PromptState:
        return self.model.prepare_prompt(tokens, mask, use_cache=use_cache)

    # 4. guided velocity ------------------------------------------------------------------------------
    def guided_velocity(self, prompt: PromptState, cfg_weight: float) -> Callable[[torch.Tensor, float], torch.Tensor]:
        @torch.inference_mode()
        def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
            b = z.shape[0]
            paired = prompt.rows == 2 * b  # cond rows then uncond rows; else cond rows only (w = 1)
            if not paired and prompt.rows != b:
                raise ValueError(f"{b} latents do not fit a prompt of {prompt.rows} rows")
            rows = torch.cat([z, z]) if paired else z  # cond and uncond rows share the latent
            t_rows = torch.full((rows.shape[0],), t, device=z.device, dtype=torch.float32)
            v = self.model.velocity(rows, t_rows, prompt).float()
            return cfg(v[:b], v[b:], cfg_weight) if paired else v

        return velocity

    # 5. denoise ----------------------------------------------------------------------------------------
    def iterate(self, prompt: str, steps: int | None = None, cfg: float | None = None, seed: int = 0,
                num_images: int = 1, sampler: str = "euler", latents: torch.Tensor | None = None,
                use_cache: bool = True) -> Iterator[StepState]:
        """Yield one StepState per solver step (no decoding). The last state's z_next is the result."""
        steps, cfg_weight = self.check_inputs(prompt, steps, cfg, num_images, sampler, seed)
        num_images, seed = int(num_images), int(seed)  # checked whole numbers (maybe given as "2" or 2.0)
        guided = cfg_weight != 1.0
        tokens, mask = self.prompt_rows(prompt, num_images, guided)
        state = self.encode_prompt(tokens, mask, use_cache)
        z0 = self.initial_noise(seed, num_images) if latents is None else latents.to(self.model.device).float()
        yield from integrate(self.guided_velocity(state, cfg_weight), z0, steps, sampler)

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

    def __call__(self, prompt: str, steps: int | None = None, cfg: float | None = None, seed: int = 0,
                 num_images: int = 1, sampler: str = "euler", callback: Callable[[StepState], None] | None = None,
                 interrupt: threading.Event | None = None, latents: torch.Tensor | None = None,
                 use_cache: bool = True) -> GenerationResult:
        """Generate ``num_images`` images. ``callback`` runs after every step; setting ``interrupt``
        stops between steps (the result then holds the last predicted clean images)."""
        start = time.perf_counter()
        steps_n, cfg_weight = self.check_inputs(prompt, steps, cfg, num_images, sampler, seed)
        seed = int(seed)
        last: StepState | None = None
        interrupted = False
        for last in self.iterate(prompt, steps_n, cfg_weight, seed, num_images, sampler, latents, use_cache):
            if callback is not None:
                callback(last)
            if interrupt is not None and interrupt.is_set() and last.index + 1 < last.num_steps:
                interrupted = True
                break
        final = last.x1_hat if interrupted else last.z_next
        return GenerationResult(images=self.decode(final), latents=final, prompt=prompt, seed=seed, steps=steps_n,
                                cfg=cfg_weight, sampler=sampler, interrupted=interrupted,
                                steps_done=last.index + 1, seconds=time.perf_counter() - start)
