"""Checks on the text and files users send (typed in the UI or posted through the API).

The limits are the core's (``janusflow_core.limits``); every check here raises its ``InputError``,
which the handlers turn into a refusal (``components.refusals``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from janusflow_core.limits import MAX_IMAGE_PIXELS, MAX_MESSAGE_CHARS, InputError
from janusflow_core.processing.image import SUPPORTED_FORMATS, load_image

MAX_UPLOAD = "25mb"  # passed to launch(max_file_size=...): gradio refuses larger uploads itself


def check_text(name: str, text: Any, required: bool = True, hint: str = "") -> str:
    """``text`` stripped; refuses non-text, empty text (when ``required``) and text over MAX_MESSAGE_CHARS."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InputError(f"The {name} must be text, got {type(text).__name__} {text!r:.40}")
    text = text.strip()
    if required and not text:
        raise InputError(f"The {name} is empty.{hint}")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InputError(f"The {name} is {len(text)} characters long; the limit is {MAX_MESSAGE_CHARS}.")
    return text


def open_image(path: str | Path) -> Image.Image:
    """An uploaded file as an RGB image. Refuses files that are not images, truncated images, and images
    with more than MAX_IMAGE_PIXELS pixels (deciding the last from the header alone)."""
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        raise InputError(f"{name} is far larger than the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit.") from None
    except (UnidentifiedImageError, OSError):
        raise InputError(f"{name} is not an image this app can read. Supported: {SUPPORTED_FORMATS}.") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{name} is {width}×{height} pixels ({width * height / 1e6:.0f} MP); the limit is "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP. Please downscale it first.")
    try:
        return load_image(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"{name} could not be read (is it complete?): {exc}") from None
