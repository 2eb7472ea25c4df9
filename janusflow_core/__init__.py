"""JanusFlow: one LLM that understands images and generates them with rectified flow."""

from .bundle import JanusFlowBundle
from .checkpoint import load_pretrained, save_pretrained
from .config import JanusFlowConfig
from .modeling import JanusFlowModel
from .pipelines import ChatPipeline, GenerationPipeline, GenerationResult

__all__ = ["ChatPipeline", "GenerationPipeline", "GenerationResult", "JanusFlowBundle", "JanusFlowConfig",
           "JanusFlowModel", "load_pretrained", "save_pretrained"]
