"""A seconds-scale training setup for tests and the DDP check: tiny tokenizer, model and data pools
(a fixed average-pooling "VAE" stands in for the autoencoder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from janusflow_core.config import JanusFlowConfig
from janusflow_core.modeling import JanusFlowModel
from janusflow_core.presets import get_preset
from janusflow_core.processing.processor import JanusFlowProcessor
from janusflow_core.processing.tokenizer import train_bpe_tokenizer
from janusflow_core.training.data import (
    GenerationPool,
    UnderstandingPool,
    build_generation_pool,
    build_understanding_pool,
)
from janusflow_core.training.shapes_recipe import corpus


def pool_encode(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, 64, 64) -> (B, 4, 8, 8): average pooling plus a grey channel (deterministic)."""
    x = F.avg_pool2d(images, 8)
    return torch.cat([x, x.mean(1, keepdim=True)], dim=1)


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
    tok = train_bpe_tokenizer(corpus(seed, n_scenes=100), 300, Path(folder) / "tokenizer")
    cfg = get_preset("tiny-train", vocab_size=len(tok))
    proc = JanusFlowProcessor.for_model(cfg, tok)
    return TinySetup(proc, cfg, build_understanding_pool(n_und, seed), build_generation_pool(n_gen, seed, pool_encode))
