"""A small drawing surface that renders one object with a pixel-exact mask.

Every primitive is drawn three times: in colour, into a coverage layer (which pixels belong to
the object) and into a body layer (which pixels may carry the object's pattern). PIL's ImageDraw
does not anti-alias, so the coverage layer is exactly the set of coloured pixels; that is what
makes the generated masks exact rather than approximate.

Coordinates are fractions of the object's box: (0, 0) is its top-left pixel, (1, 1) its
bottom-right pixel, so drawing code does not depend on the object's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Point = tuple[float, float]

__all__ = ["RGB", "Canvas", "Point", "apply_pattern", "shade"]


def shade(colour: RGB, factor: float) -> RGB:
    """Darkens (factor < 1) or lightens towards white (factor > 1) a colour."""
    if factor <= 1.0:
        return (int(colour[0] * factor), int(colour[1] * factor), int(colour[2] * factor))
    t = min(factor - 1.0, 1.0)
    return tuple(int(c + (255 - c) * t) for c in colour)  # type: ignore[return-value]


class Canvas:
    """Colour, coverage and body layers of one object, `width` x `height` pixels."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.rgb = Image.new("RGB", (width, height))
        self.cover = Image.new("L", (width, height))
        self.body = Image.new("L", (width, height))
        self._rgb = ImageDraw.Draw(self.rgb)
        self._cover = ImageDraw.Draw(self.cover)
        self._body = ImageDraw.Draw(self.body)

    def _pt(self, x: float, y: float) -> Point:
        return (x * (self.width - 1), y * (self.height - 1))

    def _box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        a, b = self._pt(x0, y0)
        c, d = self._pt(x1, y1)
        return [a, b, max(a, c), max(b, d)]

    def px(self, fraction: float) -> int:
        """A stroke width: `fraction` of the shorter side, at least one pixel."""
        return max(1, round(fraction * min(self.width, self.height)))

    def _shape(self, method: str, coords: list, fill: RGB, body: bool, **kwargs: object) -> None:
        # The outline is a darker shade of the fill: objects keep a visible edge on any
        # background. The body layer leaves the outline out so patterns stay inside it.
        getattr(self._rgb, method)(coords, fill=fill, outline=shade(fill, 0.6), **kwargs)
        getattr(self._cover, method)(coords, fill=255, outline=255, **kwargs)
        getattr(self._body, method)(coords, fill=255 if body else 0, outline=0, **kwargs)

    def ellipse(
        self, x0: float, y0: float, x1: float, y1: float, fill: RGB, body: bool = False
    ) -> None:
        self._shape("ellipse", self._box(x0, y0, x1, y1), fill, body)

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, fill: RGB, body: bool = False
    ) -> None:
        self._shape("rectangle", self._box(x0, y0, x1, y1), fill, body)

    def rounded(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        radius: float,
        fill: RGB,
        body: bool = False,
    ) -> None:
        box = self._box(x0, y0, x1, y1)
        self._shape("rounded_rectangle", box, fill, body, radius=self.px(radius))

    def poly(self, points: Sequence[Point], fill: RGB, body: bool = False) -> None:
        self._shape("polygon", [self._pt(x, y) for x, y in points], fill, body)

    def chord(
        self,
        box: tuple[float, float, float, float],
        start: float,
        end: float,
        fill: RGB,
        body: bool = False,
    ) -> None:
        """Part of an ellipse cut by a chord; degrees, clockwise from 3 o'clock."""
        self._shape("chord", self._box(*box), fill, body, start=start, end=end)

    def line(self, points: Sequence[Point], fill: RGB, width: float) -> None:
        """A stroke `width` (fraction of the shorter side) wide; never patterned."""
        coords = [self._pt(x, y) for x, y in points]
        w = self.px(width)
        self._rgb.line(coords, fill=fill, width=w)
        self._cover.line(coords, fill=255, width=w)
        self._body.line(coords, fill=0, width=w)

    def dots(self, points: Sequence[Point], fill: RGB, radius: float = 0.04) -> None:
        """Small filled discs (seeds, eyes, rivets) of `radius` (fraction of the shorter side)."""
        r = max(0.5, radius * min(self.width, self.height))
        for x, y in points:
            cx, cy = self._pt(x, y)
            box = [cx - r, cy - r, cx + r, cy + r]
            self._rgb.ellipse(box, fill=fill)
            self._cover.ellipse(box, fill=255)
            self._body.ellipse(box, fill=0)

    def hole(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Cuts an elliptical hole (background shows through), keeping a dark rim."""
        box = self._box(x0, y0, x1, y1)
        self._cover.ellipse(box, fill=0)
        self._body.ellipse(box, fill=0)
        # The rim is drawn after the cut so the hole has a visible edge in the image.
        self._rgb.ellipse(box, outline=(40, 40, 40))
        self._cover.ellipse(box, outline=255)

    def layers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb HxWx3 uint8, cover HxW bool, body HxW bool)."""
        return (
            np.asarray(self.rgb, dtype=np.uint8),
            np.asarray(self.cover) > 0,
            np.asarray(self.body) > 0,
        )


def apply_pattern(
    rgb: np.ndarray, body: np.ndarray, pattern: str, colour: RGB, rng: np.random.Generator
) -> np.ndarray:
    """Paints `pattern` over the body pixels of an object.

    Args:
        rgb: HxWx3 uint8 colour layer (modified copy is returned).
        body: HxW bool, pixels that may carry the pattern.
        pattern: "plain", "striped", "dotted" or "checkered".
        colour: the object's main colour; the pattern uses a contrasting shade of it.
    """
    if pattern == "plain" or not body.any():
        return rgb
    h, w = body.shape
    # Period grows with the object so the pattern stays readable on big and small objects.
    period = max(4, min(h, w) // 5)
    yy, xx = np.mgrid[0:h, 0:w]
    offset = int(rng.integers(0, period))
    if pattern == "striped":
        marks = ((yy + offset) // (period // 2)) % 2 == 0
    elif pattern == "dotted":
        half = period // 2
        marks = (((xx + offset) % period) < max(2, half - 1)) & (
            ((yy + half) % period) < max(2, half - 1)
        )
    elif pattern == "checkered":
        marks = (((xx + offset) // (period // 2)) + (yy // (period // 2))) % 2 == 0
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    brightness = sum(colour) / 3
    ink = shade(colour, 0.45) if brightness > 150 else (245, 245, 240)
    out = rgb.copy()
    out[body & marks] = ink
    return out
