"""How images are laid out for the screen: a grid of the batch, enlarged with nearest-neighbour.

Display only: the pixels come from the pipeline's decode; nothing here changes what the model made.
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


def enlarge(image: Image.Image, target: int) -> Image.Image:
    """Scale up by the whole factor that brings the longer side closest to ``target`` without going
    over it (at least 1): 32 px -> 384 px, 64 px -> 384 px, 384 px stays 384 px. Nearest-neighbour,
    so every generated pixel stays a crisp square."""
    factor = max(1, target // max(image.size))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def preview_sheet(images: list[Image.Image], target: int = 384) -> Image.Image:
    """The batch as one sheet, each tile enlarged towards ``target`` px while the sheet's longer side
    stays within 2 x ``target`` (a single 32 px image becomes 384 px; eight become 7x tiles)."""
    sheet = grid(images)
    factor = max(1, min(target // max(images[0].size), 2 * target // max(sheet.size)))
    if factor == 1:
        return sheet
    return sheet.resize((sheet.width * factor, sheet.height * factor), Image.Resampling.NEAREST)
