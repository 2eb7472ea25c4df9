"""Tiny random JanusFlow folders (same format as the published checkpoint) for tests and benchmarks.

A folder made here loads through :func:`janusflow_core.load_pretrained` exactly like the real model:
config.json, model.safetensors, tokenizer, processor/preprocessor configs, ``vae/`` and sampling.json.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from .checkpoint import save_pretrained
from .modeling import JanusFlowModel
from .presets import tiny
from .processing import JanusFlowProcessor, train_bpe_tokenizer

_WORDS = ("a red blue green yellow purple orange circle square triangle and left right of above below two three "
          "four what color is the shape how many objects are there describe image yes no").split()


def toy_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Short random phrases over a few dozen shape words: enough text to train a small BPE tokenizer."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 10))) for _ in range(n)]


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A 4x-downsampling AutoencoderKL with a few thousand parameters (32 px images, 8x8x4 latents)."""
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
                         block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32, scaling_factor=1.0)


def random_full_model(config, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                      seed: int = 0, std: float = 0.02) -> JanusFlowModel:
    """A model of any size (e.g. the 1.3B preset) with deterministic random weights for benchmarks, built
    on ``device`` in ``dtype`` without a CPU copy: norm weights 1, biases 0, matrices N(0, std^2); the
    RoPE frequencies in float32, as ``load_pretrained`` leaves them."""
    from .modeling.llm import reset_rope_buffers

    with torch.device("meta"):
        model = JanusFlowModel(config)
    model.to_empty(device=device)
    model.to(dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "norm" in name:
                p.fill_(1.0) if "weight" in name else p.zero_()
            else:
                p.normal_(0, std, generator=g)
    reset_rope_buffers(model.language_model, device)
    return model.eval().requires_grad_(False)


def random_init_(model: JanusFlowModel, seed: int = 0, std: float = 0.05) -> JanusFlowModel:
    """Every parameter random (norm weights around 1), so no path is an identity by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or name.endswith("norm1.weight") \
                    or name.endswith("norm2.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model


def make_tiny_model_dir(out_dir: str | Path, seed: int = 0, max_positions: int = 512,
                        sampling: dict | None = None) -> Path:
    """Write a random tiny JanusFlow (with tokenizer, processor settings and VAE) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_bpe_tokenizer(toy_corpus(seed=seed), 300, out)
    vocab = ((len(tok) + 63) // 64) * 64
    cfg = tiny(vocab_size=vocab, hidden=64, latent=8, image_size=32)
    if max_positions != cfg.llm.max_position_embeddings:
        from dataclasses import replace

        cfg = replace(cfg, llm=replace(cfg.llm, max_position_embeddings=max_positions))
    torch.manual_seed(seed)
    model = random_init_(JanusFlowModel(cfg), seed)
    processor = JanusFlowProcessor.for_model(cfg, tok)
    save_pretrained(model, out, processor=processor, vae=tiny_vae(seed),
                    sampling=sampling or {"steps": 4, "cfg": 2.0})
    return out
