"""How a batch of images is laid out for the screen: one sheet, tiles side by side.

Display only: the pixels come from the pipeline's decode, unchanged. The sheet stays at the model's
resolution (a 64 px model's preview is a few hundred bytes of PNG); the page enlarges it with
nearest-neighbour scaling (CSS ``image-rendering: pixelated``), so every generated pixel shows as a
crisp square.
"""

from __future__ import annotations

import math

from PIL import Image

GRID_GAP = 1  # pixels between tiles, at native resolution


def grid(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile same-sized images row by row (near-square layout by default) on a white background."""
    if not images:
        raise ValueError("grid needs at least one image")
    n = len(images)
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w + (cols - 1) * GRID_GAP, rows * h + (rows - 1) * GRID_GAP), "white")
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet.paste(im, (c * (w + GRID_GAP), r * (h + GRID_GAP)))
    return sheet

