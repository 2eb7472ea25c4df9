"""Named model configurations, in one registry.

    get_preset("janusflow-1.3b")            # the published model
    get_preset("shapes", vocab_size=400)    # the model the shapes recipe trains
    get_preset("tiny")                      # the random test model (tests, benchmarks' smoke runs)
    get_preset("tiny-train")                # the seconds-scale training tests' model

Each entry is a function returning a :class:`~janusflow_core.config.JanusFlowConfig`; its keyword
arguments (vocabulary size, widths) are the preset's free sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import SIGLIP_TABLE, GenDecoderConfig, GenEncoderConfig, JanusFlowConfig, LLMConfig, SigLIPConfig
from .shapes.world import CANVAS


def janusflow_1_3b() -> JanusFlowConfig:
    """The published deepseek-ai/JanusFlow-1.3B."""
    return JanusFlowConfig(
        llm=LLMConfig(vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384),
        siglip=SigLIPConfig(model_name="siglip_large_patch16_384", **SIGLIP_TABLE["siglip_large_patch16_384"]),
        gen_enc=GenEncoderConfig(),
        gen_dec=GenDecoderConfig(),
        gen_latent_size=48,
    )


def tiny(vocab_size: int = 512, hidden: int = 64, latent: int = 8, image_size: int = 32) -> JanusFlowConfig:
    """A few-hundred-kB model for tests: every path of the real one at toy widths."""
    return JanusFlowConfig(
        llm=LLMConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512),
        siglip=SigLIPConfig(model_name="siglip_tiny", image_size=image_size, patch_size=8, width=48,
                            layers=2, heads=4),
        gen_enc=GenEncoderConfig(block_out_channels=(32,), hidden_size=hidden),
        gen_dec=GenDecoderConfig(in_channels=32, block_out_channels=(32,), hidden_size=hidden),
        gen_latent_size=latent,
    )


def tiny_train(vocab_size: int = 300) -> JanusFlowConfig:
    """The training tests' model: shapes images (64 px) on an 8x8x4 latent, trainable in seconds."""
    return JanusFlowConfig(
        llm=LLMConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256),
        siglip=SigLIPConfig(model_name="siglip_tiny_test", image_size=CANVAS, patch_size=16, width=32, layers=1,
                            heads=2),
        gen_enc=GenEncoderConfig(block_out_channels=(16,), layers_in_middle=1, hidden_size=32),
        gen_dec=GenDecoderConfig(in_channels=16, block_out_channels=(16,), layers_in_middle=1, hidden_size=32),
        gen_latent_size=8,
    )


def shapes(vocab_size: int = 400, hidden: int = 128, layers: int = 4) -> JanusFlowConfig:
    """The shapes model (``assets/janusflow-shapes``); ``hidden`` is the LLM width (heads of 32 dimensions,
    MLP 3x) and ``layers`` its depth. The generation encoder/decoder project to it; the ViT keeps its own
    width (the aligner maps between them). Images are the shapes world's canvas, latents a quarter of it."""
    if hidden % 32:
        raise ValueError(f"llm_hidden must be a multiple of 32 (heads of 32 dimensions), got {hidden}")
    if layers < 1:
        raise ValueError(f"llm_layers must be at least 1, got {layers}")
    heads = hidden // 32
    return JanusFlowConfig(
        llm=LLMConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=256),
        siglip=SigLIPConfig(model_name="siglip_shapes_patch8_64", image_size=CANVAS, patch_size=8, width=128,
                            layers=4, heads=4),
        gen_enc=GenEncoderConfig(input_channels=4, kernel_size=2, stride=2, block_out_channels=(64,),
                                 layers_in_middle=2, hidden_size=hidden),
        gen_dec=GenDecoderConfig(in_channels=64, out_channels=4, block_out_channels=(64,), layers_in_middle=2,
                                 hidden_size=hidden),
        gen_latent_size=CANVAS // 4,
    )


PRESETS: dict[str, Callable[..., JanusFlowConfig]] = {
    "janusflow-1.3b": janusflow_1_3b,
    "shapes": shapes,
    "tiny": tiny,
    "tiny-train": tiny_train,
}


def get_preset(name: str, **sizes: Any) -> JanusFlowConfig:
    """The config of preset ``name``, with its free sizes (``vocab_size=...``) overridden; a ValueError
    listing the known names for an unknown one."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
    return factory(**sizes)
