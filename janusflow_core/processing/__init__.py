"""Processor: chat template, tokenizer helpers and image preprocessing (never touches the model)."""

from .chat import DEFAULT_SYSTEM_PROMPT, SFT_FORMAT, render_chat, render_generation_prompt
from .image import ImageProcessor, ImageProcessorConfig, load_image, to_rgb
from .processor import (
    BatchedInputs,
    JanusFlowProcessor,
    ProcessorConfig,
    SpecialTokens,
    batchify,
    cfg_rows,
    expand_image_tokens,
)
from .tokenizer import train_bpe_tokenizer

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "SFT_FORMAT",
    "BatchedInputs",
    "ImageProcessor",
    "ImageProcessorConfig",
    "JanusFlowProcessor",
    "ProcessorConfig",
    "SpecialTokens",
    "batchify",
    "cfg_rows",
    "expand_image_tokens",
    "load_image",
    "render_chat",
    "render_generation_prompt",
    "to_rgb",
    "train_bpe_tokenizer",
]
