"""Checks on the text and files users send (typed in the UI or posted through the API).

The limits are the core's (``janusflow_core.limits``); every check here raises its ``InputError``,
which the handlers turn into a refusal (``components.refusals``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from janusflow_core.limits import MAX_MESSAGE_CHARS, InputError
from janusflow_core.processing.image import load_image

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
    """An uploaded file as an RGB image, through the core's loader (which refuses files that are not
    images, truncated images and images above ``limits.MAX_IMAGE_PIXELS``, the last from the header
    alone). Messages name the upload by its file name, never by where the server stored it."""
    return load_image(path, name=Path(path).name)


def check_image_upload(payload: Any) -> Any:
    """An image component's upload, refused with the core loader's words (naming the file by its own name)
    when it is not a readable image or too large; returned unchanged otherwise (``None``: no image)."""
    path = getattr(payload, "path", None)
    if path:
        load_image(path, name=getattr(payload, "orig_name", None) or Path(path).name)
    return payload
