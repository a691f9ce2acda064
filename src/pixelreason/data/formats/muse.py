"""Reading and writing the MUSE format (PixelLM's multi-target reasoning segmentation data).

A MUSE file (`muse_train.json`, `muse_val.json`, ...) is a JSON list of records, one per image:

    {"image": "images/000001.png", "height": 128, "width": 128,
     "questions": ["Which things here would you eat?", ...],
     "text_answers": ["The apple {seg} and the pear {seg}.", ...],
     "answers": [[{"segmentation": <COCO RLE or polygons>, "bbox": [x, y, w, h],
                   "category": "apple"}, ...], ...]}

`questions`, `text_answers` and `answers` are parallel lists; each `{seg}` in a text answer
stands for the next annotation of that question's `answers` list, in order. Segmentations may be
COCO RLE (compressed string or uncompressed counts) or polygon lists, as in LVIS. Any other key
is kept in `extra` and written back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from pixelreason.data.formats.reasonseg import DatasetFormatError
from pixelreason.data.schema import SegSample
from pixelreason.prompting import Turn
from pixelreason.tokens import SEG_TOKEN
from pixelreason.utils.files import atomic_write_bytes

__all__ = [
    "SEG_PLACEHOLDER",
    "MuseQuestion",
    "MuseRecord",
    "encode_mask",
    "load_muse",
    "record_samples",
    "save_muse",
]

SEG_PLACEHOLDER = "{seg}"
RECORD_KEYS = ("image", "height", "width", "questions", "text_answers", "answers")


@dataclass
class MuseQuestion:
    """One question about an image: its answer text (with `{seg}` per target) and the targets'
    masks (H, W) bool, in the order the placeholders appear."""

    question: str
    text_answer: str
    masks: list[np.ndarray]
    categories: list[str]

    @property
    def answer(self) -> str:
        """The answer in pixelreason's form: one `<SEG>` per target."""
        return self.text_answer.replace(SEG_PLACEHOLDER, SEG_TOKEN)


@dataclass
class MuseRecord:
    image: str
    height: int
    width: int
    questions: list[MuseQuestion]
    extra: dict[str, Any] = field(default_factory=dict)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE with `counts` as a string, and the mask's [x, y, w, h] box (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": rle["counts"].decode(),
        "bbox": [float(v) for v in coco_mask.toBbox(rle)],
    }


def _fail(path: Path, where: str, what: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}: {where}: {what}")


def _decode_segmentation(raw: Any, height: int, width: int, path: Path, where: str) -> np.ndarray:
    try:
        if isinstance(raw, dict):
            if raw.get("size") != [height, width]:
                raise _fail(path, where, f"RLE size {raw.get('size')} != [{height}, {width}]")
            rle = raw
            if isinstance(raw.get("counts"), list):
                if sum(raw["counts"]) != height * width:  # pycocotools would not notice
                    raise _fail(path, where, f"RLE counts do not sum to {height * width}")
                rle = coco_mask.frPyObjects(raw, height, width)
            elif isinstance(raw.get("counts"), str):
                rle = {"size": raw["size"], "counts": raw["counts"].encode()}
            else:
                raise _fail(path, where, "RLE counts must be a string or a list")
            return coco_mask.decode(rle).astype(bool)
        if isinstance(raw, list) and raw and all(isinstance(p, list) for p in raw):
            polygons = [p for p in raw if len(p) >= 6 and len(p) % 2 == 0]
            if len(polygons) != len(raw):
                raise _fail(path, where, "polygons need an even number (>= 6) of coordinates")
            rles = coco_mask.frPyObjects(polygons, height, width)
            return coco_mask.decode(coco_mask.merge(rles)).astype(bool)
    except DatasetFormatError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise _fail(path, where, f"unreadable segmentation ({exc})") from exc
    raise _fail(path, where, "segmentation must be COCO RLE or a list of polygons")


def _parse_record(raw: Any, index: int, path: Path) -> MuseRecord:
    where = f"record {index}"
    if not isinstance(raw, dict):
        raise _fail(path, where, "expected an object")
    missing = [k for k in RECORD_KEYS if k not in raw]
    if missing:
        raise _fail(path, where, f"missing keys {missing}")
    height, width = raw["height"], raw["width"]
    sizes_ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (height, width))
    if not (sizes_ok and height > 0 and width > 0):
        raise _fail(path, where, "height and width must be positive integers")
    questions, answers, texts = raw["questions"], raw["answers"], raw["text_answers"]
    if not all(isinstance(v, list) for v in (questions, answers, texts)):
        raise _fail(path, where, "questions, text_answers and answers must be lists")
    if not len(questions) == len(texts) == len(answers):
        raise _fail(path, where, "questions, text_answers and answers differ in length")
    parsed = []
    for k, (question, text, targets) in enumerate(zip(questions, texts, answers, strict=True)):
        at = f"{where}, question {k}"
        if not isinstance(question, str) or not isinstance(text, str):
            raise _fail(path, at, "question and text answer must be strings")
        if not isinstance(targets, list):
            raise _fail(path, at, "answers entry must be a list of annotations")
        if text.count(SEG_PLACEHOLDER) != len(targets):
            raise _fail(
                path, at, f"{text.count(SEG_PLACEHOLDER)} {{seg}} but {len(targets)} annotations"
            )
        masks, categories = [], []
        for j, target in enumerate(targets):
            if not isinstance(target, dict) or "segmentation" not in target:
                raise _fail(path, f"{at}, target {j}", "annotation needs a segmentation")
            masks.append(
                _decode_segmentation(
                    target["segmentation"], height, width, path, f"{at}, target {j}"
                )
            )
            categories.append(str(target.get("category", "")))
        parsed.append(MuseQuestion(question, text, masks, categories))
    extra = {k: v for k, v in raw.items() if k not in RECORD_KEYS}
    return MuseRecord(str(raw["image"]), height, width, parsed, extra)


def load_muse(json_path: str | Path) -> list[MuseRecord]:
    """Parse and validate a MUSE file; every problem is one DatasetFormatError naming where."""
    path = Path(json_path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetFormatError(f"MUSE file not found: {path}") from exc
    except OSError as exc:
        raise DatasetFormatError(f"cannot read MUSE file {path}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of records")
    return [_parse_record(item, index, path) for index, item in enumerate(raw)]


def _annotation(mask: np.ndarray, category: str) -> dict[str, Any]:
    encoded = encode_mask(mask)
    bbox = encoded.pop("bbox")
    return {"segmentation": encoded, "bbox": bbox, "category": category}


def _record_json(record: MuseRecord) -> dict[str, Any]:
    return {
        "image": record.image,
        "height": record.height,
        "width": record.width,
        "questions": [q.question for q in record.questions],
        "text_answers": [q.text_answer for q in record.questions],
        "answers": [
            [
                _annotation(mask, category)
                for mask, category in zip(q.masks, q.categories, strict=True)
            ]
            for q in record.questions
        ],
        **record.extra,
    }


def save_muse(records: Sequence[MuseRecord], json_path: str | Path) -> None:
    """Write records as one MUSE JSON file (atomically)."""
    data = [_record_json(r) for r in records]
    atomic_write_bytes(Path(json_path), (json.dumps(data) + "\n").encode())


def record_samples(record: MuseRecord, image_root: str | Path) -> Iterator[SegSample]:
    """Training samples of a record: one single-turn sample per question."""
    path = Path(image_root) / record.image
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(f"cannot read image {path}: {exc}") from exc
    if (image.height, image.width) != (record.height, record.width):
        raise DatasetFormatError(
            f"{path} is {image.width}x{image.height}, "
            f"the record says {record.width}x{record.height}"
        )
    for question in record.questions:
        masks = [m.astype(np.uint8) for m in question.masks]
        yield SegSample(image, [Turn(question.question, question.answer)], masks)
