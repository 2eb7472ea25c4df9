"""Training JanusFlow (paper §3.3-3.4, §4.1): data mixing, losses, stages, EMA, the accelerate loop, and
the from-scratch recipe of the shapes model (``python -m janusflow_core.training.shapes_recipe``)."""

from .config import TrainConfig
from .ema import copy_ema_into, ema_init, update_ema
from .forward import RepaHead, TrainModule, generation_forward, lm_forward
from .losses import ar_loss, drop_prompts, flow_loss, interpolate, match_grid, repa_loss, sample_logit_normal
from .stages import is_trainable, set_stage

__all__ = ["TrainConfig", "RepaHead", "TrainModule", "ar_loss", "copy_ema_into", "drop_prompts", "ema_init",
           "flow_loss", "generation_forward", "interpolate", "is_trainable", "lm_forward", "match_grid",
           "repa_loss", "sample_logit_normal", "set_stage", "update_ema"]
