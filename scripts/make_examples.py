"""Draw the bundled example image(s) in examples/ (deterministic; no downloads).

python scripts/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pixelreason.data.world import generate_scene

OUT = Path(__file__).resolve().parent.parent / "examples"


def kitchen(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A table with an orange, a lemon, a striped mug, scissors and a potted plant."""
    width, height = size
    image = Image.new("RGB", size, (236, 228, 212))
    draw = ImageDraw.Draw(image)
    for y in range(0, height // 2, 12):  # tiled wall
        draw.line((0, y, width, y), fill=(214, 206, 190))
    draw.rectangle((0, height // 2, width, height), fill=(150, 104, 64))  # table
    for x in range(0, width, 40):
        draw.line((x, height // 2, x + 20, height), fill=(135, 92, 55), width=2)
    # orange with a leaf
    draw.ellipse((30, 130, 90, 190), fill=(245, 140, 20), outline=(200, 100, 10), width=2)
    draw.polygon([(60, 130), (72, 118), (66, 134)], fill=(40, 140, 50))
    # lemon
    draw.ellipse((100, 150, 150, 185), fill=(250, 225, 50), outline=(210, 180, 30), width=2)
    # striped mug with handle
    draw.rectangle((170, 110, 215, 175), fill=(60, 90, 200))
    for y in range(116, 175, 12):
        draw.rectangle((170, y, 215, y + 5), fill=(240, 240, 250))
    draw.arc((205, 122, 235, 160), start=270, end=90, fill=(60, 90, 200), width=6)
    # scissors: two rings and crossed blades
    draw.ellipse((240, 180, 258, 198), outline=(200, 30, 30), width=4)
    draw.ellipse((262, 180, 280, 198), outline=(200, 30, 30), width=4)
    draw.line((252, 182, 300, 140), fill=(170, 170, 180), width=5)
    draw.line((268, 182, 290, 135), fill=(170, 170, 180), width=5)
    # potted plant
    draw.polygon([(250, 100), (300, 100), (292, 135), (258, 135)], fill=(170, 80, 40))
    for dx, dy in ((-22, -40), (0, -52), (22, -40), (-10, -30), (12, -30)):
        draw.ellipse((268 + dx, 92 + dy, 288 + dx, 112 + dy), fill=(40, 150, 60))
    return image


def world_table(size: int = 128) -> Image.Image:
    """A ReasonWorld scene (the default model's world, at its 128 px) drawn from a seed no
    split uses, with something rich in vitamin C and something that cuts paper in it."""
    for seed in range(1000):
        scene = generate_scene(np.random.default_rng([20261122, seed]), size=size, min_objects=4)
        facts = {f for obj in scene.objects for f in obj.category.facts}
        if {"vitamin_c", "cut_paper"} <= facts and len(scene.objects) <= 6:
            return scene.image
    raise RuntimeError("no suitable scene in 1000 seeds")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, image in (("kitchen.png", kitchen()), ("world.png", world_table())):
        image.save(OUT / name)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
