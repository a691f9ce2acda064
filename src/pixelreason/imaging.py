"""Loading and validating user images: one place for every entry point (API, CLI, server)."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pixelreason.errors import InputError, InputTooLargeError

#: Refuse images above this many pixels (decompression bombs; 8k x 8k is already generous).
MAX_PIXELS = 64_000_000
#: Refuse files above this many bytes before decoding.
MAX_FILE_BYTES = 64 * 1024 * 1024
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")


def load_image(
    source: str | os.PathLike[str] | bytes | Image.Image | np.ndarray,
    *,
    max_pixels: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    """Open `source` and return it as an 8-bit RGB image, or raise `InputError` saying why not.

    Accepts a path, raw file bytes, a PIL image or an HxW / HxWx3 / HxWx4 array. Alpha is
    composited onto white, grayscale is replicated, 16-bit and float data are rescaled to 8 bits.
    Files are checked against `formats` (default `SUPPORTED_FORMATS`) and `max_pixels`
    (default `MAX_PIXELS`) from their header, before decoding; animated images give their first
    frame.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    formats = SUPPORTED_FORMATS if formats is None else formats
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        image = _open(source, max_pixels, formats)
    if image.width * image.height > max_pixels:
        raise InputTooLargeError(
            f"image is too large: {image.width}x{image.height} pixels (limit {max_pixels:,})"
        )
    if image.width < 1 or image.height < 1:
        raise InputError("image is empty (0 pixels)")
    return to_rgb(image)


def _open(
    source: str | os.PathLike[str] | bytes, max_pixels: int, formats: tuple[str, ...]
) -> Image.Image:
    if isinstance(source, bytes):
        if len(source) > MAX_FILE_BYTES:
            raise InputTooLargeError(f"image file is too large: {len(source):,} bytes")
        name, stream = "image", io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"image not found: {path}")
        if not path.is_file():
            raise InputError(f"not a file: {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputTooLargeError(
                f"image file is too large: {path} ({path.stat().st_size:,} bytes)"
            )
        name, stream = str(path), io.BytesIO(path.read_bytes())
    try:
        # PIL warns (and past 2x raises) on decompression bombs; our own limit is stricter.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            if image.format not in formats:
                raise InputError(
                    f"unsupported image format {image.format} in {name} "
                    f"(accepted: {', '.join(formats)})"
                )
            if image.width * image.height > max_pixels:
                raise InputTooLargeError(
                    f"image is too large: {image.width}x{image.height} pixels "
                    f"(limit {max_pixels:,})"
                )
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InputTooLargeError(f"image is too large to decode safely: {name}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image {name}: not a valid or complete image file") from exc
    return image


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = _rescale_to_uint8(array.astype(np.float64))
    return Image.fromarray(array)


def _rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise InputError("image contains NaN or infinite values")
    top = values.max() if values.size else 0.0
    if top <= 1.0:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0 if top <= 65535 else 255.0 / top
    return np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (RGBA, LA, P, L, 1, I;16, I, F, CMYK, ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _rescale_to_uint8(np.asarray(image, dtype=np.float64))
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
