"""Pictures of results: mask overlays with a legend, and words drawn at their points."""

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
    word_points: Sequence[tuple[str, float, float]] | None = None,
    prompts: Sequence[dict] | None = None,
) -> Image.Image:
    """Draw each mask (N, H, W bool) in its own colour with an outline, plus a legend.

    The legend lists `labels` (default "target k") by colour; `caption` (e.g. the answer) is
    written beneath the picture. `word_points` (PixelLLM's per-word grounding: (word, x, y)
    in pixels) puts each word as a small label with a dot at its point. `prompts` (SAM4MLLM:
    per mask {"box": [x0, y0, x1, y1], "points": [[x, y, label]]} in pixels) draws each box
    in its mask's colour, inside points as filled dots and outside points as crosses.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    out = base.copy()
    for index, mask in enumerate(masks):
        mask = mask.astype(bool)
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour(index), dtype=np.float32)
        edge = mask & ~_erode(mask)
        out[edge] = colour(index)
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    if word_points:
        draw_word_points(picture, word_points)
    if prompts:
        draw_prompts(picture, prompts)
    labels = list(labels) if labels is not None else [f"target {k + 1}" for k in range(len(masks))]
    return _with_legend(picture, labels, caption)


def draw_word_points(picture: Image.Image, word_points: Sequence[tuple[str, float, float]]) -> None:
    """Draw each (word, x, y) in place: the word as a small white-on-dark label beside its
    point, then a dot at every point on top. Punctuation is left out; a label that would cover
    an earlier one moves down a line; labels stay inside the picture."""
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    shown = [(w, x, y) for w, x, y in word_points if any(c.isalnum() for c in w)]
    taken: list[tuple[int, int, int, int]] = []
    for word, x, y in shown:
        left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
        width, height = right - left + 2, bottom - top + 2
        lx = int(min(max(x + 4, 0), max(picture.width - width, 0)))
        ly = int(min(max(y - height // 2, 0), max(picture.height - height, 0)))
        for _ in range(8):
            if not any(_overlap((lx, ly, lx + width, ly + height), box) for box in taken):
                break
            ly = min(ly + height, max(picture.height - height, 0))
        taken.append((lx, ly, lx + width, ly + height))
        draw.rectangle(taken[-1], fill=(20, 20, 20))
        draw.text((lx + 1 - left, ly + 1 - top), word, fill=(255, 255, 255), font=font)
    for _, x, y in shown:
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(255, 255, 255), outline=(0, 0, 0))


def draw_prompts(picture: Image.Image, prompts: Sequence[dict]) -> None:
    """Draw SAM prompts in place: prompt k's box in `colour(k)`, its inside points as dots and
    its outside points as crosses, outlined in black so they show on any background."""
    draw = ImageDraw.Draw(picture)
    for index, prompt in enumerate(prompts):
        tint = colour(index)
        x0, y0, x1, y1 = prompt["box"]
        draw.rectangle((x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)), outline=tint)
        for x, y, label in prompt.get("points", []):
            if label:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=tint, outline=(0, 0, 0))
            else:
                for dx in (-1, 0, 1):  # a cross, thick enough to see
                    draw.line((x - 3 + dx, y - 3, x + 3 + dx, y + 3), fill=(0, 0, 0))
                    draw.line((x - 3 + dx, y + 3, x + 3 + dx, y - 3), fill=(0, 0, 0))
                draw.line((x - 3, y - 3, x + 3, y + 3), fill=tint)
                draw.line((x - 3, y + 3, x + 3, y - 3), fill=tint)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
