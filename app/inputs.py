"""Checks on what users send (typed in the UI or posted through the API), with messages they can act on.

Every refusal is a ``gr.Error`` without a console traceback (``components.refuse``). The numeric
checks repeat the components' own bounds so that the handlers are safe when called directly.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from janusflow_core.processing.image import SUPPORTED_FORMATS, load_image

from .components import refuse

MAX_PROMPT_CHARS = 1000  # text-to-image prompt
MAX_MESSAGE_CHARS = 4000  # one chat message
MAX_IMAGES_PER_MESSAGE = 4
MAX_IMAGE_PIXELS = 50_000_000  # about 7000 x 7000; the model sees 384 x 384 anyway
MAX_UPLOAD = "25mb"  # passed to launch(max_file_size=...)
MAX_SEED = 2**31 - 1  # seeds stay exact in the browser's numbers


def check_number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float | int:
    """``value`` as a number in [low, high], else a refusal naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise refuse(f"{name} must be a number between {low:g} and {high:g}, got {value!r}") from None
    if math.isnan(number) or not low <= number <= high:
        raise refuse(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    if integer:
        if number != int(number):
            raise refuse(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return number


def check_text(name: str, text: str | None, limit: int, required: bool = True, hint: str = "") -> str:
    text = (text or "").strip()
    if required and not text:
        raise refuse(f"The {name} is empty.{hint}")
    if len(text) > limit:
        raise refuse(f"The {name} is {len(text)} characters long; the limit is {limit}.")
    return text


def open_image(path: str | Path) -> Image.Image:
    """An uploaded file as an RGB image. Refuses files that are not images and images with more than
    MAX_IMAGE_PIXELS pixels, reading only the header before deciding."""
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        raise refuse(f"{name} is far larger than the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit.") from None
    except (UnidentifiedImageError, OSError):
        raise refuse(f"{name} is not an image this app can read. Supported: {SUPPORTED_FORMATS}.") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise refuse(f"{name} is {width}×{height} pixels ({width * height / 1e6:.0f} MP); the limit is "
                     f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP. Please downscale it first.")
    try:
        return load_image(path)
    except (ValueError, OSError) as exc:
        raise refuse(f"{name} could not be read: {exc}") from None
