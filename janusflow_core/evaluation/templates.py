"""Shape recognition by template matching, for shapes the world's fill-ratio rule does not know.

The world's scorer tells circle / square / triangle apart by fill ratio alone. A shape taught later (a ring,
a star, a cross...) needs a recogniser that knows nothing about it in advance, so shapes are compared here
by silhouette: an object's colour coverage over its bounding box (``scoring.object_alphas``: 1 where the pixel
is the object's colour, 0 where white), resampled to ``GRID`` x ``GRID``, is matched against one template per
shape name and size, and the best soft IoU (sum of minima / sum of maxima) wins. A template is the mean
silhouette of the examples of one shape whose bounding box has the same longer side (a small object is not its
large version scaled down: a 5 px ring has almost no hole left), and an object is compared with the templates
within ``SIDE_TOLERANCE`` px of its own size. Templates are learned from any single-object images:

- ``ShapeTemplates.world()`` renders the world's three shapes at every half-size with its own renderer;
- ``ShapeTemplates.learn(images, names)`` takes images that each hold one object (e.g. the ``a {shape}`` and
  ``a {color} {shape}`` pairs of a fine-tuning data folder, written by any program).

Both take ``transform``, applied to the images first: the evaluation passes the model's VAE round trip, so
that templates look like what the model can draw (a VAE blurs a small ring's hole; matched against sharp
templates every blurred ring would be a circle).

An object whose best IoU is below ``MIN_IOU`` is ``"unknown"`` (never what a prompt asks for).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

GRID = 16
MIN_IOU = 0.5
SIDE_TOLERANCE = 2
Transform = Callable[[list[Image.Image]], list[Image.Image]]


def silhouette(alpha: np.ndarray) -> np.ndarray:
    """A bounding-box crop of coverage in [0, 1] (h, w) -> resampled to (GRID, GRID)."""
    if alpha.size == 0:
        raise ValueError("silhouette of an empty crop")
    im = Image.fromarray(alpha.astype(np.float32), mode="F").resize((GRID, GRID), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(im, dtype=np.float64), 0.0, 1.0)


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


class ShapeTemplates:
    """(shape name, bounding-box side) -> mean silhouette; ``classify`` gives the best match and its IoU."""

    def __init__(self, templates: dict[tuple[str, int], np.ndarray]):
        if not templates:
            raise ValueError("ShapeTemplates needs at least one template")
        self.templates = dict(templates)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for name, _ in self.templates))

    def classify(self, alpha: np.ndarray) -> tuple[str, float]:
        """(best name or "unknown", its soft IoU) for one object's coverage crop."""
        s, side = silhouette(alpha), max(alpha.shape)
        near = {k: t for k, t in self.templates.items() if abs(k[1] - side) <= SIDE_TOLERANCE} or self.templates
        scores: dict[str, float] = {}
        for (name, _), t in near.items():
            scores[name] = max(scores.get(name, 0.0), soft_iou(s, t))
        best = max(scores, key=scores.get)
        return (best if scores[best] >= MIN_IOU else "unknown"), scores[best]

    def merged(self, other: ShapeTemplates) -> ShapeTemplates:
        """These templates and ``other``'s (``other``'s replace every template of a name both have)."""
        mine = {k: t for k, t in self.templates.items() if k[0] not in other.names}
        return ShapeTemplates({**mine, **other.templates})

    @classmethod
    def from_crops(cls, crops: Iterable[tuple[str, np.ndarray]]) -> ShapeTemplates:
        groups: dict[tuple[str, int], list[np.ndarray]] = {}
        for name, alpha in crops:
            groups.setdefault((name, max(alpha.shape)), []).append(silhouette(alpha))
        return cls({key: np.mean(ss, axis=0) for key, ss in groups.items()})

    @classmethod
    def learn(cls, images: Sequence[Image.Image], names: Sequence[str], min_examples: int = 5,
              transform: Transform | None = None) -> ShapeTemplates:
        """Templates from single-object images (``names[i]`` is the shape in ``images[i]``), after
        ``transform``. Images whose foreground is not one object (by the world's detection rules) are skipped;
        ValueError when a name is left with fewer than ``min_examples`` usable images."""
        from .scoring import object_alphas

        images = transform(list(images)) if transform is not None else list(images)
        pairs, counts = [], dict.fromkeys(names, 0)
        for image, name in zip(images, names, strict=True):
            crops = object_alphas(image)
            if len(crops) == 1:
                pairs.append((name, crops[0]))
                counts[name] += 1
        short = {n: c for n, c in counts.items() if c < min_examples}
        if short:
            raise ValueError(f"too few single-object images to learn a template: {short} (need {min_examples} each)")
        return cls.from_crops(pairs)

    @classmethod
    def world(cls, transform: Transform | None = None) -> ShapeTemplates:
        """The world's circle, square and triangle at every half-size and colour, drawn by ``shapes.render``."""
        from ..shapes.world import COLORS, MAX_HALF_SIZE, MIN_HALF_SIZE, SHAPES, Obj, Scene, render

        items = [(shape, render(Scene((Obj(shape, color, 32, 32, r),))))
                 for shape in SHAPES for r in range(MIN_HALF_SIZE, MAX_HALF_SIZE + 1) for color in COLORS]
        return cls.learn([im for _, im in items], [name for name, _ in items], transform=transform)
