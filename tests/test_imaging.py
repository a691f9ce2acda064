import io

import numpy as np
import pytest
from PIL import Image

from pixelreason import imaging
from pixelreason.errors import InputError
from pixelreason.imaging import load_image


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "I;16", "I", "F", "CMYK"])
def test_every_mode_becomes_rgb_of_same_size(mode: str) -> None:
    image = Image.new(mode, (7, 5))
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (7, 5)


def test_alpha_is_composited_on_white() -> None:
    transparent = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert load_image(transparent).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_rescaled_not_clipped() -> None:
    array = np.full((4, 4), 65535, dtype=np.uint16)
    array[0, 0] = 0
    out = np.asarray(load_image(Image.fromarray(array)))
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 0


def test_arrays_of_other_dtypes() -> None:
    assert load_image(np.ones((3, 3), dtype=np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((3, 3, 4), dtype=np.uint8)).size == (3, 3)
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((3, 3, 2), dtype=np.uint8))
    with pytest.raises(InputError, match="NaN"):
        load_image(np.full((3, 3), np.nan))


def test_file_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(corrupt)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:-40])
    with pytest.raises(InputError):
        load_image(truncated)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(text)


def test_unsupported_format_is_refused() -> None:
    with pytest.raises(InputError, match="unsupported image format"):
        load_image(_png_bytes(Image.new("RGB", (4, 4)), fmt="PPM"))


def test_too_many_pixels_is_refused_before_decoding(monkeypatch) -> None:
    monkeypatch.setattr(imaging, "MAX_PIXELS", 100)
    with pytest.raises(InputError, match="too large"):
        load_image(_png_bytes(Image.new("RGB", (20, 20))))
