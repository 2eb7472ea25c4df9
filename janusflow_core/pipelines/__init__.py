from .batching import VelocityBatcher, join_prompts
from .generate import (
    GenerationOptions,
    GenerationPipeline,
    GenerationResult,
    SamplingDefaults,
    check_generation_inputs,
    check_generation_options,
)
from .understand import ChatPipeline, check_chat_inputs, decode, generate_tokens

__all__ = ["ChatPipeline", "GenerationOptions", "GenerationPipeline", "GenerationResult", "SamplingDefaults",
           "VelocityBatcher", "check_chat_inputs", "check_generation_inputs", "check_generation_options", "decode",
           "generate_tokens", "join_prompts"]
