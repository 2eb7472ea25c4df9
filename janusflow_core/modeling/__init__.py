from .janusflow import JanusFlowModel, PromptState

__all__ = ["JanusFlowModel", "PromptState"]
