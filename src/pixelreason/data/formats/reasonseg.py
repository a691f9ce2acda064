"""Reading and writing the ReasonSeg benchmark format.

One sample is `<id>.json` next to `<id>.jpg` (or `.png`). The JSON holds `text` (1-6 rephrasings
of the query), `is_sentence` and `shapes` (labelme polygons labelled "target", "ignore" or
"flag"). Any other top-level key, and any other key on a shape, is kept in `extra` so files we
write with additional information (query kind, answer, per-target index) stay readable by
tools that only know the reference keys, and files written by those tools load here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "DatasetFormatError",
    "ReasonSegSample",
    "Shape",
    "iter_split",
    "load_sample",
    "mask_from_shapes",
    "save_sample",
    "target_masks",
]

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
REFERENCE_KEYS = ("text", "is_sentence", "shapes")
SHAPE_KEYS = ("label", "points", "shape_type")
IGNORE_VALUE = 255


class DatasetFormatError(ValueError):
    """A dataset file does not follow the expected format."""


@dataclass
class Shape:
    """One labelme polygon.

    `points` are (x, y) pixel coordinates. `extra` holds keys beyond the reference ones
    (labelme's `group_id`/`flags`, or our `target_index`), written back unchanged.
    """

    label: str
    points: list[tuple[float, float]]
    shape_type: str = "polygon"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReasonSegSample:
    """One ReasonSeg image-instruction pair; `extra` holds non-reference top-level keys."""

    id: str
    image_path: Path
    texts: list[str]
    is_sentence: bool
    shapes: list[Shape]
    extra: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        """The image as RGB (HxW taken from the file, not the JSON)."""
        with Image.open(self.image_path) as image:
            return image.convert("RGB")


def _fail(path: Path, what: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}: {what}")


def _is_number(value: object) -> bool:
    # bool is an int subclass; `true` as a coordinate is a format error, not 1.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_shape(path: Path, index: int, raw: object) -> Shape:
    where = f"shapes[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, f"{where} must be an object, got {type(raw).__name__}")
    for key in ("label", "points"):
        if key not in raw:
            raise _fail(path, f"{where} is missing key {key!r}")
    label = raw["label"]
    if not isinstance(label, str):
        raise _fail(path, f"{where}.label must be a string, got {type(label).__name__}")
    shape_type = raw.get("shape_type", "polygon")
    if shape_type != "polygon":
        raise _fail(path, f"{where}.shape_type must be 'polygon', got {shape_type!r}")
    raw_points = raw["points"]
    if not isinstance(raw_points, list) or not raw_points:
        raise _fail(path, f"{where}.points must be a non-empty list of [x, y] pairs")
    points: list[tuple[float, float]] = []
    for k, point in enumerate(raw_points):
        is_pair = isinstance(point, list | tuple) and len(point) == 2
        if not (is_pair and all(map(_is_number, point))):
            raise _fail(path, f"{where}.points[{k}] is not a numeric [x, y] pair: {point!r}")
        points.append((float(point[0]), float(point[1])))
    extra = {k: v for k, v in raw.items() if k not in SHAPE_KEYS}
    return Shape(label=label, points=points, shape_type=shape_type, extra=extra)


def find_image(json_path: Path) -> Path:
    """The image next to `json_path` with the same stem; raises if there is none."""
    for suffix in IMAGE_SUFFIXES:
        candidate = json_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise _fail(json_path, f"no image {json_path.stem}{{{','.join(IMAGE_SUFFIXES)}}} next to it")


def load_sample(json_path: str | Path) -> ReasonSegSample:
    """Loads `<id>.json` and locates its image; raises `DatasetFormatError` if malformed."""
    path = Path(json_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _fail(path, f"cannot read JSON ({message})") from error
    if not isinstance(raw, dict):
        raise _fail(path, f"top level must be an object, got {type(raw).__name__}")
    for key in REFERENCE_KEYS:
        if key not in raw:
            raise _fail(path, f"missing key {key!r}")
    texts = raw["text"]
    if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
        raise _fail(path, "'text' must be a non-empty list of strings")
    if not isinstance(raw["is_sentence"], bool):
        raise _fail(path, f"'is_sentence' must be a bool, got {raw['is_sentence']!r}")
    if not isinstance(raw["shapes"], list):
        raise _fail(path, f"'shapes' must be a list, got {type(raw['shapes']).__name__}")
    shapes = [_parse_shape(path, i, s) for i, s in enumerate(raw["shapes"])]
    return ReasonSegSample(
        id=path.stem,
        image_path=find_image(path),
        texts=list(texts),
        is_sentence=raw["is_sentence"],
        shapes=shapes,
        extra={k: v for k, v in raw.items() if k not in REFERENCE_KEYS},
    )


def iter_split(split_dir: str | Path) -> Iterator[ReasonSegSample]:
    """Yields every sample of a split folder, sorted by id."""
    folder = Path(split_dir)
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: not a directory")
    for json_path in sorted(folder.glob("*.json"), key=lambda p: p.stem):
        yield load_sample(json_path)


def _shape_to_json(shape: Shape) -> dict[str, Any]:
    clash = set(shape.extra) & set(SHAPE_KEYS)
    if clash:
        raise ValueError(f"shape extra keys {sorted(clash)} would overwrite reference keys")
    return {
        "label": shape.label,
        "points": [[float(x), float(y)] for x, y in shape.points],
        "shape_type": shape.shape_type,
        **shape.extra,
    }


def save_sample(
    sample: ReasonSegSample,
    image: Image.Image,
    out_dir: str | Path,
    image_format: str = "jpg",
) -> ReasonSegSample:
    """Writes `<id>.<image_format>` and `<id>.json` into `out_dir`.

    JPEG is written at quality 95 like the reference data; "png" is lossless, for synthetic
    images where compression artefacts would blur thin parts. Returns the sample with
    `image_path` pointing at the written image.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    clash = set(sample.extra) & set(REFERENCE_KEYS)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite reference keys")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    image_path = folder / f"{sample.id}.{image_format}"
    if image_format == "jpg":
        image.convert("RGB").save(image_path, format="JPEG", quality=95)
    else:
        image.convert("RGB").save(image_path, format="PNG")
    payload = {
        "text": list(sample.texts),
        "is_sentence": bool(sample.is_sentence),
        "shapes": [_shape_to_json(s) for s in sample.shapes],
        **sample.extra,
    }
    json_path = folder / f"{sample.id}.json"
    json_path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return ReasonSegSample(
        id=sample.id,
        image_path=image_path,
        texts=list(sample.texts),
        is_sentence=sample.is_sentence,
        shapes=list(sample.shapes),
        extra=dict(sample.extra),
    )


def _pixel_points(points: Sequence[tuple[float, float]]) -> list[tuple[int, int]]:
    # The reference casts coordinates to int32, which truncates toward zero; doing the same
    # keeps our masks pixel-compatible with masks made by the reference tools.
    pixels = [(int(x), int(y)) for x, y in points]
    if len(pixels) == 1:
        pixels = pixels * 2  # PIL needs two coordinates; a repeated point paints one pixel
    return pixels


def _rasterise(canvas: Image.Image, points: Sequence[tuple[float, float]], value: int) -> None:
    ImageDraw.Draw(canvas).polygon(_pixel_points(points), fill=value, outline=value, width=1)


def mask_from_shapes(shapes: Sequence[Shape], height: int, width: int) -> np.ndarray:
    """The reference ground-truth mask of a sample.

    "flag" shapes are skipped; the others are painted from the largest rasterised area to the
    smallest, so small shapes overwrite large ones, each filled plus a 1-px outline. Labels
    containing "ignore" paint 255, any other label paints 1, background stays 0.

    Returns:
        HxW uint8 mask with values in {0, 1, 255}.
    """
    painted: list[tuple[int, int, Shape]] = []
    for order, shape in enumerate(shapes):
        if shape.label.lower() == "flag":
            continue
        scratch = Image.new("L", (width, height), 0)
        _rasterise(scratch, shape.points, 1)
        area = int(np.count_nonzero(np.asarray(scratch)))
        painted.append((area, order, shape))
    # Largest first; equal areas keep file order so the result does not depend on sort details.
    painted.sort(key=lambda item: (-item[0], item[1]))
    canvas = Image.new("L", (width, height), 0)
    for _, _, shape in painted:
        value = IGNORE_VALUE if "ignore" in shape.label.lower() else 1
        _rasterise(canvas, shape.points, value)
    return np.array(canvas, dtype=np.uint8)


def target_masks(shapes: Sequence[Shape], height: int, width: int) -> list[np.ndarray]:
    """Per-target masks of a multi-target sample, ordered by the shapes' `target_index`.

    Shapes without `target_index` (reference files) all belong to one target. Ignore shapes
    are applied to every target so its 255 pixels match the combined mask.

    Returns:
        One HxW uint8 mask (0/1/255) per target.
    """
    ignores = [s for s in shapes if "ignore" in s.label.lower()]
    targets = [s for s in shapes if s.label.lower() != "flag" and "ignore" not in s.label.lower()]
    by_index: dict[int, list[Shape]] = {}
    for shape in targets:
        index = shape.extra.get("target_index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            raise DatasetFormatError(f"target_index must be an int, got {index!r}")
        by_index.setdefault(index, []).append(shape)
    return [mask_from_shapes(by_index[k] + ignores, height, width) for k in sorted(by_index)]
