"""Shared test set-up: nothing reaches for the network; one tiny random model per session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURE_A = SHARED / "fixtures" / "official-tiny-a"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from janusflow_core.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_dir: Path):
    from janusflow_core import load_pretrained

    return load_pretrained(tiny_model_dir, device="cpu", dtype="fp32")


def require_shared(path: Path) -> Path:
    """The shared reference material sits beside the repo (CI has it too); without it, say so."""
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{path} is missing: CI must run with shared/ beside the repo")
        pytest.skip(f"{path} not found (shared/ is expected beside the repo root)")
    return path

