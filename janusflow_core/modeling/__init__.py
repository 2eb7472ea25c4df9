from .attention import ATTENTION, float32_attention
from .janusflow import JanusFlowModel, PromptState

__all__ = ["ATTENTION", "JanusFlowModel", "PromptState", "float32_attention"]
