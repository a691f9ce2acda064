"""Scenes of ReasonWorld: a textured background with 2-10 partly overlapping objects.

Objects are pasted one after another; a later object covers earlier ones in the image and in
their masks alike, so every instance mask is exactly the pixels where that object is visible.
A placement is rejected if it would hide too much of an earlier object, which keeps every
object recognisable (by default at least 60% of its drawn pixels stay visible).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pixelreason.data.world.categories import CATEGORIES, Category, colour_labels

__all__ = ["Scene", "SceneObject", "generate_scene", "make_background"]


@dataclass
class SceneObject:
    """One placed object.

    Attributes:
        mask: HxW bool, the object's visible pixels after occlusion.
        full_area: pixels drawn before anything covered it.
        bbox: (x0, y0, x1, y1) of the visible pixels, exclusive upper bounds.
        centre: (x, y) mean of the visible pixels.
    """

    category: Category
    colour: str
    pattern: str
    mask: np.ndarray
    full_area: int
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    centre: tuple[float, float] = (0.0, 0.0)

    def update_geometry(self) -> None:
        """Recomputes area, bbox and centre from `mask` (after occlusion changed it)."""
        ys, xs = np.nonzero(self.mask)
        self.area = int(xs.size)
        if self.area == 0:
            self.bbox, self.centre = (0, 0, 0, 0), (0.0, 0.0)
            return
        self.bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        self.centre = (float(xs.mean()), float(ys.mean()))

    @property
    def name(self) -> str:
        return self.category.name


@dataclass
class Scene:
    """A rendered scene: `image` is size x size RGB, objects in paint order (last on top)."""

    image: Image.Image
    objects: list[SceneObject]
    size: int

    def semantic_map(self) -> np.ndarray:
        """(size, size) int16: 0 on background, 1 + the category's index in CATEGORIES on
        each object's visible pixels."""
        out = np.zeros((self.size, self.size), dtype=np.int16)
        for obj in self.objects:
            out[obj.mask] = CATEGORY_INDEX[obj.category.name] + 1
        return out

    def colour_map(self) -> np.ndarray:
        """(size, size) int16: 0 on background, 1 + the index of the object's "COLOUR
        CATEGORY" in `categories.colour_labels()` on each object's visible pixels."""
        out = np.zeros((self.size, self.size), dtype=np.int16)
        for obj in self.objects:
            out[obj.mask] = COLOUR_INDEX[f"{obj.colour} {obj.category.name}"] + 1
        return out


#: Category name -> index in CATEGORIES (the class ids of `Scene.semantic_map`, minus one).
CATEGORY_INDEX = {category.name: index for index, category in enumerate(CATEGORIES)}
#: "COLOUR CATEGORY" -> index in `colour_labels()` (the class ids of `Scene.colour_map`, minus 1).
COLOUR_INDEX = {name: index for index, name in enumerate(colour_labels())}


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    # Backgrounds stay in a mid range of brightness and saturation, so the saturated objects
    # with dark outlines remain the most salient things in the image.
    grey = rng.uniform(80, 200)
    return np.clip(grey + rng.normal(0, 30, 3), 40, 225)


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A cluttered background: gradient, smooth noise, stripes, tiles or faint blobs.

    Returns:
        size x size x 3 uint8 image.
    """
    kind = rng.choice(["gradient", "noise", "stripes", "tiles", "blobs"])
    a, b = _muted_colour(rng), _muted_colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    if kind == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
        image = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "noise":
        coarse = rng.uniform(0, 1, (6, 6)).astype(np.float32)
        smooth = np.asarray(
            Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
            dtype=np.float32,
        )
        t = smooth[..., None] / 255.0
        image = a * (1 - t) + b * t
    elif kind == "stripes":
        period = rng.uniform(6, 20) / size
        on = (np.floor(along / (period / 2)) % 2).astype(bool)
        b = a + rng.normal(0, 25, 3)
        image = np.where(on[..., None], a, b)
    elif kind == "tiles":
        tile = int(rng.integers(8, 25))
        ys, xs = np.mgrid[0:size, 0:size]
        on = ((xs // tile + ys // tile) % 2).astype(bool)
        b = a + rng.normal(0, 20, 3)
        image = np.where(on[..., None], a, b)
        grout = (xs % tile == 0) | (ys % tile == 0)
        image[grout] = a * 0.7
    else:
        canvas = Image.new("RGB", (size, size), tuple(int(v) for v in a))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(4, 10))):
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
            w, h = rng.uniform(0.1, 0.5, 2) * size
            fill = tuple(int(v) for v in np.clip(a + rng.normal(0, 22, 3), 0, 255))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x0, y0, x0 + w, y0 + h], fill=fill)
        image = np.asarray(canvas, dtype=np.float32)
    image = image + rng.normal(0, 5, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _object_box(category: Category, size: int, rng: np.random.Generator) -> tuple[int, int]:
    longest = rng.uniform(0.16, 0.42) * size
    if category.aspect >= 1:
        w, h = longest, longest / category.aspect
    else:
        w, h = longest * category.aspect, longest
    # Thin objects (pencils, knives) get a floor on thickness so their parts stay visible.
    thickness = 0.06 * size
    if min(w, h) < thickness:
        scale = thickness / min(w, h)
        w, h = w * scale, h * scale
    limit = 0.7 * size
    return int(round(min(w, limit))), int(round(min(h, limit)))


def _pick_categories(
    rng: np.random.Generator, count: int, must_include: Sequence[Category]
) -> list[Category]:
    chosen = list(must_include)
    while len(chosen) < count:
        # Sometimes repeat a category already chosen, so scenes often hold several instances
        # of one kind (needed by "the left mug", "all the mugs", "the biggest mug").
        if chosen and rng.random() < 0.25:
            chosen.append(chosen[int(rng.integers(len(chosen)))])
        else:
            chosen.append(CATEGORIES[int(rng.integers(len(CATEGORIES)))])
    return chosen


def generate_scene(
    rng: np.random.Generator,
    size: int = 128,
    min_objects: int = 2,
    max_objects: int = 10,
    min_visible: float = 0.6,
    must_include: Sequence[Category] = (),
) -> Scene:
    """Draws a random scene.

    Args:
        rng: the only source of randomness; the same generator state gives the same scene.
        size: image side in pixels (object sizes scale with it).
        min_objects / max_objects: object count range, inclusive.
        min_visible: fraction of each object's drawn pixels that must stay visible.
        must_include: categories that are placed first (they are still subject to placement
            limits, so a crowded scene may drop one: check the result if it matters).

    Returns:
        A Scene with a size x size RGB image and at least `min_objects` objects.
    """
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    image = make_background(rng, size)
    wanted = int(rng.integers(min_objects, max_objects + 1))
    queue = _pick_categories(rng, max(wanted, len(must_include)), must_include)
    objects: list[SceneObject] = []
    attempts = 0
    while queue and attempts < 4 * wanted + 10:
        attempts += 1
        category = queue[0]
        w, h = _object_box(category, size, rng)
        colour = category.colours[int(rng.integers(len(category.colours)))]
        pattern = category.patterns[int(rng.integers(len(category.patterns)))]
        rgb, local = category.render(w, h, colour, pattern, rng)
        if rng.random() < 0.5:
            rgb, local = rgb[:, ::-1], local[:, ::-1]
        drawn = int(local.sum())
        placed = False
        for _ in range(12):
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            window = (slice(y0, y0 + h), slice(x0, x0 + w))
            # Reject the spot if any earlier object would fall below its visibility floor.
            if all(
                obj.area - int(np.count_nonzero(obj.mask[window] & local))
                >= min_visible * obj.full_area
                for obj in objects
            ):
                placed = True
                break
        if not placed:
            # Try this category again at a new size; give up on it after a few tries.
            if attempts % 3 == 0:
                queue.pop(0)
            continue
        queue.pop(0)
        for obj in objects:
            if obj.mask[window].any():
                obj.mask[window] &= ~local
                obj.update_geometry()
        mask = np.zeros((size, size), dtype=bool)
        mask[window] = local
        image[window][local] = rgb[local]
        obj = SceneObject(category, colour, pattern, mask, full_area=drawn)
        obj.update_geometry()
        objects.append(obj)
        if len(objects) >= wanted and not queue:
            break
    if len(objects) < min_objects:
        # Extremely unlikely (tiny images); draw again rather than return a degenerate scene.
        return generate_scene(rng, size, min_objects, max_objects, min_visible, must_include)
    return Scene(image=Image.fromarray(image), objects=objects, size=size)
