"""Pictures of results: mask overlays with a legend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Distinct, colour-blind-friendly colours (Okabe-Ito, then extras).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (120, 200, 60),
    (255, 60, 60),
    (150, 90, 255),
)


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def overlay(
    image: Image.Image,
    masks: np.ndarray,
    labels: Sequence[str] | None = None,
    *,
    alpha: float = 0.5,
    caption: str | None = None,
) -> Image.Image:
    """Draw each mask (N, H, W bool) in its own colour with an outline, plus a legend.

    The legend lists `labels` (default "target k") by colour; `caption` (e.g. the answer) is
    written beneath the picture.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    out = base.copy()
    for index, mask in enumerate(masks):
        mask = mask.astype(bool)
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour(index), dtype=np.float32)
        edge = mask & ~_erode(mask)
        out[edge] = colour(index)
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    labels = list(labels) if labels is not None else [f"target {k + 1}" for k in range(len(masks))]
    return _with_legend(picture, labels, caption)


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )


def _with_legend(picture: Image.Image, labels: Sequence[str], caption: str | None) -> Image.Image:
    font = ImageFont.load_default()
    line = 14
    lines = [(label, colour(k)) for k, label in enumerate(labels)]
    if not lines:
        lines = [("no target", (128, 128, 128))]
    caption_lines = _wrap(caption, max(20, picture.width // 7)) if caption else []
    width = max(picture.width, 240)
    height = picture.height + line * (len(lines) + len(caption_lines)) + 8
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + 4
    for text in caption_lines:
        draw.text((4, y), text, fill=(0, 0, 0), font=font)
        y += line
    for text, rgb in lines:
        draw.rectangle((4, y + 2, 14, y + 12), fill=rgb, outline=(0, 0, 0))
        draw.text((20, y), text, fill=(0, 0, 0), font=font)
        y += line
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines[:6]
