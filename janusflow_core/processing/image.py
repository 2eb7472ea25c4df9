"""Image loading and the understanding-path image preprocessing (SPEC 4.4).

`load_image` turns whatever the user hands us (a path, raw bytes, a PIL image, an HWC uint8 array)
into a PIL RGB image. `ImageProcessor` then reproduces the official `VLMImageProcessor` exactly:

1. resize so the longer side becomes ``image_size`` (sizes truncated with ``int``, never below
   ``min_size``), Pillow BICUBIC;
2. pad to a square with background ``int(255 * mean_c)``, the image centred on the short axis;
3. ``uint8 * rescale_factor`` in float64, cast to float32;
4. if ``do_normalize``: ``(x - mean) / std`` per channel in float32.  Output layout (n, 3, S, S).

Mean, std and the normalisation switch are read from the checkpoint's ``preprocessor_config.json``;
the dataclass defaults (mean = std = 0.5, normalised, the SigLIP convention of the sibling DeepSeek
checkpoints) only apply to keys that the file does not contain.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..limits import MAX_IMAGE_PIXELS, InputError

T = TypeVar("T")

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

ImageInput = str | os.PathLike | bytes | bytearray | Image.Image | np.ndarray

# Pillow warns above ~89 M pixels and refuses above ~179 M (decompression bombs). Our own limit is the
# core one, janusflow_core.limits.MAX_IMAGE_PIXELS (50 M, about 7000 x 7000): the size is read from the
# file's header and a larger image is refused before its pixels are decoded. The model sees 384 x 384.
_BOMB_LIMIT_LOCK = threading.Lock()

SUPPORTED_FORMATS = "PNG, JPEG, WEBP, GIF, BMP, TIFF, ICO, PPM/PGM (anything Pillow can read)"


def read_settings_file(path: Path, build: Callable[[dict[str, Any]], T]) -> T:
    """``build(the JSON object in path)``; a missing file, bad JSON or bad values name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the checkpoint folder must contain {path.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object is expected, got {type(data).__name__}")
        return build(data)
    except (UnicodeDecodeError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a valid {path.name}: {exc}") from exc


@dataclass(frozen=True)
class ImageProcessorConfig:
    """Settings of the official image processor (keys as in ``preprocessor_config.json``)."""

    image_size: int = 384
    min_size: int = 14
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    do_normalize: bool = True
    rescale_factor: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_mean", tuple(float(m) for m in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(s) for s in self.image_std))
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(
                f"image_mean and image_std need 3 values (RGB), got {self.image_mean} / {self.image_std}"
            )
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}")
        if self.image_size < 1 or self.min_size < 1:
            raise ValueError(f"image_size and min_size must be >= 1, got {self.image_size}, {self.min_size}")

    @property
    def background_color(self) -> tuple[int, int, int]:
        """Padding colour, derived from the mean as the official processor does (SPEC 6.9)."""
        return tuple(int(255 * m) for m in self.image_mean)  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageProcessorConfig:
        """Build from a ``preprocessor_config.json`` dict; unknown keys (e.g. ``image_processor_type``,
        ``background_color``, which the official code overwrites anyway) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> ImageProcessorConfig:
        return read_settings_file(Path(folder) / PREPROCESSOR_CONFIG_NAME, cls.from_dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        d["image_processor_type"] = "VLMImageProcessor"
        return d


# --------------------------------------------------------------------------------------------------
# Loading


def to_pixel_values(images: np.ndarray, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> float32 (n, 3, S, S), as the image processor computes it for an S-px input."""
    x = torch.from_numpy(images.astype(np.float64) * (1.0 / 255.0)).float()
    return ((x - mean) / std).permute(0, 3, 1, 2).contiguous()


def check_image_size(width: int, height: int, name: str) -> None:
    """Refuse an image above ``limits.MAX_IMAGE_PIXELS`` (or with no pixels), saying what is allowed."""
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{name} is {width} x {height} = {width * height / 1e6:.1f} megapixels; the limit is "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (about 7000 x 7000): downscale it first")
    if width < 1 or height < 1:
        raise InputError(f"{name} is {width} x {height} pixels: an image needs at least one pixel")


def _open_checked(source: Any, name: str) -> Image.Image:
    """Open, check the size from the header, then decode. Pillow's own bomb check is switched off for the
    header read only (under a lock, as it is a process-wide setting): ours is stricter and gives the size."""
    try:
        with _BOMB_LIMIT_LOCK:
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(source)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = previous
        check_image_size(*im.size, name)
        with warnings.catch_warnings():  # Pillow's "Truncated File Read" / "Corrupt EXIF" notes: errors decide
            warnings.simplefilter("ignore", UserWarning)
            im.load()  # single-frame files are read and closed here
        if getattr(im, "n_frames", 1) > 1:  # animations keep their file open: keep frame 0 only
            first = im.copy()
            im.close()
            im = first
        return im
    except UnidentifiedImageError as e:
        raise InputError(f"{name} is not a readable image; supported formats: {SUPPORTED_FORMATS}") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
            ZeroDivisionError, Image.DecompressionBombError) as e:
        if isinstance(e, InputError):
            raise
        # truncated or corrupt data: Pillow raises any of these from its format plugins
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{name} could not be decoded as an image ({detail}): the file is truncated or "
                         "corrupt") from e


def _scale_to_uint8(arr: np.ndarray, lo: float, hi: float) -> Image.Image:
    scaled = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros(arr.shape)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # 2-D uint8 -> "L"


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8-bit, scaled by range rather than clipped.

    Integer data is scaled by its nominal range: ``I;16*`` by 0..65535; mode ``I`` (Pillow opens 16-bit
    PNGs this way) by 0..255 if every value fits, else 0..65535 if it fits, else by its own min..max.
    Float data in [0, 1] is scaled by 0..1, otherwise by its own min..max.
    """
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        return _scale_to_uint8(arr, 0.0, 65535.0)
    if arr.size == 0:
        return Image.new("L", im.size)
    lo, hi = float(arr.min()), float(arr.max())
    if im.mode == "F":
        return _scale_to_uint8(arr, 0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else _scale_to_uint8(arr, lo, hi)
    if lo >= 0 and hi <= 255:
        return _scale_to_uint8(arr, 0.0, 255.0)
    if lo >= 0 and hi <= 65535:
        return _scale_to_uint8(arr, 0.0, 65535.0)
    return _scale_to_uint8(arr, lo, hi)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB. Transparent pixels are composited over white."""
    if im.mode == "RGB":
        return im
    if im.mode == "P" and "transparency" in im.info or im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _high_depth_to_l(im).convert("RGB")
    try:
        return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX, HSV, ...
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot convert an image of mode {im.mode!r} to RGB") from e


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 (H, W) or (H, W, C), got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr))  # "L"
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr))  # "RGB" or "RGBA"
    raise ValueError(f"numpy images must have shape (H, W) or (H, W, 1|3|4), got {arr.shape}")


def load_image(x: ImageInput, *, name: str | None = None) -> Image.Image:
    """Return a PIL RGB image from a path, encoded bytes, a PIL image or an HWC uint8 array.

    Alpha is composited over white; 16-bit and float images are scaled to 8 bits by their range.
    Raises InputError (a ValueError naming the file and the supported formats) for data that is not an
    image, a truncated or corrupt file, or an image above ``limits.MAX_IMAGE_PIXELS``.
    No EXIF rotation is applied, like the official pipeline (``Image.open(...).convert("RGB")``).
    ``name`` is what the messages call the image (default: the path, or what kind of object it is), e.g.
    an upload's own file name rather than where a server stored it.
    """
    if isinstance(x, Image.Image):
        im = x
        check_image_size(*im.size, name or "the given image")
    elif isinstance(x, np.ndarray):
        im = _array_to_pil(x)
        check_image_size(*im.size, name or "the given array")
    elif isinstance(x, (bytes, bytearray)):
        im = _open_checked(io.BytesIO(bytes(x)), name or f"the given image bytes ({len(x)} bytes)")
    elif isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if path.is_dir():
            raise InputError(f"{name or path} is a folder, not an image file")
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {name or path}")
        im = _open_checked(path, name or f"file {str(path)!r}")
    else:
        raise TypeError(f"cannot load an image from {type(x).__name__}; pass a path, bytes, PIL image or numpy array")
    return to_rgb(im)


# --------------------------------------------------------------------------------------------------
# Preprocessing


def resized_size(width: int, height: int, image_size: int, min_size: int) -> tuple[int, int]:
    """(new_w, new_h): longer side -> image_size, with int truncation and a floor of min_size."""
    m = max(width, height)
    return max(int(width / m * image_size), min_size), max(int(height / m * image_size), min_size)


def expand_to_square(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad to a square of side max(w, h), the image centred on its short axis (floor offset)."""
    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    canvas = Image.new(im.mode, (side, side), background)
    canvas.paste(im, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return canvas


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Shorter side resized to ``size`` (bicubic; untouched when it already is), then the middle square: how
    an image reaches the generation resolution (fine-tuning data, image-to-image's init image)."""
    w, h = image.size
    if min(w, h) != size:
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def vae_pixels(image: Image.Image) -> torch.Tensor:
    """An RGB image as the VAE's input: float32 (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


class ImageProcessor:
    """Callable: list of images -> float32 tensor (n, 3, S, S), exactly the official processor."""

    def __init__(self, config: ImageProcessorConfig | None = None) -> None:
        self.config = config or ImageProcessorConfig()
        self._mean = np.asarray(self.config.image_mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(self.config.image_std, dtype=np.float32).reshape(3, 1, 1)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> ImageProcessor:
        return cls(ImageProcessorConfig.from_pretrained(folder))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        (path / PREPROCESSOR_CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def preprocess_one(self, image: ImageInput) -> np.ndarray:
        """One image -> float32 array (3, S, S)."""
        cfg = self.config
        im = load_image(image)
        im = im.resize(resized_size(*im.size, cfg.image_size, cfg.min_size), Image.Resampling.BICUBIC)
        im = expand_to_square(im, cfg.background_color)
        chw = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)  # (3, S', S')
        x = (chw * cfg.rescale_factor).astype(np.float32)  # uint8 * float -> float64, then float32
        if cfg.do_normalize:
            x = (x - self._mean) / self._std  # float32 throughout
        return x

    def __call__(self, images: Sequence[ImageInput]) -> torch.Tensor:
        if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)):
            images = [images]
        s = self.config.image_size
        if len(images) == 0:
            return torch.zeros(0, 3, s, s)
        return torch.from_numpy(np.stack([self.preprocess_one(im) for im in images]))  # (n, 3, S, S)
