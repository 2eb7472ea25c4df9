from .generate import MAX_IMAGES, MAX_STEPS, GenerationPipeline, GenerationResult
from .understand import ChatPipeline, generate_tokens

__all__ = ["MAX_IMAGES", "MAX_STEPS", "ChatPipeline", "GenerationPipeline", "GenerationResult", "generate_tokens"]
