"""A seconds-scale training setup for tests and the DDP check: tiny tokenizer, model and data pools
(a fixed average-pooling "VAE" stands in for the autoencoder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import GenDecoderConfig, GenEncoderConfig, JanusFlowConfig, LLMConfig, SigLIPConfig
from ..modeling import JanusFlowModel
from ..processing.image import ImageProcessor, ImageProcessorConfig
from ..processing.processor import JanusFlowProcessor, SpecialTokens
from ..processing.tokenizer import train_bpe_tokenizer
from .data import GenerationPool, UnderstandingPool, build_generation_pool, build_understanding_pool


def pool_encode(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, 64, 64) -> (B, 4, 8, 8): average pooling plus a grey channel (deterministic)."""
    x = F.avg_pool2d(images, 8)
    return torch.cat([x, x.mean(1, keepdim=True)], dim=1)


def tiny_config(vocab_size: int) -> JanusFlowConfig:
    return JanusFlowConfig(
        llm=LLMConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256),
        siglip=SigLIPConfig(model_name="siglip_tiny_test", image_size=64, patch_size=16, width=32, layers=1, heads=2),
        gen_enc=GenEncoderConfig(block_out_channels=(16,), layers_in_middle=1, hidden_size=32),
        gen_dec=GenDecoderConfig(in_channels=16, block_out_channels=(16,), layers_in_middle=1, hidden_size=32),
        gen_latent_size=8,
    )


@dataclass
class TinySetup:
    processor: JanusFlowProcessor
    config: JanusFlowConfig
    und_pool: UnderstandingPool
    gen_pool: GenerationPool

    def model(self, seed: int = 0) -> JanusFlowModel:
        torch.manual_seed(seed)
        return JanusFlowModel(self.config)


def tiny_setup(folder: str | Path, n_und: int = 32, n_gen: int = 32, seed: int = 0) -> TinySetup:
    from .shapes_recipe import corpus

    tok = train_bpe_tokenizer(corpus(seed, n_scenes=100), 300, Path(folder) / "tokenizer")
    cfg = tiny_config(len(tok))
    proc = JanusFlowProcessor(tok, ImageProcessor(ImageProcessorConfig(image_size=64)), cfg.num_und_tokens,
                              SpecialTokens.from_tokenizer(tok))
    return TinySetup(proc, cfg, build_understanding_pool(n_und, seed), build_generation_pool(n_gen, seed, pool_encode))
