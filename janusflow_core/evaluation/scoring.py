"""Scoring generated images and answers by the rules of ``shared/shapes-world.md``.

Detection (``detect``): a pixel is foreground when its Euclidean RGB distance from white
exceeds 60; 4-connected foreground components of at least 12 px are objects; an object's colour
is the palette entry nearest its per-channel median RGB; its shape comes from its fill ratio
(pixels / bounding-box area): >= 0.85 square, 0.65..0.85 circle, < 0.65 triangle; it is well
formed when its bounding box is 9..23 px on each side with height/width in [0.75, 1.34].
Components under 12 px are ignored. Images are scored at 64 x 64 only: any other size is first
resized to 64 x 64 with Pillow (BOX filter when shrinking, BILINEAR when enlarging).

Shapes the fill-ratio rule does not know are recognised by template matching (``templates.py``): pass
``shapes=ShapeTemplates...`` to ``detect`` and every object's shape becomes the best-matching template's name.

Generation (``image_passes``, ``geneval_score``): an image passes when every detected object is
well formed and the detected objects are exactly what the prompt names (``shapes.satisfies``:
same number, the named shapes and colours, and the relation between the two objects by the 4 px
rule on bounding-box centres). ``chance_baseline`` scores the same images against other prompts
of the same task that ask for a different scene (rewordings excluded).

Understanding (``vqa_accuracy``): exact match after ``normalize_answer``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..shapes.prompts import (
    TASKS,
    PromptSpec,
    all_prompts,
    is_rewording,
    parse_prompt,
    satisfies,
    split_key,
)
from ..shapes.world import CANVAS, NUMBER_WORDS, PALETTE

__all__ = [
    "Detection",
    "PromptSpec",
    "alternative_prompts",
    "chance_baseline",
    "check_image",
    "detect",
    "foreground_mask",
    "geneval_score",
    "image_passes",
    "normalize_answer",
    "object_alphas",
    "parse_prompt",
    "to_canvas",
    "vqa_accuracy",
]

FOREGROUND_DISTANCE = 60.0
MIN_COMPONENT_PIXELS = 12
SQUARE_MIN_FILL = 0.85
CIRCLE_MIN_FILL = 0.65
MIN_SIDE, MAX_SIDE = 9, 23
MIN_ASPECT, MAX_ASPECT = 0.75, 1.34  # height / width

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[c] for c in _PALETTE_NAMES], dtype=np.float64)  # (6, 3)


@dataclass(frozen=True)
class Detection:
    """One detected object. (cx, cy) is its bounding-box centre; box is inclusive."""

    shape: str
    color: str
    cx: float
    cy: float
    box: tuple[int, int, int, int]
    pixels: int
    fill: float
    well_formed: bool


def to_canvas(image: Image.Image) -> np.ndarray:
    """The image as a (64, 64, 3) uint8 array, resized first if it is another size."""
    image = image.convert("RGB")
    if image.size != (CANVAS, CANVAS):
        shrinking = image.width > CANVAS or image.height > CANVAS
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        image = image.resize((CANVAS, CANVAS), resample)
    return np.asarray(image, dtype=np.uint8)


def foreground_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: Euclidean RGB distance from white above 60."""
    diff = 255.0 - rgb.astype(np.float64)
    return (diff * diff).sum(axis=-1) > FOREGROUND_DISTANCE**2


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a bool mask, each as an array of flat pixel indices."""
    h, w = mask.shape
    fg = mask.ravel().tolist()
    seen = [False] * (h * w)
    out = []
    for start in np.flatnonzero(mask).tolist():
        if seen[start]:
            continue
        seen[start] = True
        stack, members = [start], []
        while stack:
            i = stack.pop()
            members.append(i)
            y, x = divmod(i, w)
            for j, ok in ((i - w, y > 0), (i + w, y < h - 1), (i - 1, x > 0), (i + 1, x < w - 1)):
                if ok and fg[j] and not seen[j]:
                    seen[j] = True
                    stack.append(j)
        out.append(np.array(members))
    return out


def _shape_of(fill: float) -> str:
    if fill >= SQUARE_MIN_FILL:
        return "square"
    if fill >= CIRCLE_MIN_FILL:
        return "circle"
    return "triangle"


def _alpha_crop(rgb: np.ndarray, members: np.ndarray, others: np.ndarray, box: tuple[int, int, int, int],
                median: np.ndarray) -> np.ndarray:
    """How much of the object's colour each pixel of its bounding box holds: distance from white over the
    object colour's distance from white, clipped to [0, 1]; pixels of other objects 0. Unlike the 60-unit
    foreground mask this keeps a blurred hole or notch visible (a small ring decoded by a VAE)."""
    x0, y0, x1, y1 = box
    crop = 255.0 - rgb[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
    alpha = np.sqrt((crop * crop).sum(-1)) / max(float(np.linalg.norm(255.0 - median)), 1e-6)
    alpha = np.clip(alpha, 0.0, 1.0)
    alpha[others[y0:y1 + 1, x0:x1 + 1]] = 0.0
    return alpha


def object_alphas(image: Image.Image) -> list[np.ndarray]:
    """Per object (component of at least 12 px), in raster order: its bounding-box crop of colour coverage
    in [0, 1] (see ``_alpha_crop``), the input of template matching."""
    rgb = to_canvas(image)
    comps = [m for m in _components(foreground_mask(rgb)) if m.size >= MIN_COMPONENT_PIXELS]
    labels = np.full(CANVAS * CANVAS, -1)
    for k, m in enumerate(comps):
        labels[m] = k
    labels = labels.reshape(CANVAS, CANVAS)
    out = []
    for k, members in enumerate(comps):
        ys, xs = np.divmod(members, CANVAS)
        median = np.median(rgb.reshape(-1, 3)[members].astype(np.float64), axis=0)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        out.append(_alpha_crop(rgb, members, (labels >= 0) & (labels != k), box, median))
    return out


def detect(image: Image.Image, shapes=None) -> list[Detection]:
    """The objects in an image, by the spec's detection rules, in raster order. ``shapes``: a
    ``templates.ShapeTemplates`` to name each object's shape by silhouette instead of by fill ratio."""
    rgb = to_canvas(image)
    flat = rgb.reshape(-1, 3)  # (4096, 3)
    detections = []
    comps = [m for m in _components(foreground_mask(rgb)) if m.size >= MIN_COMPONENT_PIXELS]
    for members in comps:
        ys, xs = np.divmod(members, CANVAS)
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        w, h = x1 - x0 + 1, y1 - y0 + 1
        fill = members.size / (w * h)
        median = np.median(flat[members].astype(np.float64), axis=0)  # (3,)
        color = _PALETTE_NAMES[int(((_PALETTE_RGB - median) ** 2).sum(axis=1).argmin())]
        sides_ok = MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE
        well_formed = sides_ok and MIN_ASPECT <= h / w <= MAX_ASPECT
        if shapes is None:
            shape = _shape_of(fill)
        else:
            others = np.zeros(CANVAS * CANVAS, dtype=bool)
            for m in comps:
                if m is not members:
                    others[m] = True
            shape = shapes.classify(_alpha_crop(rgb, members, others.reshape(CANVAS, CANVAS), (x0, y0, x1, y1),
                                                median))[0]
        detections.append(
            Detection(
                shape=shape,
                color=color,
                cx=(x0 + x1) / 2,
                cy=(y0 + y1) / 2,
                box=(x0, y0, x1, y1),
                pixels=int(members.size),
                fill=fill,
                well_formed=well_formed,
            )
        )
    return detections


def _as_spec(prompt: str | PromptSpec) -> PromptSpec:
    return parse_prompt(prompt) if isinstance(prompt, str) else prompt


def check_image(image: Image.Image, prompt: str | PromptSpec) -> tuple[bool, str]:
    """(passed, reason): reason is 'pass' or the first failed rule, for diagnostics."""
    spec = _as_spec(prompt)
    found = detect(image)
    if not all(d.well_formed for d in found):
        return False, "malformed"
    if len(found) != spec.count:
        return False, "count"
    if sorted(d.shape for d in found) != sorted(spec.shapes):
        return False, "shape"
    if not satisfies(found, PromptSpec(spec.task, spec.shapes, spec.colors)):
        return False, "color"
    if not satisfies(found, spec):
        return False, "relation"
    return True, "pass"


def image_passes(image: Image.Image, prompt: str | PromptSpec) -> bool:
    """Whether every detected object is well formed and they are exactly what the prompt names."""
    return check_image(image, prompt)[0]


def _summarise(passes: Mapping[str, list[bool]]) -> dict:
    per_task = {t: sum(v) / len(v) for t in TASKS if (v := passes.get(t))}
    return {
        "per_task": per_task,
        "overall": sum(per_task.values()) / len(per_task) if per_task else 0.0,
        "n_images": {t: len(passes[t]) for t in per_task},
    }


def geneval_score(images_by_prompt: Mapping[str, Sequence[Image.Image]]) -> dict:
    """Per-task pass rate and their mean (over the tasks present) for images keyed by prompt."""
    passes: dict[str, list[bool]] = {}
    for prompt, images in images_by_prompt.items():
        spec = parse_prompt(prompt)
        passes.setdefault(spec.task, []).extend(image_passes(im, spec) for im in images)
    return _summarise(passes)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def alternative_prompts(prompt: str) -> list[str]:
    """Prompts of the same task asking for a different scene, in a fixed per-prompt order."""
    spec = parse_prompt(prompt)
    others = [p for p in all_prompts(spec.task) if not is_rewording(p, spec)]
    # hashed on the split key, so fixing "a orange" -> "an orange" left this order unchanged
    return sorted(others, key=lambda p: _md5(split_key(f"{prompt}|{p}")))


def chance_baseline(images_by_prompt: Mapping[str, Sequence[Image.Image]]) -> dict:
    """``geneval_score``'s numbers with image i of a prompt scored against its i-th alternative."""
    passes: dict[str, list[bool]] = {}
    for prompt, images in images_by_prompt.items():
        spec = parse_prompt(prompt)
        alternatives = alternative_prompts(prompt)
        passes.setdefault(spec.task, []).extend(
            image_passes(im, alternatives[i % len(alternatives)]) for i, im in enumerate(images)
        )
    return _summarise(passes)


_DIGITS = {str(i): word for i, word in enumerate(NUMBER_WORDS)}


def normalize_answer(text: str) -> str:
    """Lower-case, drop everything but letters and digits, and spell a lone digit 0-4."""
    s = re.sub(r"[^a-z0-9]", "", text.lower())
    return _DIGITS.get(s, s)


def vqa_accuracy(preds: Sequence[str], answers: Sequence[str]) -> float:
    """Exact-match accuracy after ``normalize_answer``, over one-word questions."""
    if len(preds) != len(answers):
        raise ValueError(f"{len(preds)} predictions for {len(answers)} answers")
    if not answers:
        return 0.0
    return sum(normalize_answer(p) == normalize_answer(a) for p, a in zip(preds, answers)) / len(answers)
