"""Preview images of ReasonWorld samples, for checking by eye that masks sit on the objects.

python -m pixelreason.data.world.preview OUT.png --seed 0 --split train --count 16
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pixelreason.data.world.samples import SPLITS, WorldSample, generate_sample

__all__ = ["main", "preview_grid", "render_preview"]

TARGET_COLOURS = [(255, 0, 0), (0, 110, 255), (0, 200, 0), (255, 0, 255), (255, 160, 0)]


def render_preview(sample: WorldSample, scale: int = 2, text_lines: int = 9) -> Image.Image:
    """The image with each target mask tinted and outlined, above the conversation text."""
    image = np.asarray(sample.image, dtype=np.float32).copy()
    for k, mask in enumerate(sample.target_masks):
        colour = np.array(TARGET_COLOURS[k % len(TARGET_COLOURS)], dtype=np.float32)
        image[mask] = 0.5 * image[mask] + 0.5 * colour
        # Mark the mask border at full strength so its alignment with the object is visible.
        inner = mask.copy()
        inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        image[mask & ~inner] = colour
    side = sample.image.width * scale
    picture = Image.fromarray(image.astype(np.uint8)).resize((side, side), Image.NEAREST)
    line_height = 11
    canvas = Image.new("RGB", (side, side + line_height * text_lines + 4), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    lines = [f"[{sample.kind}]"]
    width = max(20, side // 6)
    for user, assistant in sample.conversation:
        lines += textwrap.wrap(f"Q: {user}", width) + textwrap.wrap(f"A: {assistant}", width)
    for row, line in enumerate(lines[:text_lines]):
        draw.text((2, side + 2 + row * line_height), line, fill=(0, 0, 0))
    return canvas


def preview_grid(samples: Sequence[WorldSample], columns: int = 4) -> Image.Image:
    """Previews of `samples` tiled in a grid."""
    tiles = [render_preview(s) for s in samples]
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h), (200, 200, 200))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * w, (i // columns) * h))
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixelreason.data.world.preview")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args(argv)
    samples = [
        generate_sample(args.seed, args.split, i)
        for i in range(args.start, args.start + args.count)
    ]
    preview_grid(samples).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
