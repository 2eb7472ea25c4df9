"""Text-to-image and image-to-image generation: prompt rows -> cached prefix -> guided rectified-flow ODE
-> VAE decode.

The pipeline owns the run: it checks the request, takes unset steps and guidance weight from the model's
``sampling.json``, runs the one sampling loop (:func:`janusflow_core.sampling.sample`) and says which latent
a finished or stopped run returns (:attr:`StepState.result`). Every step is exposed (``iterate`` yields a
StepState per step, so a UI can preview the predicted clean image x̂1 = z_t + (1 - t) v while the sampler
runs), and a per-step hook, ``callback_on_step_end(state) -> StepControl | None``, may stop the run or change
the guidance weight for the steps that follow; ``__call__`` is the same loop with a final decode.

The options beyond the official demo (docs/generation.md has the measurements):

- ``init_image`` + ``strength`` S (image-to-image): the image, resized and centre-cropped to the generation
  resolution as the fine-tuning data is, is encoded by the VAE (the posterior mean) into x; the run starts
  at the last grid time t_k0 at or before 1 - S from z = t_k0 x + (1 - t_k0) noise and integrates the rest
  of the same grid (at least one step). S = 1 is text-to-image with the same seed, bit for bit.
- ``negative_prompt``: the unconditional rows encode this text through the generation template instead of
  the empty prompt (BOS only).
- ``shift``: the SD3 time shift of the grid (:mod:`janusflow_core.sampling.schedule`); 1 = the official grid.
- ``guidance_interval`` (LO, HI): guidance only for steps whose start time t_k is in [LO, HI]; the other
  steps run the conditional rows alone (half the LLM rows), from a prefix cache of their own.
- ``guidance``: ``cfg``, ``cfg-zero-star`` (optimised scale; the first grid step's velocity is zero, unless
  the grid has a single step) or ``apg`` (adaptive projected guidance on the predicted clean latent
  x̂ = z + (1 - t) v, with momentum across evaluations: :data:`janusflow_core.sampling.APG_DEFAULTS`).
"""

from __future__ import annotations

import os
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
from ..processing.image import center_square, load_image, vae_pixels
from ..sampling import (
    GUIDANCE,
    SOLVERS,
    ZERO_INIT_STEPS,
    Grid,
    StepCallback,
    StepState,
    apg,
    cfg,
    cfg_zero_star,
    sample,
    start_index,
    time_grid,
)
from ..vae import to_pil
from .batching import VelocityBatcher

PARAMETERS = ("prompt", "steps", "guidance_scale", "num_images", "sampler", "seed", "init_image", "strength",
              "negative_prompt", "shift", "guidance_interval", "guidance")
FULL_INTERVAL = (0.0, 1.0)


def field_names(names: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the messages call each request field: the parameter's name unless ``names`` renames it."""
    return {p: p for p in PARAMETERS} | {"prompt": "the prompt", "negative_prompt": "the negative prompt"} | dict(
        names or {})


@dataclass(frozen=True)
class GenerationOptions:
    """The sampling options beyond steps and weight, checked (:func:`check_generation_options`)."""

    init_image: Image.Image | None = None  # RGB, any size (resized and cropped when encoded)
    strength: float = 1.0
    negative_prompt: str | None = None  # None: the empty prompt (BOS only), as the official code
    shift: float = 1.0
    guidance_interval: tuple[float, float] = FULL_INTERVAL
    guidance: str = "cfg"


def load_init_image(image: Any, name: str = "init_image") -> Image.Image:
    """``image`` (a path, bytes, a PIL image or an array) as RGB through the image loader; InputError when
    it is missing, unreadable or too large."""
    label = f"{name} {os.fspath(image)!r}" if isinstance(image, (str, os.PathLike)) else name
    try:
        return load_image(image, name=label)
    except FileNotFoundError:
        raise limits.InputError(f"{label}: no such file") from None
    except TypeError:
        raise limits.InputError(f"{name} must be an image or a path to one, got {type(image).__name__}") from None
    except limits.InputError:
        raise
    except ValueError as exc:  # a numpy array of the wrong type or shape
        raise limits.InputError(f"{name}: {exc}") from None


def check_generation_options(init_image: Any = None, strength: Any = 1.0, negative_prompt: Any = None,
                             shift: Any = 1.0, guidance_interval: Any = FULL_INTERVAL, guidance: Any = "cfg", *,
                             names: Mapping[str, str] | None = None) -> GenerationOptions:
    """Check the options against :mod:`janusflow_core.limits` (no model needed; the negative prompt's length
    in tokens is :meth:`GenerationPipeline.check_options`'s); raises InputError. ``init_image`` is loaded
    here (a path is read now). A blank negative prompt is no negative prompt. ``strength`` only acts with an
    ``init_image``."""
    name = field_names(names)
    strength = float(limits.check_number(name["strength"], strength, limits.STRENGTH, above_low=True))
    shift = float(limits.check_number(name["shift"], shift, limits.SHIFT))
    interval = limits.check_interval(name["guidance_interval"], guidance_interval)
    limits.check_choice(name["guidance"], guidance, GUIDANCE)
    if negative_prompt is not None and not (isinstance(negative_prompt, str) and not negative_prompt.strip()):
        negative_prompt = limits.check_text(name["negative_prompt"], negative_prompt)
    else:
        negative_prompt = None
    image = None if init_image is None else load_init_image(init_image, name["init_image"])
    return GenerationOptions(image, strength, negative_prompt, shift, interval, guidance)


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
    steps: int  # the grid's steps (image-to-image runs its last steps_planned of them)
    guidance_scale: float  # the weight the run started with (a step callback may have changed it later)
    sampler: str
    interrupted: bool = False
    steps_done: int = 0
    seconds: float = 0.0
    steps_planned: int = 0  # steps this run integrates: all of ``steps`` unless it started from an image
    options: GenerationOptions = GenerationOptions()


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

    def check_options(self, init_image: Any = None, strength: Any = 1.0, negative_prompt: Any = None,
                      shift: Any = 1.0, guidance_interval: Any = FULL_INTERVAL, guidance: Any = "cfg", *,
                      names: Mapping[str, str] | None = None) -> GenerationOptions:
        """:func:`check_generation_options`, then the negative prompt's length in tokens."""
        options = check_generation_options(init_image, strength, negative_prompt, shift, guidance_interval,
                                           guidance, names=names)
        if options.negative_prompt is not None:
            n = self.count_prompt_tokens(options.negative_prompt)
            if n > self.prompt_token_limit:
                raise limits.InputError(f"{field_names(names)['negative_prompt']} is {n} tokens; the limit is "
                                        f"{self.prompt_token_limit}. Shorten it.")
        return options

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

    def init_latent(self, image: Image.Image) -> torch.Tensor:
        """The image at the generation resolution (shorter side resized, middle square cropped, as the
        fine-tuning data loader does) through the VAE encoder: (1, C, h, w) scaled latent, float32."""
        if self.bundle.vae is None:
            raise RuntimeError("this bundle was loaded without a VAE; an init image cannot be encoded")
        size = self.config.gen_latent_size * self.bundle.vae.downsample
        x = vae_pixels(center_square(image, size))[None]  # (1, 3, S, S)
        return self.bundle.vae.encode(x).float().to(self.model.device)

    # 3. prompt rows and their cached prefix ---------------------------------------------------------
    def prompt_rows(self, prompt: str, num_images: int, guided: bool,
                    negative_prompt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows and mask: ``num_images`` conditional rows, then (``guided``) as many unconditional
        ones, which encode ``negative_prompt`` when given (ValueError for a prompt longer than
        :attr:`prompt_token_limit`; ``check_inputs`` / ``check_options`` say so first)."""
        processor, limit = self.bundle.processor, self.prompt_token_limit
        ids = processor.encode_generation_prompt(prompt, max_length=limit)
        if not guided:  # w = 1: v_cfg == v_cond, the unconditional rows are not needed
            tokens, mask = processor.cfg_rows(ids, num_images)
            return tokens[:num_images], mask[:num_images]
        negative = None if negative_prompt is None else processor.encode_generation_prompt(negative_prompt,
                                                                                            max_length=limit)
        return processor.cfg_rows(ids, num_images, negative=negative)

    @staticmethod
    def conditional_rows(tokens: torch.Tensor, mask: torch.Tensor, num_images: int) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
        """The conditional half of CFG rows, without the padding columns only the other half needed (a
        longer negative prompt): the rows a run without guidance encodes."""
        tokens, mask = tokens[:num_images], mask[:num_images]
        first = int(mask.any(0).long().argmax())  # the first column some conditional row uses
        return tokens[:, first:], mask[:, first:]

    @torch.inference_mode()
    def encode_prompt(self, tokens: torch.Tensor, mask: torch.Tensor, use_cache: bool = True) -> PromptState:
        return self.model.prepare_prompt(tokens, mask, use_cache=use_cache)

    # 4. guided velocity ------------------------------------------------------------------------------
    def guided_velocity(self, prompt: PromptState, guidance_scale: float, guidance: str = "cfg",
                        apg_state: dict | None = None) -> Callable[[torch.Tensor, float], torch.Tensor]:
        """v(z, t): the ``guidance`` rule (:data:`janusflow_core.sampling.GUIDANCE`) on the conditional and
        unconditional rows' velocities with weight ``guidance_scale`` (the conditional velocity alone for a
        prompt without unconditional rows, which only w = 1 allows). ``apg_state`` carries APG's running
        update from one evaluation to the next (one dict per run)."""
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
            return combine(v[:b], v[b:], z, t) if paired else v

        def combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, z: torch.Tensor, t: float) -> torch.Tensor:
            if guidance == "cfg":
                return cfg(v_cond, v_uncond, w)
            if guidance == "cfg-zero-star":
                return cfg_zero_star(v_cond, v_uncond, w)
            if t >= 1.0:  # APG (Heun's last evaluation): x̂ = z for both rows, nothing to guide
                return v_cond
            state = apg_state if apg_state is not None else {}
            x_cond, x_uncond = z + (1.0 - t) * v_cond, z + (1.0 - t) * v_uncond  # predicted clean latents
            x, state["previous"] = apg(x_cond, x_uncond, w, state.get("previous"))
            return (x - z) / (1.0 - t)

        if guidance not in GUIDANCE:
            raise ValueError(f"unknown guidance {guidance!r}; allowed: {', '.join(GUIDANCE)}")
        return velocity

    def forward_velocity(self, rows: torch.Tensor, t_rows: torch.Tensor, prompt: PromptState) -> torch.Tensor:
        """The model's velocity for every prompt row: one forward of its own, or with :attr:`batcher` set (a
        server sets it) a share of one forward with the other runs in progress (pipelines/batching.py)."""
        return (self.model if self.batcher is None else self.batcher).velocity(rows, t_rows, prompt)

    # 5. denoise ----------------------------------------------------------------------------------------
    def iterate(self, prompt: str, steps: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                num_images: int = 1, sampler: str = "euler", *, latents: torch.Tensor | None = None,
                use_cache: bool = True, guided: bool | None = None,
                callback_on_step_end: StepCallback | None = None, init_image: Any = None, strength: float = 1.0,
                negative_prompt: str | None = None, shift: float = 1.0,
                guidance_interval: tuple[float, float] = FULL_INTERVAL, guidance: str = "cfg",
                ) -> Iterator[StepState]:
        """Check the request now (InputError), then yield one StepState per solver step (no decoding).

        ``callback_on_step_end(state)`` runs after each state is handed out and may return a StepControl:
        stop there, or a guidance weight for the steps that follow. The last state's ``result`` is the
        run's latent whether it finished (z_next) or stopped (x̂1). ``guided`` encodes the unconditional
        rows CFG needs (default: when guidance_scale is not 1); pass True to start at 1 and raise the
        weight from a callback. ``latents`` replaces the seeded noise. The other options: see the module
        docstring; an image-to-image run yields only the steps it integrates (``state.num_steps`` of them).
        """
        steps, guidance_scale, num_images, seed = self.check_inputs(prompt, steps, guidance_scale, num_images,
                                                                    sampler, seed)
        options = self.check_options(init_image, strength, negative_prompt, shift, guidance_interval, guidance)
        guided = guidance_scale != 1.0 if guided is None else guided
        tokens, mask = self.prompt_rows(prompt, num_images, guided, options.negative_prompt)
        noise = self.initial_noise(seed, num_images) if latents is None else latents.to(self.model.device).float()
        grid = time_grid(steps, options.shift)
        k0 = 0 if options.init_image is None else start_index(grid, 1.0 - options.strength)
        if k0 == 0:  # S = 1 starts from pure noise: text-to-image, the image plays no part
            z0 = noise
        else:
            t0 = grid[k0][0]
            z0 = t0 * self.init_latent(options.init_image) + (1.0 - t0) * noise  # (B, C, h, w)
        return self._denoise(tokens, mask, use_cache, z0, grid, k0, sampler, guidance_scale, guided, options,
                             callback_on_step_end)

    def _denoise(self, tokens: torch.Tensor, mask: torch.Tensor, use_cache: bool, z0: torch.Tensor, grid: Grid,
                 k0: int, sampler: str, guidance_scale: float, guided: bool, options: GenerationOptions,
                 callback: StepCallback | None) -> Iterator[StepState]:
        run = grid[k0:]
        lo, hi = options.guidance_interval
        in_interval = {t: lo <= t <= hi for t, _ in run}
        b = z0.shape[0]
        # the prefix caches this run needs, encoded when the first step is asked for, by whoever iterates
        paired = self.encode_prompt(tokens, mask, use_cache) if guided and any(in_interval.values()) else None
        conditional = (self.encode_prompt(*self.conditional_rows(tokens, mask, b), use_cache)
                       if not guided or not all(in_interval.values()) else None)
        # CFG-Zero*'s zero-init: the first grid steps (never all of them), not the later start of image-to-image
        zeroed = min(ZERO_INIT_STEPS, len(grid) - 1) if options.guidance == "cfg-zero-star" else 0
        zero_before = grid[zeroed][0] if zeroed else 0.0
        apg_state: dict = {}

        def field(w: float, t: float) -> Callable[[torch.Tensor, float], torch.Tensor]:  # w may come from the hook
            w = limits.check_number("guidance_scale", w, limits.GUIDANCE)
            if t < zero_before:
                return lambda z, _t: torch.zeros_like(z)
            if paired is not None and in_interval[t]:
                return self.guided_velocity(paired, w, options.guidance, apg_state)
            # outside [LO, HI] the conditional rows alone; a run without unconditional rows needs w = 1
            return self.guided_velocity(conditional, 1.0 if guided else w)

        with nullcontext() if self.batcher is None else self.batcher.running():
            yield from sample(field, z0, run, sampler, guidance_scale, callback)

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
                 callback_on_step_end: StepCallback | None = None, init_image: Any = None, strength: float = 1.0,
                 negative_prompt: str | None = None, shift: float = 1.0,
                 guidance_interval: tuple[float, float] = FULL_INTERVAL, guidance: str = "cfg",
                 ) -> GenerationResult:
        """Generate ``num_images`` images: :meth:`iterate` run to its end, then decoded. A callback that
        stops the run early gives the last step's predicted clean images (``interrupted`` is then True)."""
        start = time.perf_counter()
        steps, guidance_scale, _, seed = self.check_inputs(prompt, steps, guidance_scale, num_images, sampler, seed)
        options = self.check_options(init_image, strength, negative_prompt, shift, guidance_interval, guidance)
        *_, last = self.iterate(prompt, steps, guidance_scale, seed, num_images, sampler, latents=latents,
                                use_cache=use_cache, guided=guided, callback_on_step_end=callback_on_step_end,
                                init_image=options.init_image, strength=options.strength,
                                negative_prompt=options.negative_prompt, shift=options.shift,
                                guidance_interval=options.guidance_interval, guidance=options.guidance)
        final = last.result
        return GenerationResult(images=self.decode(final), latents=final, prompt=prompt, seed=seed,
                                steps=steps, guidance_scale=guidance_scale, sampler=sampler,
                                interrupted=not last.finished, steps_done=last.index + 1,
                                seconds=time.perf_counter() - start, steps_planned=last.num_steps, options=options)
