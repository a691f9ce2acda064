"""The objects of ReasonWorld: how each is drawn, what it is called, and what is known about it.

Each category is drawn from PIL primitives in a unit box (see `canvas.Canvas`) so that a person
can tell the categories apart by shape, colour and parts. Categories carry knowledge facts
beyond looks ("is rich in vitamin C", "is used to cut paper"); some facts are shared by several
categories, so a knowledge question can have several answers, and some are unique.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pixelreason.data.world.canvas import RGB, Canvas, apply_pattern

__all__ = [
    "CATEGORIES",
    "class_labels",
    "CATEGORY_BY_NAME",
    "COLOURS",
    "FACTS",
    "PATTERN_WORDS",
    "SUPERCATEGORIES",
    "Category",
    "Fact",
    "categories_with_fact",
]

COLOURS: dict[str, RGB] = {
    "red": (205, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (245, 210, 35),
    "green": (55, 160, 60),
    "blue": (45, 90, 205),
    "purple": (130, 55, 170),
    "pink": (240, 125, 180),
    "brown": (125, 75, 35),
    "white": (242, 242, 236),
    "black": (35, 35, 38),
    "grey": (145, 145, 150),
}
# Adjectives used in text for each pattern.
PATTERN_WORDS: dict[str, str] = {
    "plain": "plain",
    "striped": "striped",
    "dotted": "spotted",
    "checkered": "checkered",
}

LEAF: RGB = (50, 135, 45)
STEM: RGB = (105, 70, 30)
WOOD: RGB = (165, 110, 60)
METAL: RGB = (175, 180, 190)
DARK: RGB = (40, 40, 42)
WHITE: RGB = (245, 245, 240)
GLASS: RGB = (200, 228, 240)
SKIN: RGB = (235, 200, 150)

DrawFn = Callable[[Canvas, RGB, np.random.Generator], None]


@dataclass(frozen=True)
class Fact:
    """A piece of knowledge phrased as a predicate for one thing and for several."""

    id: str
    singular: str  # "is rich in vitamin C"
    plural: str  # "are rich in vitamin C"


@dataclass(frozen=True)
class Category:
    """One kind of object.

    Attributes:
        name / plural: nouns used in text ("scissors" is grammatically plural: see plural_noun).
        supercategory: key of `SUPERCATEGORIES`.
        draw: draws the object in a unit box with the given main colour.
        aspect: width / height of the object's box.
        colours: names (keys of COLOURS) the object may have; one entry means the colour is
            implied by the name and is never used as an adjective ("the orange orange").
        patterns: patterns the body may carry.
        facts: ids of `FACTS`.
    """

    name: str
    plural: str
    supercategory: str
    draw: DrawFn
    aspect: float
    colours: tuple[str, ...]
    facts: tuple[str, ...]
    patterns: tuple[str, ...] = ("plain",)
    plural_noun: bool = False

    @property
    def article(self) -> str:
        if self.plural_noun:
            return "a pair of"
        return "an" if self.name[0] in "aeiou" else "a"

    def render(
        self, width: int, height: int, colour: str, pattern: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draws the object into a `width` x `height` box.

        Returns:
            (rgb HxWx3 uint8, mask HxW bool) where mask is exactly the drawn pixels.
        """
        canvas = Canvas(width, height)
        self.draw(canvas, COLOURS[colour], rng)
        rgb, cover, body = canvas.layers()
        return apply_pattern(rgb, body, pattern, COLOURS[colour], rng), cover


# Super-category key -> (singular noun, plural noun) used in text.
SUPERCATEGORIES: dict[str, tuple[str, str]] = {
    "fruit": ("fruit", "fruits"),
    "vegetable": ("vegetable", "vegetables"),
    "food": ("snack", "snacks"),
    "kitchenware": ("kitchen item", "kitchen items"),
    "tool": ("tool", "tools"),
    "stationery": ("school supply", "school supplies"),
    "animal": ("animal", "animals"),
    "clothing": ("thing to wear", "things to wear"),
    "vehicle": ("vehicle", "vehicles"),
    "building": ("building", "buildings"),
    "plant": ("plant", "plants"),
    "electronics": ("electronic device", "electronic devices"),
    "household": ("household item", "household items"),
    "toy": ("toy", "toys"),
    "symbol": ("symbol", "symbols"),
}


# --- drawings -------------------------------------------------------------------------------
# Each function draws in the unit box; later primitives cover earlier ones.


def _orange(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.03, 0.14, 0.97, 0.99, col, body=True)
    c.dots([(0.35, 0.45), (0.6, 0.6), (0.45, 0.78), (0.72, 0.38)], (215, 110, 15), 0.03)
    c.line([(0.5, 0.2), (0.48, 0.04)], STEM, 0.07)
    c.ellipse(0.5, 0.0, 0.85, 0.16, LEAF)


def _apple(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.02, 0.2, 0.62, 0.98, col, body=True)
    c.ellipse(0.38, 0.2, 0.98, 0.98, col, body=True)
    c.ellipse(0.2, 0.35, 0.8, 1.0, col, body=True)
    c.line([(0.5, 0.38), (0.56, 0.02)], STEM, 0.08)
    c.ellipse(0.58, 0.04, 0.9, 0.2, LEAF)


def _banana(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    ts = np.linspace(0.0, 1.0, 11)
    outer = [(0.04 + 0.92 * t, 0.3 + 0.65 * np.sin(np.pi * t)) for t in ts]
    inner = [(0.04 + 0.92 * t, 0.22 + 0.3 * np.sin(np.pi * t)) for t in ts[::-1]]
    c.poly(outer + inner, col, body=True)
    c.ellipse(0.0, 0.18, 0.09, 0.34, STEM)
    c.ellipse(0.91, 0.18, 1.0, 0.34, STEM)


def _lemon(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.0, 0.5), (0.14, 0.32), (0.14, 0.68)], col)
    c.poly([(1.0, 0.5), (0.86, 0.32), (0.86, 0.68)], col)
    c.ellipse(0.08, 0.05, 0.92, 0.95, col, body=True)
    c.dots([(0.4, 0.35), (0.6, 0.55), (0.35, 0.65)], (220, 185, 20), 0.03)


def _strawberry(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.02, 0.14, 0.98, 0.6, col)
    c.poly([(0.06, 0.42), (0.94, 0.42), (0.5, 0.99)], col)
    seeds = [(0.25, 0.35), (0.5, 0.3), (0.75, 0.35), (0.35, 0.55), (0.65, 0.55), (0.5, 0.75)]
    c.dots(seeds, (250, 230, 120), 0.035)
    c.poly([(0.15, 0.2), (0.32, 0.02), (0.5, 0.16), (0.68, 0.02), (0.85, 0.2), (0.5, 0.3)], LEAF)


def _cherry(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.24, 0.62), (0.62, 0.05)], STEM, 0.06)
    c.line([(0.74, 0.56), (0.62, 0.05)], STEM, 0.06)
    c.ellipse(0.0, 0.56, 0.46, 1.0, col)
    c.ellipse(0.52, 0.5, 0.98, 0.94, col)
    c.ellipse(0.62, 0.0, 0.95, 0.16, LEAF)


def _watermelon(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.chord((0.0, -1.0, 1.0, 1.0), 0, 180, (40, 110, 40))
    c.chord((0.07, -0.86, 0.93, 0.86), 0, 180, (235, 70, 80))
    c.dots([(0.3, 0.25), (0.5, 0.45), (0.7, 0.25), (0.42, 0.15), (0.58, 0.15)], DARK, 0.04)


def _broccoli(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.4, 0.5), (0.6, 0.5), (0.68, 1.0), (0.32, 1.0)], (150, 200, 100))
    for x0, y0 in [(0.0, 0.2), (0.3, 0.02), (0.55, 0.18), (0.18, 0.32), (0.45, 0.3)]:
        c.ellipse(x0, y0, x0 + 0.45, y0 + 0.38, col)


def _carrot(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    for x in (0.25, 0.5, 0.75):
        c.line([(0.5, 0.3), (x, 0.0)], LEAF, 0.16)
    c.poly([(0.12, 0.25), (0.88, 0.25), (0.5, 1.0)], col)
    c.line([(0.3, 0.45), (0.45, 0.45)], (190, 90, 10), 0.06)
    c.line([(0.55, 0.62), (0.66, 0.62)], (190, 90, 10), 0.06)


def _potato(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.12, 0.7, 0.92, col)
    c.ellipse(0.3, 0.05, 1.0, 0.85, col)
    c.dots([(0.25, 0.45), (0.55, 0.35), (0.7, 0.6), (0.4, 0.7)], (120, 85, 45), 0.04)


def _mushroom(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.34, 0.42, 0.66, 1.0, (238, 228, 205))
    c.chord((0.0, 0.0, 1.0, 0.95), 180, 360, col)
    c.dots([(0.3, 0.22), (0.55, 0.12), (0.72, 0.3)], WHITE, 0.07)


def _cheese(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.0, 0.5), (1.0, 0.25), (1.0, 0.98), (0.0, 0.98)], col)
    c.poly([(0.0, 0.5), (1.0, 0.25), (0.75, 0.05)], (252, 235, 140))
    c.dots([(0.25, 0.72), (0.6, 0.6), (0.8, 0.82), (0.45, 0.86)], (200, 160, 20), 0.07)


def _pizza(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.02, 0.08), (0.98, 0.08), (0.5, 1.0)], (250, 205, 80))
    c.rounded(0.0, 0.0, 1.0, 0.18, 0.08, (195, 130, 55))
    c.dots([(0.3, 0.32), (0.65, 0.35), (0.5, 0.6)], (190, 40, 35), 0.1)


def _ice_cream(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.15, 0.45), (0.85, 0.45), (0.5, 1.0)], (215, 170, 100))
    c.line([(0.3, 0.5), (0.55, 0.85)], (170, 120, 60), 0.05)
    c.line([(0.7, 0.5), (0.45, 0.85)], (170, 120, 60), 0.05)
    c.ellipse(0.05, 0.0, 0.95, 0.6, col)


def _donut(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.0, 1.0, 1.0, (215, 160, 90))
    c.ellipse(0.08, 0.08, 0.92, 0.9, col)
    for x, y in [(0.25, 0.3), (0.7, 0.25), (0.75, 0.7), (0.3, 0.72), (0.5, 0.15)]:
        c.line([(x, y), (x + 0.06, y + 0.04)], (60, 170, 230), 0.05)
    c.hole(0.36, 0.36, 0.64, 0.64)


def _bread(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.05, 1.0, 0.75, col)
    c.rect(0.0, 0.4, 1.0, 1.0, col)
    for x in (0.25, 0.5, 0.75):
        c.line([(x - 0.06, 0.35), (x + 0.06, 0.18)], shade_brown(col), 0.08)


def shade_brown(col: RGB) -> RGB:
    return (int(col[0] * 0.7), int(col[1] * 0.6), int(col[2] * 0.5))


def _mug(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.5, 0.25, 1.0, 0.8, col)
    c.hole(0.64, 0.4, 0.88, 0.66)
    c.rect(0.0, 0.08, 0.72, 1.0, col, body=True)
    c.rect(0.0, 0.08, 0.72, 0.14, shade_brown(col))


def _cup(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.62, 0.28, 0.95, 0.62, col)
    c.hole(0.71, 0.37, 0.86, 0.53)
    c.poly([(0.1, 0.18), (0.8, 0.18), (0.68, 0.84), (0.22, 0.84)], col, body=True)
    c.ellipse(0.0, 0.78, 1.0, 1.0, WHITE)


def _teapot(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.32, 0.3, 0.82, col)
    c.hole(0.08, 0.44, 0.22, 0.7)
    c.poly([(0.75, 0.6), (1.0, 0.22), (1.0, 0.32), (0.8, 0.82)], col)
    c.ellipse(0.15, 0.25, 0.85, 1.0, col, body=True)
    c.chord((0.3, 0.12, 0.7, 0.42), 180, 360, shade_brown(col))
    c.ellipse(0.44, 0.02, 0.56, 0.16, shade_brown(col))


def _bottle(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.36, 0.04, 0.64, 0.24, col)
    c.rect(0.33, 0.0, 0.67, 0.08, (200, 40, 40))
    c.poly([(0.05, 0.38), (0.95, 0.38), (0.64, 0.2), (0.36, 0.2)], col)
    c.rounded(0.05, 0.34, 0.95, 1.0, 0.15, col)
    c.rect(0.05, 0.55, 0.95, 0.78, WHITE)


def _wine_glass(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.45, 0.45, 0.55, 0.92, GLASS)
    c.ellipse(0.15, 0.86, 0.85, 1.0, GLASS)
    c.chord((0.05, -0.5, 0.95, 0.55), 0, 180, GLASS)
    c.chord((0.12, -0.2, 0.88, 0.47), 0, 180, (150, 20, 50))


def _knife(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.0, 0.2), (0.62, 0.15), (0.62, 0.72), (0.12, 0.72)], METAL)
    c.rounded(0.58, 0.25, 1.0, 0.75, 0.25, col)
    c.dots([(0.72, 0.5), (0.88, 0.5)], METAL, 0.08)


def _scissors(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.3, 0.3), (1.0, 0.62)], METAL, 0.16)
    c.line([(0.3, 0.7), (1.0, 0.38)], METAL, 0.16)
    c.ellipse(0.0, 0.0, 0.38, 0.46, col)
    c.hole(0.08, 0.1, 0.3, 0.36)
    c.ellipse(0.0, 0.54, 0.38, 1.0, col)
    c.hole(0.08, 0.64, 0.3, 0.9)
    c.dots([(0.64, 0.5)], DARK, 0.08)


def _pencil(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.12, 0.15, 0.86, 0.85, col)
    c.line([(0.12, 0.5), (0.86, 0.5)], shade_brown(col), 0.12)
    c.poly([(0.86, 0.15), (1.0, 0.5), (0.86, 0.85)], SKIN)
    c.poly([(0.95, 0.38), (1.0, 0.5), (0.95, 0.62)], DARK)
    c.rect(0.0, 0.15, 0.08, 0.85, (240, 140, 160))
    c.rect(0.07, 0.15, 0.13, 0.85, METAL)


def _book(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.78, 0.04, 1.0, 0.96, WHITE)
    c.rect(0.0, 0.0, 0.88, 1.0, col, body=True)
    c.rect(0.0, 0.0, 0.12, 1.0, shade_brown(col))
    c.rect(0.28, 0.18, 0.72, 0.34, WHITE)


def _hammer(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.4, 0.2, 0.6, 1.0, col)
    c.poly([(0.0, 0.0), (0.75, 0.0), (1.0, 0.12), (0.75, 0.28), (0.0, 0.28)], (95, 95, 105))


def _screwdriver(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.4, 0.42, 0.94, 0.58, METAL)
    c.rect(0.92, 0.36, 1.0, 0.64, METAL)
    c.rounded(0.0, 0.15, 0.44, 0.85, 0.3, col)
    c.line([(0.08, 0.5), (0.36, 0.5)], shade_brown(col), 0.1)


def _key(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.36, 0.4, 1.0, 0.6, col)
    c.rect(0.7, 0.58, 0.78, 0.85, col)
    c.rect(0.86, 0.58, 0.94, 0.75, col)
    c.ellipse(0.0, 0.05, 0.42, 0.95, col)
    c.hole(0.1, 0.35, 0.26, 0.65)


def _fish(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.7, 0.5), (1.0, 0.08), (1.0, 0.92)], col)
    c.poly([(0.35, 0.2), (0.5, 0.0), (0.65, 0.22)], col)
    c.ellipse(0.0, 0.12, 0.82, 0.88, col, body=True)
    c.dots([(0.2, 0.42)], WHITE, 0.1)
    c.dots([(0.21, 0.42)], DARK, 0.05)


def _bird(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.4, 0.85), (0.38, 1.0)], (230, 140, 30), 0.05)
    c.line([(0.55, 0.85), (0.57, 1.0)], (230, 140, 30), 0.05)
    c.poly([(0.25, 0.55), (0.0, 0.42), (0.0, 0.72)], col)
    c.ellipse(0.12, 0.35, 0.8, 0.92, col, body=True)
    c.ellipse(0.55, 0.08, 0.92, 0.5, col)
    c.poly([(0.9, 0.22), (1.0, 0.3), (0.9, 0.38)], (240, 150, 30))
    c.ellipse(0.22, 0.5, 0.6, 0.78, shade_brown(col))
    c.dots([(0.76, 0.24)], DARK, 0.05)


def _cat(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.05, 0.5), (0.12, 0.0), (0.45, 0.25)], col)
    c.poly([(0.95, 0.5), (0.88, 0.0), (0.55, 0.25)], col)
    c.ellipse(0.02, 0.18, 0.98, 1.0, col, body=True)
    c.ellipse(0.22, 0.42, 0.42, 0.62, (150, 210, 90))
    c.ellipse(0.58, 0.42, 0.78, 0.62, (150, 210, 90))
    c.dots([(0.32, 0.52), (0.68, 0.52)], DARK, 0.04)
    c.poly([(0.44, 0.68), (0.56, 0.68), (0.5, 0.76)], (240, 130, 160))
    for y in (0.74, 0.82):
        c.line([(0.08, y), (0.36, 0.76)], DARK, 0.02)
        c.line([(0.92, y), (0.64, 0.76)], DARK, 0.02)


def _butterfly(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.48, 0.12), (0.38, 0.0)], DARK, 0.03)
    c.line([(0.52, 0.12), (0.62, 0.0)], DARK, 0.03)
    light = tuple(min(255, int(v * 0.6 + 100)) for v in col)
    c.ellipse(0.06, 0.45, 0.5, 0.95, light)  # type: ignore[arg-type]
    c.ellipse(0.5, 0.45, 0.94, 0.95, light)  # type: ignore[arg-type]
    c.ellipse(0.0, 0.05, 0.5, 0.6, col, body=True)
    c.ellipse(0.5, 0.05, 1.0, 0.6, col, body=True)
    c.ellipse(0.44, 0.1, 0.56, 0.92, DARK)


def _shoe(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    upper = [(0.0, 0.85), (0.0, 0.15), (0.35, 0.15), (0.45, 0.45), (0.85, 0.55), (1.0, 0.72)]
    c.poly(upper + [(1.0, 0.85)], col, body=True)
    c.rect(0.0, 0.82, 1.0, 1.0, WHITE if sum(col) < 600 else DARK)
    for x in (0.42, 0.52, 0.62):
        c.line([(x, 0.45), (x + 0.06, 0.58)], WHITE, 0.05)


def _hat(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.72, 1.0, 1.0, col)
    c.rounded(0.2, 0.05, 0.8, 0.86, 0.1, col, body=True)
    c.rect(0.2, 0.6, 0.8, 0.72, (200, 40, 40) if col != (205, 35, 35) else DARK)


def _sock(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    sock = [(0.15, 0.0), (0.6, 0.0), (0.6, 0.55), (0.95, 0.66), (1.0, 0.85), (0.9, 1.0)]
    c.poly(sock + [(0.3, 1.0), (0.15, 0.82)], col, body=True)
    c.rect(0.15, 0.0, 0.6, 0.12, WHITE)
    c.poly([(0.88, 0.68), (1.0, 0.85), (0.9, 1.0), (0.82, 1.0)], shade_brown(col))


def _glasses(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.38, 0.35), (0.62, 0.35)], col, 0.12)
    c.ellipse(0.0, 0.1, 0.42, 0.9, col)
    c.ellipse(0.58, 0.1, 1.0, 0.9, col)
    c.ellipse(0.06, 0.22, 0.36, 0.78, GLASS)
    c.ellipse(0.64, 0.22, 0.94, 0.78, GLASS)


def _car(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.poly([(0.2, 0.42), (0.3, 0.08), (0.7, 0.08), (0.84, 0.42)], col)
    c.poly([(0.3, 0.38), (0.36, 0.15), (0.49, 0.15), (0.49, 0.38)], GLASS)
    c.poly([(0.53, 0.38), (0.53, 0.15), (0.66, 0.15), (0.75, 0.38)], GLASS)
    c.rounded(0.0, 0.38, 1.0, 0.8, 0.1, col, body=True)
    for x in (0.1, 0.64):
        c.ellipse(x, 0.6, x + 0.26, 1.0, DARK)
        c.ellipse(x + 0.08, 0.72, x + 0.18, 0.88, METAL)


def _boat(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.47, 0.04, 0.52, 0.68, WOOD)
    c.poly([(0.55, 0.04), (0.55, 0.62), (0.92, 0.62)], WHITE)
    c.poly([(0.44, 0.12), (0.44, 0.6), (0.12, 0.6)], WHITE)
    c.poly([(0.0, 0.66), (1.0, 0.66), (0.82, 1.0), (0.18, 1.0)], col, body=True)


def _house(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.1, 0.45, 0.9, 1.0, col, body=True)
    c.poly([(0.0, 0.5), (0.5, 0.0), (1.0, 0.5)], (170, 50, 40))
    c.rect(0.42, 0.7, 0.6, 1.0, WOOD)
    c.rect(0.18, 0.58, 0.34, 0.74, GLASS)
    c.rect(0.68, 0.58, 0.84, 0.74, GLASS)


def _tree(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.4, 0.5, 0.6, 1.0, STEM)
    c.ellipse(0.0, 0.15, 0.6, 0.7, col)
    c.ellipse(0.4, 0.15, 1.0, 0.7, col)
    c.ellipse(0.15, 0.0, 0.85, 0.5, col)


def _plant(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    for tip in [(0.08, 0.15), (0.3, 0.0), (0.55, 0.02), (0.85, 0.12)]:
        mid = ((tip[0] + 0.5) / 2, (tip[1] + 0.6) / 2)
        c.poly([(0.5, 0.62), (mid[0] - 0.1, mid[1]), tip, (mid[0] + 0.1, mid[1])], LEAF)
    c.poly([(0.18, 0.58), (0.82, 0.58), (0.7, 1.0), (0.3, 1.0)], col, body=True)
    c.rect(0.14, 0.55, 0.86, 0.66, col)


def _flower(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.5, 0.45), (0.5, 1.0)], LEAF, 0.1)
    c.ellipse(0.5, 0.68, 0.85, 0.82, LEAF)
    for k in range(6):
        angle = k * np.pi / 3
        x, y = 0.5 + 0.26 * np.cos(angle), 0.3 + 0.22 * np.sin(angle)
        c.ellipse(x - 0.2, y - 0.15, x + 0.2, y + 0.15, col)
    c.ellipse(0.36, 0.2, 0.64, 0.4, (250, 200, 40) if col != COLOURS["yellow"] else STEM)


def _leaf(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.0, 0.6), (0.2, 0.5)], STEM, 0.08)
    c.poly([(0.15, 0.5), (0.4, 0.12), (0.75, 0.05), (1.0, 0.45), (0.75, 0.9), (0.4, 0.88)], col)
    c.line([(0.18, 0.5), (0.95, 0.46)], shade_brown(col), 0.04)


def _lamp(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.45, 0.38, 0.55, 0.9, METAL)
    c.ellipse(0.15, 0.86, 0.85, 1.0, DARK)
    c.poly([(0.25, 0.0), (0.75, 0.0), (0.98, 0.42), (0.02, 0.42)], col, body=True)


def _light_bulb(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.3, 0.62, 0.7, 0.92, METAL)
    for y in (0.7, 0.8):
        c.line([(0.3, y), (0.7, y)], (120, 120, 130), 0.05)
    c.ellipse(0.4, 0.88, 0.6, 1.0, DARK)
    c.ellipse(0.02, 0.0, 0.98, 0.7, col)
    c.line([(0.4, 0.55), (0.45, 0.35), (0.55, 0.35), (0.6, 0.55)], (200, 140, 40), 0.04)


def _candle(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.5, 0.36), (0.5, 0.24)], DARK, 0.1)
    c.poly([(0.5, 0.0), (0.68, 0.2), (0.5, 0.3), (0.32, 0.2)], (250, 170, 30))
    c.rect(0.22, 0.34, 0.78, 1.0, col, body=True)
    c.ellipse(0.22, 0.3, 0.78, 0.4, col)


def _phone(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rounded(0.0, 0.0, 1.0, 1.0, 0.15, col)
    c.rect(0.1, 0.08, 0.9, 0.84, (35, 60, 115))
    c.dots([(0.3, 0.25), (0.7, 0.25), (0.3, 0.5), (0.7, 0.5)], (120, 200, 240), 0.08)
    c.dots([(0.5, 0.92)], METAL, 0.07)


def _battery(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.88, 0.3, 1.0, 0.7, METAL)
    c.rect(0.0, 0.0, 0.9, 1.0, DARK)
    c.rect(0.55, 0.0, 0.9, 1.0, col)
    c.line([(0.66, 0.5), (0.8, 0.5)], WHITE, 0.1)
    c.line([(0.73, 0.36), (0.73, 0.64)], WHITE, 0.1)


def _clock(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.0, 1.0, 1.0, col)
    c.ellipse(0.1, 0.1, 0.9, 0.9, WHITE)
    hour = float(rng.uniform(0, 2 * np.pi))
    c.line([(0.5, 0.5), (0.5 + 0.22 * np.cos(hour), 0.5 + 0.22 * np.sin(hour))], DARK, 0.07)
    c.line([(0.5, 0.5), (0.5, 0.16)], DARK, 0.05)
    c.dots([(0.5, 0.15), (0.85, 0.5), (0.5, 0.85), (0.15, 0.5)], DARK, 0.03)


def _umbrella(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.5, 0.4), (0.5, 0.9)], DARK, 0.06)
    c.chord((0.44, 0.78, 0.72, 1.0), 0, 180, DARK)
    c.chord((0.0, 0.0, 1.0, 1.0), 180, 360, col, body=True)
    for x in (0.25, 0.5, 0.75):
        c.line([(0.5, 0.02), (x, 0.48)], shade_brown(col), 0.03)


def _trash_can(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.rect(0.4, 0.0, 0.6, 0.08, DARK)
    c.poly([(0.08, 0.14), (0.92, 0.14), (0.8, 1.0), (0.2, 1.0)], col, body=True)
    for x in (0.35, 0.5, 0.65):
        c.line([(x, 0.3), (x, 0.88)], shade_brown(col), 0.06)
    c.rect(0.02, 0.05, 0.98, 0.17, shade_brown(col))


def _ball(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.0, 1.0, 1.0, col, body=True)
    c.ellipse(0.2, 0.15, 0.38, 0.3, (250, 250, 250))


def _balloon(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.line([(0.5, 0.76), (0.42, 0.88), (0.56, 1.0)], DARK, 0.03)
    c.poly([(0.5, 0.7), (0.58, 0.8), (0.42, 0.8)], col)
    c.ellipse(0.05, 0.0, 0.95, 0.76, col)
    c.ellipse(0.22, 0.12, 0.36, 0.3, WHITE)


def _star(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    points = []
    for k in range(10):
        radius = 0.5 if k % 2 == 0 else 0.2
        angle = -np.pi / 2 + k * np.pi / 5
        points.append((0.5 + radius * np.cos(angle), 0.53 + radius * np.sin(angle)))
    c.poly(points, col)


def _heart(c: Canvas, col: RGB, rng: np.random.Generator) -> None:
    c.ellipse(0.0, 0.0, 0.55, 0.55, col)
    c.ellipse(0.45, 0.0, 1.0, 0.55, col)
    c.poly([(0.03, 0.38), (0.97, 0.38), (0.5, 1.0)], col)


# --- knowledge --------------------------------------------------------------------------------

_FACT_TABLE: list[tuple[str, str, str]] = [
    ("vitamin_c", "is rich in vitamin C", "are rich in vitamin C"),
    ("grows_on_trees", "grows on trees", "grow on trees"),
    ("peeled", "is peeled before eating", "are peeled before eating"),
    ("sour", "tastes very sour", "taste very sour"),
    ("doctor_away", "is said to keep the doctor away", "are said to keep the doctor away"),
    ("monkeys", "is a favourite food of monkeys", "are a favourite food of monkeys"),
    ("potassium", "is rich in potassium", "are rich in potassium"),
    ("red_when_ripe", "turns red when ripe", "turn red when ripe"),
    ("mostly_water", "is mostly water inside", "are mostly water inside"),
    ("seeds_outside", "has its seeds on the outside", "have their seeds on the outside"),
    ("cake_topping", "is often put on top of a cake", "are often put on top of cakes"),
    ("pie", "is baked into a pie", "are baked into pies"),
    ("colour_name", "shares its name with a colour", "share their name with a colour"),
    ("lemonade", "is squeezed to make lemonade", "are squeezed to make lemonade"),
    ("picnic", "is eaten at summer picnics", "are eaten at summer picnics"),
    ("underground", "grows underground", "grow underground"),
    ("rabbits", "is a favourite food of rabbits", "are a favourite food of rabbits"),
    ("eyesight", "is said to be good for your eyes", "are said to be good for your eyes"),
    ("tiny_tree", "looks like a tiny tree", "look like tiny trees"),
    ("side_dish", "is often steamed as a side dish", "are often steamed as a side dish"),
    ("fries", "is used to make french fries", "are used to make french fries"),
    ("fungus", "is a fungus", "are fungi"),
    ("forest_floor", "grows on the forest floor", "grow on the forest floor"),
    ("pizza_topping", "is a common pizza topping", "are common pizza toppings"),
    ("from_milk", "is made from milk", "are made from milk"),
    ("mice", "is loved by mice in cartoons", "are loved by mice in cartoons"),
    ("holes", "has holes in it", "have holes in them"),
    ("italy", "was first made in Italy", "were first made in Italy"),
    ("oven", "is baked in an oven", "are baked in an oven"),
    ("slices", "is cut into slices to share", "are cut into slices to share"),
    ("freezer", "must be kept in a freezer", "must be kept in a freezer"),
    ("melts", "melts when it gets warm", "melt when they get warm"),
    ("sweet", "tastes sweet", "taste sweet"),
    ("fried", "is fried in hot oil", "are fried in hot oil"),
    ("sandwich", "is used to make sandwiches", "are used to make sandwiches"),
    ("toaster", "goes into a toaster", "go into a toaster"),
    ("hot_drinks", "holds hot drinks", "hold hot drinks"),
    ("coffee", "holds your morning coffee", "hold your morning coffee"),
    ("tea", "is used to serve tea", "are used to serve tea"),
    ("dishwasher", "goes in the dishwasher", "go in the dishwasher"),
    ("saucer", "sits on a saucer", "sit on saucers"),
    ("spout", "pours through a spout", "pour through spouts"),
    ("lid", "has a lid", "have lids"),
    ("holds_water", "can hold water", "can hold water"),
    ("glass", "is made of glass", "are made of glass"),
    ("bottle_cap", "is sealed with a cap", "are sealed with caps"),
    ("wine", "is used for drinking wine", "are used for drinking wine"),
    ("fragile", "breaks easily if dropped", "break easily if dropped"),
    ("cutting", "is used for cutting", "are used for cutting"),
    ("cut_paper", "is used to cut paper", "are used to cut paper"),
    ("cut_bread", "is used to slice bread", "are used to slice bread"),
    ("sharp", "has a sharp edge", "have sharp edges"),
    ("metal", "is made of metal", "are made of metal"),
    ("sharpened", "has to be sharpened now and then", "have to be sharpened now and then"),
    ("carpenter", "is used by a carpenter", "are used by carpenters"),
    ("nails", "is used to drive nails", "are used to drive nails"),
    ("screws", "is used to turn screws", "are used to turn screws"),
    ("toolbox", "belongs in a toolbox", "belong in a toolbox"),
    ("writing", "is used for writing and drawing", "are used for writing and drawing"),
    ("school_bag", "is carried in a school bag", "are carried in a school bag"),
    ("from_trees", "is made from trees", "are made from trees"),
    ("read", "is read for stories", "are read for stories"),
    ("library", "can be borrowed from a library", "can be borrowed from a library"),
    ("pages", "has many pages", "have many pages"),
    ("unlock", "opens a lock", "open locks"),
    ("keychain", "hangs on a keychain", "hang on a keychain"),
    ("pocket", "fits in a pocket", "fit in a pocket"),
    ("lives_in_water", "lives in water", "live in water"),
    ("gills", "breathes through gills", "breathe through gills"),
    ("scales", "is covered in scales", "are covered in scales"),
    ("can_fly", "can fly", "can fly"),
    ("feathers", "has feathers", "have feathers"),
    ("nest", "builds a nest", "build nests"),
    ("pet", "is a popular pet", "are popular pets"),
    ("purrs", "purrs when it is happy", "purr when they are happy"),
    ("chases_mice", "chases mice", "chase mice"),
    ("whiskers", "has whiskers", "have whiskers"),
    ("nectar", "drinks nectar from flowers", "drink nectar from flowers"),
    ("caterpillar", "grows from a caterpillar", "grow from caterpillars"),
    ("feet", "is worn on the feet", "are worn on the feet"),
    ("head", "is worn on the head", "are worn on the head"),
    ("warm", "keeps you warm in winter", "keep you warm in winter"),
    ("laces", "is tied with laces", "are tied with laces"),
    ("pairs", "usually comes in pairs", "usually come in pairs"),
    ("sun_hat", "protects your head from the sun", "protect your head from the sun"),
    ("see", "helps people see clearly", "help people see clearly"),
    ("face", "is worn on the face", "are worn on the face"),
    ("folds", "folds up when it is not in use", "fold up when they are not in use"),
    ("wheels", "has four wheels", "have four wheels"),
    ("petrol", "runs on petrol", "run on petrol"),
    ("transport", "carries people from place to place", "carry people from place to place"),
    ("garage", "is parked in a garage", "are parked in a garage"),
    ("floats", "floats on water", "float on water"),
    ("wind", "is pushed along by the wind", "are pushed along by the wind"),
    ("family_home", "is where a family lives", "are where families live"),
    ("roof", "has a roof and a front door", "have roofs and front doors"),
    ("builders", "is built by builders", "are built by builders"),
    ("sunlight", "makes food from sunlight", "make food from sunlight"),
    ("watering", "needs to be watered", "need to be watered"),
    ("shade", "gives shade on a sunny day", "give shade on a sunny day"),
    ("gives_wood", "gives us wood", "give us wood"),
    ("indoors", "grows in a pot indoors", "grow in pots indoors"),
    ("bees", "attracts bees", "attract bees"),
    ("bouquet", "is given in a bouquet", "are given in bouquets"),
    ("autumn", "falls to the ground in autumn", "fall to the ground in autumn"),
    ("branch", "grows on a branch", "grow on branches"),
    ("light", "gives light in the dark", "give light in the dark"),
    ("electricity", "needs electricity", "need electricity"),
    ("bedside", "stands on a bedside table", "stand on a bedside table"),
    ("idea", "is a symbol of a bright idea", "are symbols of bright ideas"),
    ("match", "is lit with a match", "are lit with matches"),
    ("birthday", "is put on a birthday cake", "are put on birthday cakes"),
    ("calls", "is used to call people", "are used to call people"),
    ("charge", "has to be charged every day", "have to be charged every day"),
    ("alarm", "can wake you up in the morning", "can wake you up in the morning"),
    ("stores_power", "stores electricity", "store electricity"),
    ("remote", "powers a remote control", "power remote controls"),
    ("time", "tells the time", "tell the time"),
    ("wall", "hangs on a wall", "hang on walls"),
    ("rain", "keeps you dry in the rain", "keep you dry in the rain"),
    ("rubbish", "is where rubbish goes", "are where rubbish goes"),
    ("leftovers", "is where leftovers go after a meal", "are where leftovers go after a meal"),
    ("football", "is kicked in a football game", "are kicked in football games"),
    ("bounces", "bounces when dropped", "bounce when dropped"),
    ("air", "is filled with air", "are filled with air"),
    ("party", "decorates a birthday party", "decorate birthday parties"),
    ("pops", "pops when poked with a pin", "pop when poked with a pin"),
    ("night_sky", "shines in the night sky", "shine in the night sky"),
    ("five_points", "has five points", "have five points"),
    ("christmas", "goes on top of a christmas tree", "go on top of christmas trees"),
    ("love", "is a symbol of love", "are symbols of love"),
    ("valentine", "is drawn on valentine cards", "are drawn on valentine cards"),
    ("beats", "beats inside your chest", "beat inside your chest"),
]
FACTS: dict[str, Fact] = {fid: Fact(fid, one, many) for fid, one, many in _FACT_TABLE}

_C = Category
CATEGORIES: tuple[Category, ...] = (
    _C("orange", "oranges", "fruit", _orange, 0.95, ("orange",),
       ("vitamin_c", "grows_on_trees", "peeled", "colour_name")),
    _C("apple", "apples", "fruit", _apple, 0.95, ("red", "green", "yellow"),
       ("grows_on_trees", "doctor_away", "pie")),
    _C("banana", "bananas", "fruit", _banana, 1.9, ("yellow", "green"),
       ("peeled", "monkeys", "potassium")),
    _C("lemon", "lemons", "fruit", _lemon, 1.35, ("yellow",),
       ("vitamin_c", "sour", "grows_on_trees", "lemonade")),
    _C("strawberry", "strawberries", "fruit", _strawberry, 0.85, ("red",),
       ("vitamin_c", "red_when_ripe", "seeds_outside", "cake_topping")),
    _C("cherry", "cherries", "fruit", _cherry, 1.0, ("red",),
       ("red_when_ripe", "grows_on_trees", "cake_topping", "pie")),
    _C("watermelon slice", "watermelon slices", "fruit", _watermelon, 1.7, ("green",),
       ("mostly_water", "sweet", "picnic", "slices")),
    _C("broccoli", "heads of broccoli", "vegetable", _broccoli, 0.9, ("green",),
       ("vitamin_c", "tiny_tree", "side_dish")),
    _C("carrot", "carrots", "vegetable", _carrot, 0.45, ("orange",),
       ("underground", "rabbits", "eyesight", "side_dish")),
    _C("potato", "potatoes", "vegetable", _potato, 1.4, ("brown",),
       ("underground", "peeled", "potassium", "fries", "fried")),
    _C("mushroom", "mushrooms", "vegetable", _mushroom, 1.0, ("red", "brown"),
       ("fungus", "forest_floor", "pizza_topping")),
    _C("cheese wedge", "cheese wedges", "food", _cheese, 1.3, ("yellow",),
       ("from_milk", "mice", "holes", "pizza_topping", "sandwich")),
    _C("pizza slice", "pizza slices", "food", _pizza, 0.9, ("yellow",),
       ("italy", "oven", "slices")),
    _C("ice cream", "ice creams", "food", _ice_cream, 0.6, ("pink", "white", "brown"),
       ("from_milk", "freezer", "melts", "sweet")),
    _C("donut", "donuts", "food", _donut, 1.0, ("pink", "brown", "white"),
       ("holes", "sweet", "fried")),
    _C("bread loaf", "bread loaves", "food", _bread, 1.5, ("brown",),
       ("oven", "sandwich", "toaster")),
    _C("mug", "mugs", "kitchenware", _mug, 1.1,
       ("red", "blue", "green", "yellow", "white", "black", "pink"),
       ("hot_drinks", "coffee", "dishwasher", "holds_water"), ("plain", "striped", "dotted")),
    _C("cup", "cups", "kitchenware", _cup, 1.05, ("white", "blue", "pink", "green", "yellow"),
       ("hot_drinks", "tea", "dishwasher", "saucer", "holds_water"), ("plain", "dotted")),
    _C("teapot", "teapots", "kitchenware", _teapot, 1.25, ("white", "blue", "red", "green"),
       ("hot_drinks", "tea", "spout", "lid"), ("plain", "dotted", "striped")),
    _C("bottle", "bottles", "kitchenware", _bottle, 0.4, ("green", "blue", "brown"),
       ("glass", "bottle_cap", "holds_water")),
    _C("wine glass", "wine glasses", "kitchenware", _wine_glass, 0.55, ("white",),
       ("glass", "wine", "fragile", "dishwasher")),
    _C("knife", "knives", "kitchenware", _knife, 3.2, ("black", "brown", "red"),
       ("cutting", "cut_bread", "sharp", "metal", "sharpened")),
    _C("scissors", "scissors", "stationery", _scissors, 1.6, ("red", "blue", "black", "green"),
       ("cutting", "cut_paper", "sharp", "school_bag", "metal"), plural_noun=True),
    _C("pencil", "pencils", "stationery", _pencil, 5.0, ("yellow", "red", "blue", "green"),
       ("writing", "school_bag", "from_trees", "sharpened")),
    _C("book", "books", "stationery", _book, 0.75,
       ("red", "blue", "green", "purple", "brown", "black", "yellow"),
       ("read", "library", "pages", "from_trees", "school_bag"), ("plain", "striped", "dotted")),
    _C("hammer", "hammers", "tool", _hammer, 0.8, ("brown", "red", "yellow"),
       ("carpenter", "nails", "toolbox", "metal")),
    _C("screwdriver", "screwdrivers", "tool", _screwdriver, 3.5,
       ("red", "yellow", "blue", "green"), ("carpenter", "screws", "toolbox", "metal")),
    _C("key", "keys", "household", _key, 2.4, ("yellow", "grey"),
       ("unlock", "keychain", "metal", "pocket")),
    _C("fish", "fish", "animal", _fish, 1.7, ("orange", "blue", "yellow", "red", "green"),
       ("lives_in_water", "gills", "scales", "pet"), ("plain", "striped", "dotted")),
    _C("bird", "birds", "animal", _bird, 1.2, ("red", "blue", "yellow", "brown"),
       ("can_fly", "feathers", "nest", "pet")),
    _C("cat", "cats", "animal", _cat, 1.0, ("orange", "grey", "black", "white", "brown"),
       ("pet", "purrs", "chases_mice", "whiskers"), ("plain", "striped")),
    _C("butterfly", "butterflies", "animal", _butterfly, 1.25,
       ("blue", "yellow", "orange", "purple", "pink"), ("can_fly", "nectar", "caterpillar"),
       ("plain", "dotted")),
    _C("shoe", "shoes", "clothing", _shoe, 1.8, ("red", "blue", "black", "brown", "white"),
       ("feet", "laces", "pairs"), ("plain", "striped")),
    _C("hat", "hats", "clothing", _hat, 1.2, ("black", "brown", "red", "blue"),
       ("head", "warm", "sun_hat"), ("plain", "checkered")),
    _C("sock", "socks", "clothing", _sock, 0.75,
       ("red", "blue", "green", "yellow", "pink", "purple", "white"),
       ("feet", "warm", "pairs"), ("plain", "striped", "dotted")),
    _C("glasses", "glasses", "clothing", _glasses, 2.4, ("black", "red", "brown", "blue"),
       ("glass", "see", "face", "folds"), plural_noun=True),
    _C("car", "cars", "vehicle", _car, 1.9, ("red", "blue", "yellow", "green", "white", "black"),
       ("wheels", "petrol", "transport", "garage")),
    _C("sailboat", "sailboats", "vehicle", _boat, 1.1, ("red", "blue", "brown", "white"),
       ("transport", "floats", "wind"), ("plain", "striped")),
    _C("house", "houses", "building", _house, 1.0, ("white", "yellow", "blue", "pink"),
       ("family_home", "roof", "builders")),
    _C("tree", "trees", "plant", _tree, 0.85, ("green", "orange", "yellow"),
       ("sunlight", "watering", "shade", "gives_wood")),
    _C("potted plant", "potted plants", "plant", _plant, 0.8, ("brown", "blue", "white", "red"),
       ("sunlight", "watering", "indoors")),
    _C("flower", "flowers", "plant", _flower, 0.7,
       ("red", "pink", "yellow", "purple", "white", "blue"),
       ("sunlight", "watering", "bees", "bouquet")),
    _C("leaf", "leaves", "plant", _leaf, 1.8, ("green", "yellow", "orange", "red", "brown"),
       ("sunlight", "autumn", "branch")),
    _C("lamp", "lamps", "electronics", _lamp, 0.6, ("yellow", "white", "red", "blue", "green"),
       ("light", "electricity", "bedside"), ("plain", "striped")),
    _C("light bulb", "light bulbs", "electronics", _light_bulb, 0.65, ("yellow",),
       ("light", "electricity", "glass", "fragile", "idea")),
    _C("phone", "phones", "electronics", _phone, 0.55, ("black", "white", "grey", "pink"),
       ("electricity", "calls", "charge", "alarm", "pocket", "fragile")),
    _C("battery", "batteries", "electronics", _battery, 2.2, ("orange", "yellow", "green", "blue"),
       ("stores_power", "remote", "pocket")),
    _C("candle", "candles", "household", _candle, 0.42, ("white", "red", "pink", "yellow", "blue"),
       ("light", "match", "birthday", "melts"), ("plain", "striped")),
    _C("clock", "clocks", "household", _clock, 1.0, ("red", "blue", "black", "brown", "green"),
       ("time", "wall", "alarm", "bedside")),
    _C("umbrella", "umbrellas", "household", _umbrella, 1.25,
       ("red", "blue", "black", "yellow", "purple", "green"),
       ("rain", "shade", "folds"), ("plain", "striped", "dotted")),
    _C("trash can", "trash cans", "household", _trash_can, 0.8, ("grey", "green", "blue", "black"),
       ("rubbish", "leftovers", "lid")),
    _C("ball", "balls", "toy", _ball, 1.0,
       ("red", "blue", "yellow", "green", "orange", "pink", "purple"),
       ("football", "bounces", "air", "floats"), ("plain", "striped", "dotted")),
    _C("balloon", "balloons", "toy", _balloon, 0.65,
       ("red", "blue", "yellow", "green", "pink", "purple"), ("air", "party", "pops")),
    _C("star", "stars", "symbol", _star, 1.0, ("yellow", "red", "blue", "orange", "pink"),
       ("night_sky", "five_points", "christmas")),
    _C("heart", "hearts", "symbol", _heart, 1.1, ("red", "pink", "purple"),
       ("love", "valentine", "beats")),
)  # fmt: skip
CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}


def categories_with_fact(fact_id: str) -> list[Category]:
    """Every category that carries the fact, in catalogue order."""
    return [c for c in CATEGORIES if fact_id in c.facts]


def _check_catalogue() -> None:
    # Catalogue errors would otherwise surface as odd text deep inside query generation.
    for category in CATEGORIES:
        unknown = [f for f in category.facts if f not in FACTS]
        if unknown:
            raise ValueError(f"{category.name}: unknown facts {unknown}")
        bad_colours = [c for c in category.colours if c not in COLOURS]
        if bad_colours or category.supercategory not in SUPERCATEGORIES:
            raise ValueError(f"{category.name}: bad colours or super-category")
    unused = set(FACTS) - {f for c in CATEGORIES for f in c.facts}
    if unused:
        raise ValueError(f"facts used by no category: {sorted(unused)}")


_check_catalogue()


def class_labels() -> list[list[str]]:
    """Each category's singular and plural name, in the order of its class id (its index in
    `CATEGORIES` plus one; 0 is the background): a probe's `ModelConfig.probe_labels`."""
    return [[category.name, category.plural] for category in CATEGORIES]


def colour_labels() -> list[str]:
    """ "COLOUR CATEGORY" for every colour of every category ("red apple", "green apple", ...),
    in the order of their class ids in `Scene.colour_map` (index plus one; 0 is the
    background): a colour probe's `ModelConfig.colour_probe_labels`."""
    return [f"{colour} {category.name}" for category in CATEGORIES for colour in category.colours]
