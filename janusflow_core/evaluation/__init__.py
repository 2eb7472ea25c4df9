"""The benchmarks the README reports: GenEval-style generation and one-word VQA on the shapes world."""

from .scoring import (
    Detection,
    PromptSpec,
    alternative_prompts,
    chance_baseline,
    check_image,
    detect,
    geneval_score,
    image_passes,
    normalize_answer,
    parse_prompt,
    vqa_accuracy,
)

__all__ = [
    "Detection",
    "PromptSpec",
    "alternative_prompts",
    "chance_baseline",
    "check_image",
    "detect",
    "geneval_score",
    "image_passes",
    "normalize_answer",
    "parse_prompt",
    "vqa_accuracy",
]
