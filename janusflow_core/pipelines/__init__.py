from .generate import GenerationPipeline, GenerationResult, SamplingDefaults, check_generation_inputs
from .understand import ChatPipeline, check_chat_inputs, decode, generate_tokens

__all__ = ["ChatPipeline", "GenerationPipeline", "GenerationResult", "SamplingDefaults", "check_chat_inputs",
           "check_generation_inputs", "decode", "generate_tokens"]
