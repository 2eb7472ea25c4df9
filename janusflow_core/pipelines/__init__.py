from .batching import VelocityBatcher, join_prompts
from .generate import GenerationPipeline, GenerationResult, SamplingDefaults, check_generation_inputs
from .understand import ChatPipeline, check_chat_inputs, generate_tokens

__all__ = ["ChatPipeline", "GenerationPipeline", "GenerationResult", "SamplingDefaults", "check_chat_inputs",
           "check_generation_inputs", "generate_tokens",
           "join_prompts", "VelocityBatcher"]
