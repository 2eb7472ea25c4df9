from .attention import ATTENTION, float32_attention
from .janusflow import JanusFlowModel, PromptState
from .matvec import MatVecLinear, fast_matvec, use_matvec

__all__ = ["ATTENTION", "JanusFlowModel", "MatVecLinear", "PromptState", "fast_matvec", "float32_attention",
           "use_matvec"]
