from .generate import GenerationPipeline, GenerationResult, check_generation_inputs
from .understand import ChatPipeline, check_chat_inputs, generate_tokens

__all__ = ["ChatPipeline", "GenerationPipeline", "GenerationResult", "check_chat_inputs", "check_generation_inputs",
           "generate_tokens"]
