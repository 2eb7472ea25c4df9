"""The shapes world: objects, scenes, the renderer, relations and the scene sampler.

Everything here follows ``shared/shapes-world.md`` exactly: a 64 x 64 white canvas holding one
to four non-overlapping circles, squares and triangles in six fixed colours, drawn with Pillow's
``ImageDraw`` (fill only, no outline, no anti-aliasing). Coordinates are integer pixels, y grows
downward, and an object's centre is the centre of its bounding box.

The prompt grammar lives in ``prompts.py`` and the questions in ``questions.py``; this file owns
only what a scene *is*.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 64
BACKGROUND = (255, 255, 255)
MIN_HALF_SIZE, MAX_HALF_SIZE = 5, 10
MAX_OBJECTS = 4
MIN_GAP = 3  # background pixels required between two bounding boxes
MARGIN = 1  # background pixels required between a bounding box and the canvas edge
RELATION_MIN_OFFSET = 4  # A left of B when A.cx <= B.cx - 4 (same rule for above)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 190),
    "orange": (245, 130, 20),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
MIRROR: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}


@dataclass(frozen=True)
class Obj:
    """One object: a shape of a colour, centred at (cx, cy), with integer half-size r."""

    shape: str
    color: str
    cx: int
    cy: int
    r: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; allowed: {SHAPES}")
        if self.color not in PALETTE:
            raise ValueError(f"unknown colour {self.color!r}; allowed: {COLORS}")
        if not MIN_HALF_SIZE <= self.r <= MAX_HALF_SIZE:
            raise ValueError(f"half-size r={self.r} outside [{MIN_HALF_SIZE}, {MAX_HALF_SIZE}]")

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Inclusive pixel box (x0, y0, x1, y1), as Pillow takes it."""
        return (self.cx - self.r, self.cy - self.r, self.cx + self.r, self.cy + self.r)


@dataclass(frozen=True)
class Scene:
    """An ordered tuple of objects. Order carries no meaning for the image."""

    objects: tuple[Obj, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))

    def __len__(self) -> int:
        return len(self.objects)

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum(
            (shape is None or o.shape == shape) and (color is None or o.color == color)
            for o in self.objects
        )


# --- relations (any object with .cx and .cy works, detections included) ---------------------


def left_of(a, b) -> bool:
    return a.cx <= b.cx - RELATION_MIN_OFFSET


def right_of(a, b) -> bool:
    return left_of(b, a)


def above(a, b) -> bool:
    return a.cy <= b.cy - RELATION_MIN_OFFSET


def below(a, b) -> bool:
    return above(b, a)


RELATION_FNS = {"left of": left_of, "right of": right_of, "above": above, "below": below}


def holds(a, relation: str, b) -> bool:
    """Whether ``a {relation} b`` is true."""
    return RELATION_FNS[relation](a, b)


# --- geometry -------------------------------------------------------------------------------


def inside_canvas(o: Obj) -> bool:
    x0, y0, x1, y1 = o.box
    return x0 >= MARGIN and y0 >= MARGIN and x1 <= CANVAS - 1 - MARGIN and y1 <= CANVAS - 1 - MARGIN


def apart(a: Obj, b: Obj) -> bool:
    """Whether at least MIN_GAP background pixels separate the two boxes along x or along y."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    gap_x = max(bx0 - ax1, ax0 - bx1) - 1  # background columns strictly between the boxes
    gap_y = max(by0 - ay1, ay0 - by1) - 1
    return gap_x >= MIN_GAP or gap_y >= MIN_GAP


def is_valid(scene: Scene) -> bool:
    """Whether the scene obeys the spec: 1..4 objects, inside the canvas, pairwise apart."""
    objs = scene.objects
    if not 1 <= len(objs) <= MAX_OBJECTS:
        return False
    if not all(inside_canvas(o) for o in objs):
        return False
    return all(apart(a, b) for i, a in enumerate(objs) for b in objs[i + 1 :])


# --- rendering ------------------------------------------------------------------------------


def _draw(draw: ImageDraw.ImageDraw, scene: Scene, fill_of) -> None:
    for o in scene.objects:
        fill = fill_of(o)
        if o.shape == "circle":
            draw.ellipse(o.box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(o.box, fill=fill)
        else:  # triangle, apex up
            draw.polygon([(o.cx, o.cy - o.r), (o.cx - o.r, o.cy + o.r), (o.cx + o.r, o.cy + o.r)], fill=fill)


def render(scene: Scene) -> Image.Image:
    """Draw the scene on a 64 x 64 white RGB canvas, exactly as the spec says."""
    image = Image.new("RGB", (CANVAS, CANVAS), BACKGROUND)
    _draw(ImageDraw.Draw(image), scene, lambda o: PALETTE[o.color])
    return image


NUM_LABELS = 1 + len(SHAPES) * len(COLORS)  # background + every (shape, colour)


def object_label(shape: str, color: str) -> int:
    """1 + shape index * number of colours + colour index; 0 is the background."""
    return 1 + SHAPES.index(shape) * len(COLORS) + COLORS.index(color)


def render_labels(scene: Scene) -> np.ndarray:
    """(64, 64) uint8 map of ``object_label`` per pixel, drawn exactly like ``render`` (same pixels)."""
    image = Image.new("L", (CANVAS, CANVAS), 0)
    _draw(ImageDraw.Draw(image), scene, lambda o: object_label(o.shape, o.color))
    return np.asarray(image)


# --- sampling -------------------------------------------------------------------------------


def sample_scene(
    rng: random.Random,
    n_objects: int | None = None,
    shapes: Sequence[str | None] | None = None,
    colors: Sequence[str | None] | None = None,
    max_tries: int = 1000,
) -> Scene:
    """Draw a valid scene by rejection.

    ``shapes`` / ``colors`` give one entry per object (``None`` = random); when given they fix
    the number of objects. Otherwise ``n_objects`` does, or it is drawn uniformly from 1..4.
    Positions and sizes are uniform; a placement that touches another object is redrawn.
    """
    n = n_objects
    for spec in (shapes, colors):
        if spec is not None:
            if n is not None and n != len(spec):
                raise ValueError(f"{len(spec)} shapes/colours given for {n} objects")
            n = len(spec)
    if n is None:
        n = rng.randint(1, MAX_OBJECTS)
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"a scene holds 1..{MAX_OBJECTS} objects, not {n}")
    shapes = list(shapes) if shapes is not None else [None] * n
    colors = list(colors) if colors is not None else [None] * n

    for _ in range(max_tries):
        placed: list[Obj] = []
        for shape, color in zip(shapes, colors):
            r = rng.randint(MIN_HALF_SIZE, MAX_HALF_SIZE)
            lo, hi = MARGIN + r, CANVAS - 1 - MARGIN - r
            obj = Obj(
                shape=shape or rng.choice(SHAPES),
                color=color or rng.choice(COLORS),
                cx=rng.randint(lo, hi),
                cy=rng.randint(lo, hi),
                r=r,
            )
            if not all(apart(obj, p) for p in placed):
                break
            placed.append(obj)
        else:
            return Scene(tuple(placed))
    raise RuntimeError(f"could not place {n} objects in {max_tries} tries")
