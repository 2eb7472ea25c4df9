"""GPU checks of the core model at the FULL JanusFlow-1.3B architecture with random weights (no download).

What only a GPU can show, in one run that writes one JSON report and prints a short summary:
  0. goals (issue #26), bf16: chat decode tokens/s (goal >= 200), one 1-image CFG step (<= 15 ms), 30 steps
     + VAE decode of one 384 px image (< 0.6 s), images/s at batch 1, 4 and 16; each with the fast paths
     (static KV caches, CUDA graphs) and the default paths, and whether both give the same tokens/velocity;
  1. device: torch, CUDA and library versions, the GPU;
  2. precision: one CFG velocity evaluation (same prompt rows, latents and t) and one understanding
     prefill (image + question) in bf16 and fp16 against fp32 on the same weights: max-abs and relative
     error, NaN/Inf, agreement of the last token's argmax; plus prompt cache vs full recompute;
  3. speed per dtype: one 384 px image, 30 Euler steps with CFG through ``GenerationPipeline`` (prompt
     KV cache), without and with the VAE decode (a random AutoencoderKL with the SDXL-VAE config);
     chat prefill and greedy decode tokens/s (64 new tokens); peak GPU memory;
  4. loader round trip: ``save_pretrained`` (official layout) then ``load_pretrained`` in fp16 and bf16
     on the device: strict key check, every weight equal to the saved one (saved in bf16 by default);
  5. 8-bit: ``load_pretrained(load_8bit=True)`` when bitsandbytes is importable (else recorded as
     skipped): one CFG velocity and one chat prefill against fp32, memory.

The fp32 reference runs without TF32 (matmuls and cuDNN convolutions). Every section runs in its own
try/except: a failure is recorded (error + traceback) in the report and the run goes on. Sections not
started once ``--budget-s`` seconds have passed are recorded as skipped (fp32 speed runs last).

    python -m bench.bench_cuda [--preset janusflow-1.3b] [--device cuda] [--out bench/results/cuda.json]
    python -m bench.bench_cuda --device cpu --preset tiny --out /tmp/cuda-smoke.json   # smoke test
    python -m bench.bench_cuda --goals-only                                  # section 0 only (about a minute)

Without a CUDA GPU, ``--device cuda`` (the default) exits at once with a message (status 2).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import resource
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is random or local: never reach the hub
import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

try:  # the project (and diffusers, which its pipelines need): a failure here still gives a report
    from janusflow_core.bundle import JanusFlowBundle
    from janusflow_core.checkpoint import load_pretrained, save_pretrained
    from janusflow_core.config import JanusFlowConfig
    from janusflow_core.modeling import JanusFlowModel
    from janusflow_core.modeling.llm import reset_rope_buffers
    from janusflow_core.pipelines import ChatPipeline, GenerationPipeline, generate_tokens
    from janusflow_core.presets import get_preset
    from janusflow_core.processing import (
        JanusFlowProcessor,
        train_bpe_tokenizer,
    )
    from janusflow_core.sampling import sample
    from janusflow_core.testing import random_full_model, toy_corpus
    from janusflow_core.vae import VAE, safe_vae_dtype

    IMPORT_ERROR = None
except Exception as _exc:  # noqa: BLE001
    IMPORT_ERROR = f"{type(_exc).__name__}: {_exc}\n{traceback.format_exc()[-3000:]}"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROMPT = "a red circle above a blue square on a white background"
QUESTION = "What shapes are in this image, and what colors are they?"
STEPS, CFG_WEIGHT, T_CHECK = 30, 2.0, 0.5  # the published sampling settings; t of the precision check
SEED = 0
# stabilityai/sdxl-vae's config.json (8x downsampling, 4 latent channels), built here from random weights
SDXL_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4, "sample_size": 1024, "scaling_factor": 0.13025,
            "force_upcast": True, "act_fn": "silu"}
T0 = time.perf_counter()


# -- small utilities -----------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls after ``warmup`` calls, with the device synchronised."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def gib(n_bytes: float) -> float:
    return n_bytes / 2**30


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory(device: torch.device) -> dict[str, float]:
    """GPU: allocated now and peak since the last reset. CPU: the process's peak resident set."""
    if device.type == "cuda":
        return {"allocated_GiB": gib(torch.cuda.memory_allocated(device)),
                "peak_allocated_GiB": gib(torch.cuda.max_memory_allocated(device)),
                "peak_reserved_GiB": gib(torch.cuda.max_memory_reserved(device))}
    return {"peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def compare(x: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """Max-abs and relative (Frobenius) error of ``x`` against ``ref``, and whether ``x`` has NaN/Inf."""
    x, ref = x.float(), ref.float().to(x.device)
    diff = x - ref
    return {"max_abs_err": diff.abs().max().item(), "rel_err": (diff.norm() / ref.norm()).item(),
            "ref_abs_max": ref.abs().max().item(), "nan": bool(x.isnan().any()), "inf": bool(x.isinf().any())}


def compare_logits(x: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """``compare`` on (1, T, V) logits, plus argmax agreement (last token, and fraction of all positions)."""
    out = compare(x, ref)
    am, am_ref = x.float().argmax(-1), ref.float().to(x.device).argmax(-1)
    out["last_argmax_agree"] = bool(am[0, -1] == am_ref[0, -1])
    out["argmax_agree_frac"] = (am == am_ref).float().mean().item()
    return out


def json_safe(obj: Any) -> Any:
    """NaN/Inf floats become strings so the report stays valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


class Skip(Exception):
    """A section that cannot run here (recorded as skipped, not as an error)."""


@contextmanager
def section(report: dict, key: str):
    """Run a block that fills ``report[key]`` (a dict); an exception is recorded there and swallowed."""
    out = report.setdefault(key, {})
    start = time.perf_counter()
    try:
        yield out
    except Skip as exc:
        out["skipped"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a failing section must not end the run
        out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        out["traceback"] = traceback.format_exc()[-3000:]
    finally:
        out["section_s"] = time.perf_counter() - start
        status = "skipped" if "skipped" in out else "error: " + out["error"][:200] if "error" in out else "ok"
        print(f"[{time.perf_counter() - T0:6.1f} s] {key}: {status} ({out['section_s']:.1f} s)", flush=True)
        if PARTIAL["path"] is not None:  # the report so far, in case the run is killed before its end
            try:
                PARTIAL["path"].write_text(json.dumps(json_safe(PARTIAL["res"]), indent=2, default=str))
            except OSError:
                pass


PARTIAL: dict[str, Any] = {"path": None, "res": None}


def check_budget(budget_s: float) -> None:
    if time.perf_counter() - T0 > budget_s:
        raise Skip(f"skipped: time budget ({budget_s:.0f} s) spent before this section started")


# -- the model, processor and VAE ----------------------------------------------------------------------------
def build_random(config: JanusFlowConfig, device: torch.device, seed: int = SEED) -> JanusFlowModel:
    """The model in fp32 with bench_core's deterministic random weights, built on ``device`` directly."""
    return random_full_model(config, device, torch.float32, seed)


def fingerprint(model: JanusFlowModel) -> float:
    """A float64 checksum of the weights, to confirm that two builds from the same seed are identical."""
    return sum(float(p.double().mul(i + 1).sum()) for i, p in enumerate(model.parameters()))


def cast(model: JanusFlowModel, dtype: torch.dtype) -> JanusFlowModel:
    """Cast the weights; the RoPE frequencies stay float32 (as ``load_pretrained`` leaves them)."""
    model.to(dtype)
    reset_rope_buffers(model.language_model, model.device)
    return model


def make_processor(config: JanusFlowConfig, folder: Path) -> JanusFlowProcessor:
    """A small byte-level BPE tokenizer (ids fit any preset's vocabulary) with the image settings of ``config``."""
    tok = train_bpe_tokenizer(toy_corpus(seed=SEED), min(400, config.llm.vocab_size), folder)
    return JanusFlowProcessor.for_model(config, tok)


def make_autoencoder(preset: str):
    """Random AutoencoderKL: the SDXL-VAE config for the real preset, the test suite's tiny one otherwise."""
    if preset == "tiny":
        from janusflow_core.testing import tiny_vae

        return tiny_vae(SEED)
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    return AutoencoderKL(**SDXL_VAE).eval().requires_grad_(False)


def vae_for(autoencoder, device: torch.device, dtype: torch.dtype) -> VAE | None:
    """The project's VAE adapter on a copy of ``autoencoder``, in the dtype it would load in (fp16 -> bf16)."""
    if autoencoder is None:
        return None
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # diffusers warns about casting with .to() (it keeps no module in fp32 here)
    try:
        return VAE(copy.deepcopy(autoencoder).to(device=device, dtype=safe_vae_dtype(dtype, device)))
    finally:
        dlogging.set_verbosity(level)


def test_image(size: int) -> Image.Image:
    """A deterministic picture: a red disc above a blue square on white."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.full((size, size, 3), 255, np.uint8)
    img[(yy - size * 0.3) ** 2 + (xx - size * 0.5) ** 2 < (size * 0.18) ** 2] = (220, 30, 30)
    img[(yy > size * 0.58) & (yy < size * 0.9) & (xx > size * 0.32) & (xx < size * 0.68)] = (30, 60, 220)
    return Image.fromarray(img)


# -- what is measured --------------------------------------------------------------------------------------------
def cfg_velocity(bundle: JanusFlowBundle, use_cache: bool = True) -> torch.Tensor:
    """One guided velocity through the generation pipeline: same prompt rows, latents and t for every model."""
    pipe = GenerationPipeline(bundle)
    tokens, mask = pipe.prompt_rows(PROMPT, 1, guided=True)
    state = pipe.encode_prompt(tokens, mask, use_cache=use_cache)
    z = pipe.initial_noise(SEED, 1)
    return pipe.guided_velocity(state, CFG_WEIGHT)(z, T_CHECK)


def chat_batch(bundle: JanusFlowBundle, image: Image.Image):
    return ChatPipeline(bundle).prepare([[{"role": "user", "content": QUESTION}]], [[image]])


@torch.inference_mode()
def und_logits(bundle: JanusFlowBundle, batch) -> torch.Tensor:
    """The understanding prefill over image + question: logits (1, T, V) at every position."""
    model = bundle.model
    b = batch.to(model.device)
    embeds = model.prepare_inputs_embeds(b.input_ids, b.pixel_values, b.images_seq_mask, b.images_emb_mask)
    return model.language_model(inputs_embeds=embeds, attention_mask=b.attention_mask).logits


def precision(bundle: JanusFlowBundle, image: Image.Image, ref: dict[str, torch.Tensor], out: dict) -> None:
    """Section 2 for one model. With an empty ``ref`` (fp32) it fills the reference instead."""
    v = cfg_velocity(bundle)
    logits = und_logits(bundle, chat_batch(bundle, image))
    if not ref:
        ref["velocity"], ref["logits"] = v, logits.float()
        out["reference_GiB"] = gib(sum(t.numel() * t.element_size() for t in ref.values()))  # kept to the end
        out["velocity"] = {"abs_max": v.abs().max().item(), "nan": bool(v.isnan().any()), "inf": bool(v.isinf().any())}
        out["logits"] = {"abs_max": ref["logits"].abs().max().item(), "positions": logits.shape[1],
                         "nan": bool(logits.isnan().any()), "inf": bool(logits.isinf().any())}
    else:
        out["velocity"] = compare(v, ref["velocity"])
        out["logits"] = compare_logits(logits, ref["logits"])
    # the prompt KV cache against recomputing the prefix at every step (the official loop), same dtype
    out["cache_vs_recompute"] = compare(v, cfg_velocity(bundle, use_cache=False))


def speed(bundle: JanusFlowBundle, image: Image.Image, repeats: int, decode_tokens: int, out: dict) -> None:
    """Section 3 for one model: generation with/without VAE decode, chat prefill and decode."""
    device = bundle.device
    pipe = GenerationPipeline(bundle)

    def denoise() -> torch.Tensor:
        states = list(pipe.iterate(PROMPT, STEPS, CFG_WEIGHT, SEED, 1, "euler"))
        return states[-1].z_next

    if bundle.vae is None:  # no VAE could be built (see setup): the denoising loop only
        out["vae"] = "unavailable: decode not measured"
        out["latents_finite"] = bool(torch.isfinite(denoise()).all())  # also the warm-up
        out["gen_no_decode_s"] = timed(denoise, device, repeats, warmup=0)
    else:
        result = pipe(PROMPT, STEPS, CFG_WEIGHT, SEED, 1, "euler")  # warm-up, and the latents to decode
        out["image_size"] = list(result.images[0].size)
        out["latents_finite"] = bool(torch.isfinite(result.latents).all())
        out["vae_dtype"] = str(bundle.vae.dtype).removeprefix("torch.")
        out["gen_no_decode_s"] = timed(denoise, device, repeats, warmup=0)
        out["gen_with_decode_s"] = timed(lambda: pipe(PROMPT, STEPS, CFG_WEIGHT, SEED, 1, "euler"), device,
                                         repeats, 0)
        out["vae_decode_s"] = timed(lambda: bundle.vae.decode(result.latents), device, repeats)
        out["decoded_finite"] = bool(torch.isfinite(bundle.vae.decode(result.latents)).all())
    tokens, mask = pipe.prompt_rows(PROMPT, 1, guided=True)
    out["prompt_tokens"] = tokens.shape[1]
    out["prompt_encode_s"] = timed(lambda: pipe.encode_prompt(tokens, mask), device, repeats)
    out["step_s"] = (out["gen_no_decode_s"] - out["prompt_encode_s"]) / STEPS

    # chat: prefill as generate's first forward does it, then greedy decode (tokens/s from the difference
    # between 1 + n and 1 new tokens, so the prefill and the first token are excluded)
    model, lm = bundle.model, bundle.model.language_model
    batch = chat_batch(bundle, image)
    b = batch.to(device)
    out["chat_prompt_tokens"] = b.input_ids.shape[1]

    @torch.inference_mode()
    def prefill():
        e = model.prepare_inputs_embeds(b.input_ids, b.pixel_values, b.images_seq_mask, b.images_emb_mask)
        return lm(inputs_embeds=e, attention_mask=b.attention_mask, use_cache=True, logits_to_keep=1)

    out["chat_prefill_s"] = timed(prefill, device, repeats)
    made: dict[int, int] = {}

    def decode(n: int) -> None:
        ids = generate_tokens(bundle, batch, n)
        made[n] = ids.shape[1] if ids.shape[1] <= n else ids.shape[1] - b.input_ids.shape[1]

    t1 = timed(lambda: decode(1), device, repeats)
    tn = timed(lambda: decode(decode_tokens + 1), device, repeats, warmup=0)
    out["chat_new_tokens"] = made[decode_tokens + 1]  # fewer than asked when the random model hits EOS
    out["chat_generate_s"] = tn
    out["chat_decode_tokens_per_s"] = (made[decode_tokens + 1] - made[1]) / (tn - t1) if tn > t1 else None


GOALS = {"chat_decode_tokens_per_s": (">=", 200.0), "cfg_step_ms": ("<=", 15.0), "image_s": ("<", 0.6)}


def met(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, goal = GOALS[name]
    return {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]


def chat_rate(bundle: JanusFlowBundle, batch, n: int, fast: bool) -> tuple[float, list[int]]:
    """Greedy decode tokens/s through the chat pipeline's ``generate_tokens``, timed between the first and
    the last streamed token (prefill excluded), and the tokens."""
    times: list[float] = []

    class Clock:
        def put(self, value: torch.Tensor) -> None:
            times.append(time.perf_counter())

        def end(self) -> None:
            pass

    ids = generate_tokens(bundle, batch, n, streamer=Clock(), fast_decode=fast)[0].tolist()
    new = times[1:]  # the first put() is the prompt
    return ((len(new) - 1) / (new[-1] - new[0]) if len(new) > 1 else float("nan")), ids


def images_run(pipe: GenerationPipeline, n: int, decode: bool = True):
    """``n`` images of PROMPT, 30 Euler steps with CFG (one batch, any n: the request limit is not applied)."""
    tokens, mask = pipe.prompt_rows(PROMPT, n, guided=True)
    state = pipe.encode_prompt(tokens, mask)
    *_, last = sample(lambda w, _t: pipe.guided_velocity(state, w), pipe.initial_noise(SEED, n), STEPS, "euler",
                      CFG_WEIGHT, None)
    return pipe.decode(last.result) if decode and pipe.bundle.vae is not None else last.result


def goals(bundle: JanusFlowBundle, image: Image.Image, repeats: int, decode_tokens: int, out: dict) -> None:
    """Section 0 for one (bf16) model: the fast paths against the default ones and the issue's goals."""
    device, model = bundle.device, bundle.model
    pipe = GenerationPipeline(bundle)
    batch = chat_batch(bundle, image)
    chat: dict[str, Any] = {}
    for name, fast in (("default", False), ("fast", True)):
        chat_rate(bundle, batch, decode_tokens, fast)  # warm-up (the fast path compiles here on CUDA)
        rates = [chat_rate(bundle, batch, decode_tokens, fast) for _ in range(repeats)]
        chat[name] = {"tokens_per_s": max(r for r, _ in rates), "tokens": rates[0][1]}
    out["chat_decode_default_tokens_per_s"] = chat["default"]["tokens_per_s"]
    out["chat_decode_tokens_per_s"] = chat["fast"]["tokens_per_s"]
    out["chat_same_tokens"] = chat["fast"]["tokens"] == chat["default"]["tokens"]

    tokens, mask = pipe.prompt_rows(PROMPT, 1, guided=True)
    z = pipe.initial_noise(SEED, 1)
    velocities = {}
    try:
        for name, fast in (("default", False), ("fast", True)):
            model.static_prompt_cache = fast
            model.compile_velocity = fast and device.type == "cuda"  # CPU smoke runs: no minutes-long compile
            velocity = pipe.guided_velocity(pipe.encode_prompt(tokens, mask), CFG_WEIGHT)
            velocities[name] = velocity(z, T_CHECK)
            out[f"cfg_step_ms_{name}"] = 1e3 * timed(lambda v=velocity: z + v(z, T_CHECK) / STEPS, device,
                                                     max(repeats, 5), warmup=3)
        out["cfg_step_ms"] = out["cfg_step_ms_fast"]
        out["velocity_fast_vs_default"] = compare(velocities["fast"], velocities["default"])
        # the fast path is the default on CUDA (static prompt cache + CUDA graphs); the rest runs as shipped
        model.static_prompt_cache = model.compile_velocity = None
        images_run(pipe, 1)  # warm-up
        out["image_s"] = timed(lambda: images_run(pipe, 1), device, repeats, warmup=0)
        out["image_no_decode_s"] = timed(lambda: images_run(pipe, 1, decode=False), device, repeats, warmup=0)
        out["images_per_s"] = {}
        for n in (1, 4, 16):
            images_run(pipe, n)  # warm-up (a new graph for each batch size)
            out["images_per_s"][str(n)] = n / timed(lambda n=n: images_run(pipe, n), device, 1, warmup=0)
    finally:
        model.static_prompt_cache = model.compile_velocity = None
    out["goals_met"] = {k: met(k, out.get(k)) for k in GOALS}


def saved_as(t: torch.Tensor, save_dtype: torch.dtype, load_dtype: torch.dtype) -> torch.Tensor:
    """What a saved-then-loaded floating tensor must equal: cast to the file's dtype, then to the model's."""
    return t.to(save_dtype).to(load_dtype) if t.is_floating_point() else t


def loader(model: JanusFlowModel, processor, autoencoder, folder: Path, save_dtype: torch.dtype,
           device: torch.device, out: dict) -> None:
    """Section 4: save the fp32 model in ``save_dtype``, load it back in fp16 and bf16 on ``device``."""
    t = time.perf_counter()
    save_pretrained(model, folder, processor=processor, vae=autoencoder, sampling={"steps": STEPS, "cfg": CFG_WEIGHT},
                    dtype=save_dtype)
    out["save_s"] = time.perf_counter() - t
    out["save_dtype"] = str(save_dtype).removeprefix("torch.")
    out["file_GiB"] = gib((folder / "model.safetensors").stat().st_size)
    original = model.state_dict()
    with safe_open(folder / "model.safetensors", framework="pt") as sf:
        keys = sorted(sf.keys())
        probe = [keys[0], keys[len(keys) // 2], keys[-1], "language_model.model.layers.0.self_attn.q_proj.weight"]
        from_file = {k: sf.get_tensor(k) for k in dict.fromkeys(probe) if k in keys}
    for name in ("fp16", "bf16"):
        res = out.setdefault(name, {})
        try:
            free(device)
            t = time.perf_counter()
            # strict: raises on any missing, unexpected or wrong-shape key
            bundle = load_pretrained(folder, device=device, dtype=name, with_vae=autoencoder is not None)
            sync(device)
            res["load_s"] = time.perf_counter() - t
            res["strict_key_check"] = "passed"
            dt = DTYPES[name]
            loaded = bundle.model.state_dict()
            res["model_dtype"] = str(bundle.model.dtype).removeprefix("torch.")
            res["rope_fp32"] = all(b.dtype == torch.float32 for n, b in bundle.model.named_buffers() if "inv_freq" in n)
            res["vae_dtype"] = str(bundle.vae.dtype).removeprefix("torch.") if bundle.vae is not None else None
            res["processor_same_ids"] = bool(torch.equal(bundle.processor.encode_generation_prompt(PROMPT),
                                                         processor.encode_generation_prompt(PROMPT)))
            res["keys_equal"] = set(loaded) == set(original)
            # every weight equals the saved one cast to this dtype (saved = original cast to save_dtype)
            mismatched = [k for k, v in loaded.items()
                          if not torch.equal(v, saved_as(original[k], save_dtype, v.dtype))]
            res["tensors_checked"] = len(loaded)
            res["tensors_mismatched"] = mismatched[:10]
            res["weights_match_saved"] = not mismatched
            res["file_probe_match"] = {k: torch.equal(loaded[k].cpu(), v.to(dt)) for k, v in from_file.items()}
            res["on_device"] = all(v.device.type == device.type for v in loaded.values())
            del bundle, loaded
        except Exception as exc:  # noqa: BLE001 - record per dtype and go on
            res["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            res["traceback"] = traceback.format_exc()[-3000:]
    free(device)


def int8(folder: Path, processor: JanusFlowProcessor, image: Image.Image, ref: dict[str, torch.Tensor],
         repeats: int, device: torch.device, out: dict) -> None:
    """Section 5: LLM linears in 8 bit through bitsandbytes, against the fp32 reference."""
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA setup inside bitsandbytes
        raise Skip(f"skipped: bitsandbytes not installed ({type(exc).__name__}: {exc})") from None
    out["bitsandbytes"] = getattr(bnb, "__version__", "?")
    if device.type != "cuda":
        raise Skip("skipped: 8-bit loading needs CUDA")
    if not ref:
        raise RuntimeError("no fp32 reference (its precision section failed)")
    if not folder.joinpath("model.safetensors").exists():
        raise Skip("skipped: no saved checkpoint (the loader section failed)")
    free(device)
    before = torch.cuda.memory_allocated(device)
    reset_peak(device)
    t = time.perf_counter()
    bundle = load_pretrained(folder, device=device, load_8bit=True, with_vae=False)
    sync(device)
    bundle.processor = processor  # the very same inputs as the fp32 reference
    out["load_s"] = time.perf_counter() - t
    out["dtype"] = str(bundle.model.dtype).removeprefix("torch.")
    out["int8_linears"] = sum(isinstance(m, bnb.nn.Linear8bitLt) for m in bundle.model.modules())
    out["weights_GiB"] = gib(torch.cuda.memory_allocated(device) - before)
    out["velocity"] = compare(cfg_velocity(bundle), ref["velocity"])
    out["logits"] = compare_logits(und_logits(bundle, chat_batch(bundle, image)), ref["logits"])
    pipe = GenerationPipeline(bundle)
    tokens, mask = pipe.prompt_rows(PROMPT, 1, guided=True)
    state = pipe.encode_prompt(tokens, mask)
    velocity, z = pipe.guided_velocity(state, CFG_WEIGHT), pipe.initial_noise(SEED, 1)
    out["cfg_velocity_s"] = timed(lambda: velocity(z, T_CHECK), device, repeats)
    out["note"] = "errors include the rounding of the saved checkpoint to its save dtype"
    out.update(memory(device))
    del bundle, state, pipe
    free(device)


def device_info(device: torch.device, info: dict[str, Any]) -> None:
    """Fill ``info`` step by step, so that what was found before a failure stays in the report."""
    info.update({"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                 "python": platform.python_version(), "host": platform.machine(),
                 "float32_matmul_precision": torch.get_float32_matmul_precision(),
                 "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}})
    for pkg in ("transformers", "diffusers", "accelerate", "safetensors", "tokenizers", "bitsandbytes"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=list(torch.cuda.get_device_capability(device)),
                    gpu_memory_GiB=gib(props.total_memory), bf16_supported=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    else:
        info["threads"] = torch.get_num_threads()


# -- the run -------------------------------------------------------------------------------------------------------
def summary(res: dict) -> str:
    def f(x: Any, spec: str = ".3g") -> str:
        return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)

    d = res.get("device", {})
    lines = [f"device: {d.get('gpu', d.get('device'))} | torch {d.get('torch')} | CUDA {d.get('cuda')} | "
             f"preset {res['preset']}", ""]
    g = res.get("goals", {})
    if "error" in g or "skipped" in g:
        lines += [f"goals: {g.get('error', g.get('skipped'))[:200]}", ""]
    elif g:
        ips, ok = g.get("images_per_s", {}), g.get("goals_met", {})
        lines += ["| goal (bf16) | default path | fast path | goal | met |", "|---|---|---|---|---|",
                  f"| chat decode tok/s | {f(g.get('chat_decode_default_tokens_per_s'))} | "
                  f"{f(g.get('chat_decode_tokens_per_s'))} | >= 200 | {ok.get('chat_decode_tokens_per_s')} |",
                  f"| 1-image CFG step ms | {f(g.get('cfg_step_ms_default'))} | {f(g.get('cfg_step_ms'))} | <= 15 | "
                  f"{ok.get('cfg_step_ms')} |",
                  f"| 30 steps + decode, 1 image, s | | {f(g.get('image_s'))} | < 0.6 | "
                  f"{ok.get('image_s')} |",
                  f"| images/s at batch 1, 4, 16 | | {', '.join(f(ips.get(k)) for k in ('1', '4', '16'))} | | |",
                  f"same chat tokens: {g.get('chat_same_tokens')}; fast vs default velocity rel err: "
                  f"{f(g.get('velocity_fast_vs_default', {}).get('rel_err'))}", ""]
    if "precision" not in res:  # a --goals-only run
        lines.append(f"total {res.get('total_s', 0):.1f} s")
        return "\n".join(lines)
    lines += [
             "| dtype | velocity rel err | logits rel err | last argmax | NaN/Inf | cache vs recompute |",
             "|---|---|---|---|---|---|"]
    for name, p in res.get("precision", {}).items():
        if "error" in p or "skipped" in p:
            lines.append(f"| {name} | {p.get('error', p.get('skipped'))[:80]} | | | | |")
            continue
        v, lg = p.get("velocity", {}), p.get("logits", {})
        bad = v.get("nan") or v.get("inf") or lg.get("nan") or lg.get("inf")
        cache = p.get("cache_vs_recompute", {}).get("rel_err")
        lines.append(f"| {name} | {f(v.get('rel_err', 'ref'))} | {f(lg.get('rel_err', 'ref'))} | "
                     f"{lg.get('last_argmax_agree', 'ref')} | {bad} | {f(cache)} |")
    lines += ["", "| dtype | s/image (30 steps) | + VAE decode | decode | step | chat prefill | decode tok/s "
              "| peak GiB |", "|---|---|---|---|---|---|---|---|"]
    for name, s in res.get("speed", {}).items():
        if "error" in s or "skipped" in s:
            lines.append(f"| {name} | {s.get('error', s.get('skipped'))[:80]} | | | | | | |")
            continue
        peak = s.get("peak_allocated_GiB", s.get("peak_rss_GiB"))
        lines.append(f"| {name} | {f(s.get('gen_no_decode_s'))} | {f(s.get('gen_with_decode_s'))} | "
                     f"{f(s.get('vae_decode_s'))} | {f(s.get('step_s'))} | {f(s.get('chat_prefill_s'))} | "
                     f"{f(s.get('chat_decode_tokens_per_s'))} | {f(peak)} |")
    ld = res.get("loader", {})
    if "error" in ld or "skipped" in ld:
        lines += ["", f"loader: {ld.get('error', ld.get('skipped'))[:200]}"]
    else:
        parts = [f"{n}: " + (ld[n].get("error", "")[:120] or f"load {f(ld[n].get('load_s'))} s, strict "
                             f"{ld[n].get('strict_key_check')}, weights match {ld[n].get('weights_match_saved')}")
                 for n in ("fp16", "bf16") if n in ld]
        lines += ["", f"loader: save {f(ld.get('save_s'))} s ({f(ld.get('file_GiB'))} GiB {ld.get('save_dtype')}); "
                  + "; ".join(parts)]
    q = res.get("int8", {})
    if "error" in q or "skipped" in q:
        lines.append(f"8-bit: {q.get('error', q.get('skipped'))[:200]}")
    else:
        lines.append(f"8-bit: velocity rel err {f(q.get('velocity', {}).get('rel_err'))}, logits rel err "
                     f"{f(q.get('logits', {}).get('rel_err'))}, weights {f(q.get('weights_GiB'))} GiB")
    lines.append(f"total {res.get('total_s', 0):.1f} s")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="janusflow-1.3b", choices=("janusflow-1.3b", "tiny"),
                    help="tiny: a quick smoke run (the presets whose VAE this script builds)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cuda.json"))
    ap.add_argument("--repeats", type=int, default=2, help="timed runs after the warm-up (best is kept)")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--save-dtype", default="bf16", choices=sorted(DTYPES),
                    help="dtype of the saved checkpoint (the published one is bf16)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="sections not started by then are skipped")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1 on cpu, torch's on cuda)")
    ap.add_argument("--goals-only", action="store_true", help="section 0 (the issue #26 goals) only")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_cuda: no CUDA GPU is available here, so nothing was measured. Run it on a machine with a GPU, "
              "or smoke-test the script's logic with: python -m bench.bench_cuda --device cpu --preset tiny "
              "--out /tmp/cuda-smoke.json")
        return 2
    if device.type == "cpu" or args.threads:
        torch.set_num_threads(args.threads or 1)
    torch.set_grad_enabled(False)
    # a true fp32 reference: no TF32 in matmuls (torch's default) nor in cuDNN convolutions (on by default)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    res: dict[str, Any] = {"preset": args.preset, "repeats": args.repeats, "steps": STEPS, "cfg": CFG_WEIGHT}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    PARTIAL.update(path=args.out, res=res)
    if IMPORT_ERROR is not None:  # nothing of the project can run: report the environment and the error
        res["import_error"] = IMPORT_ERROR
        with section(res, "device") as out:
            device_info(device, out)
        write_report(res, args.out)
        return 1

    with section(res, "device") as out:
        device_info(device, out)

    config = get_preset(args.preset)
    tmp = tempfile.TemporaryDirectory(prefix="bench_cuda_")
    work = Path(tmp.name)
    image = test_image(config.siglip.image_size)
    processor = autoencoder = None
    with section(res, "setup") as out:
        t = time.perf_counter()
        processor = make_processor(config, work / "tokenizer")
        try:
            autoencoder = make_autoencoder(args.preset)
            out["vae_params_M"] = sum(p.numel() for p in autoencoder.parameters()) / 1e6
        except Exception as exc:  # noqa: BLE001 - go on without decoding
            out["vae_error"] = f"{type(exc).__name__}: {exc}"
        out["processor_vae_s"] = time.perf_counter() - t
        with torch.device("meta"):
            out["params_B"] = sum(p.numel() for p in JanusFlowModel(config).parameters()) / 1e9

    # sections 2 and 3, one dtype at a time: the fp32 model gives the reference, then the same weights
    # (rebuilt from the same seed, checked by a fingerprint) cast to bf16 / fp16. Only one model is on the
    # device at a time, so each dtype's peak memory is its own. fp32 speed, the least interesting number,
    # runs last, after the loader and 8-bit sections, so that the time budget cuts it first.
    ref: dict[str, torch.Tensor] = {}

    def new_bundle(name: str, out: dict) -> JanusFlowBundle:
        if processor is None:
            raise RuntimeError("setup failed: no processor/VAE")
        free(device)
        t = time.perf_counter()
        model = build_random(config, device)
        out["weights_fingerprint"] = fingerprint(model)
        cast(model, DTYPES[name])
        sync(device)
        out["build_s"] = time.perf_counter() - t
        out["weights_GiB"] = gib(sum(p.numel() * p.element_size() for p in model.parameters()))
        return JanusFlowBundle(model=model, config=config, processor=processor,
                               vae=vae_for(autoencoder, device, DTYPES[name]),
                               sampling={"steps": STEPS, "cfg": CFG_WEIGHT}, name=f"random-{args.preset}")

    def run_speed(name: str, bundle: JanusFlowBundle | None) -> None:
        with section(res.setdefault("speed", {}), name) as out:
            check_budget(args.budget_s)
            if bundle is None:
                bundle = new_bundle(name, {})
            free(device)
            reset_peak(device)
            speed(bundle, image, args.repeats, args.decode_tokens, out)
            out.update(memory(device))

    with section(res, "goals") as out:  # section 0, first: the figures the fast paths are for
        bundle = new_bundle("bf16", {})
        try:
            goals(bundle, image, args.repeats, args.decode_tokens, out)
        finally:
            del bundle
            free(device)
    if args.goals_only:
        tmp.cleanup()
        write_report(res, args.out)
        return 0

    precision_res = res.setdefault("precision", {})
    for name in ("fp32", "bf16", "fp16"):
        bundle = None
        with section(precision_res, name) as out:
            check_budget(args.budget_s)
            if name != "fp32" and not ref:
                raise RuntimeError("no fp32 reference (its section failed)")
            bundle = new_bundle(name, out)
            fp32_print = precision_res["fp32"].get("weights_fingerprint")
            out["same_weights_as_fp32"] = out["weights_fingerprint"] == fp32_print
            precision(bundle, image, ref, out)
        if name != "fp32" and bundle is not None:
            run_speed(name, bundle)
        del bundle
    free(device)

    # section 4: save_pretrained -> load_pretrained round trip (the folder is reused by section 5)
    ckpt = work / "checkpoint"
    with section(res, "loader") as out:
        check_budget(args.budget_s)
        if processor is None:
            raise RuntimeError("setup failed: no processor/VAE")
        model = build_random(config, device)
        try:
            loader(model, processor, autoencoder, ckpt, DTYPES[args.save_dtype], device, out)
        finally:
            del model
            free(device)

    # section 5: 8-bit
    with section(res, "int8") as out:
        check_budget(args.budget_s)
        int8(ckpt, processor, image, ref, args.repeats, device, out)

    run_speed("fp32", None)
    tmp.cleanup()
    write_report(res, args.out)
    return 0


def write_report(res: dict, path: Path) -> None:
    res["total_s"] = time.perf_counter() - T0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(res), indent=2, default=str))
        print(f"wrote {path}")
    except OSError as exc:
        print(f"could not write {path}: {exc}; the report follows\n{json.dumps(json_safe(res), default=str)}")
    if "import_error" in res:
        print(f"the project could not be imported: {res['import_error']}")
    else:
        print(summary(res))


if __name__ == "__main__":
    raise SystemExit(main())
