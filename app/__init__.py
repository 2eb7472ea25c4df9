"""The JanusFlow Gradio app: layout and handlers only; every computation lives in janusflow_core."""

from .engine import Engine, EngineError
from .layout import create_demo, launch

__all__ = ["Engine", "EngineError", "create_demo", "launch"]
