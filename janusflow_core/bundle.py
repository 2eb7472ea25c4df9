"""What a loaded JanusFlow is: the model, its config, processor, VAE and recommended sampling settings.

:func:`janusflow_core.checkpoint.load_pretrained` fills a :class:`JanusFlowBundle`; the pipelines read
one. This module imports nothing heavy at run time, so any layer may name the type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    import torch

    from .config import JanusFlowConfig
    from .modeling import JanusFlowModel
    from .processing import JanusFlowProcessor
    from .vae import VAE

REPO_ROOT = Path(__file__).resolve().parents[1]
# The small shapes model shipped in the repository: what the app, the CLI and the benchmarks load by default.
DEFAULT_MODEL = REPO_ROOT / "assets" / "janusflow-shapes"


class SamplingSettings(TypedDict):
    """A model's recommended sampling settings as its ``sampling.json`` writes them (``cfg`` is the guidance
    weight; the pipelines hand them out as ``pipelines.SamplingDefaults(steps, guidance_scale)``)."""

    steps: int
    cfg: float


# The published model's recommended settings (paper demo / README): 30 Euler steps, CFG 2.
DEFAULT_SAMPLING: SamplingSettings = {"steps": 30, "cfg": 2.0}


def default_sampling() -> SamplingSettings:
    """A fresh copy of :data:`DEFAULT_SAMPLING` (callers may change theirs)."""
    return SamplingSettings(steps=DEFAULT_SAMPLING["steps"], cfg=DEFAULT_SAMPLING["cfg"])


@dataclass
class JanusFlowBundle:
    """Everything a pipeline needs, loaded once. ``processor`` is None when loaded without one (the
    chat pipeline needs it), ``vae`` None when loaded without one (generation needs it)."""

    model: JanusFlowModel
    config: JanusFlowConfig
    processor: JanusFlowProcessor | None = None
    vae: VAE | None = None
    sampling: SamplingSettings = field(default_factory=default_sampling)
    path: Path | None = None
    name: str = ""

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype
