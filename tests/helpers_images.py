"""Image files that are not what they claim: for the app's refusal tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def huge_png_header(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 PNG whose header claims width x height (Pillow reads the size from the header)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


def truncated_png(path: Path, size: int = 64) -> Path:
    """A PNG cut short: the header is intact, the pixel data is not."""
    whole = io.BytesIO()
    Image.effect_noise((size, size), 64).convert("RGB").save(whole, format="PNG")
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    return path


def text_as_png(path: Path) -> Path:
    """A text file renamed .png."""
    path.write_text("these are notes, not a picture\n")
    return path
