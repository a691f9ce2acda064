"""Evaluation under the benchmark's exact rules, with a JSON report and a picture grid.

Each sample is asked its `text[0]` on its image; the prediction is the union of the answer's
masks (logits > 0 at the image's size) and is scored against the ReasonSeg reference mask
(ignore pixels excluded, empty-vs-empty = 1, cIoU = ΣI/ΣU). On top of gIoU/cIoU the report
breaks results down short/long and by query kind, and adds no-target accuracy, the MUSE-style
multi-target score (Hungarian matching), and how often the answer names its targets.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pixelreason.api import Segmenter
from pixelreason.data.formats.reasonseg import iter_split, mask_from_shapes, target_masks
from pixelreason.errors import InputError
from pixelreason.eval.metrics import IoUAccumulator, hungarian_multi_target_iou
from pixelreason.viz import overlay

REPORT_VERSION = 1


@dataclass
class EvalItem:
    """One evaluation sample: gt (H, W) uint8 0/1/255; targets: one such mask per target."""

    id: str
    image: Image.Image
    query: str
    gt: np.ndarray
    targets: list[np.ndarray]
    kind: str
    is_sentence: bool
    target_names: list[str]


def items_from_reasonseg(split_dir: str | Path, limit: int | None = None) -> Iterator[EvalItem]:
    """EvalItems from a ReasonSeg-format split folder (`<id>.json` + image)."""
    for count, sample in enumerate(iter_split(split_dir)):
        if limit is not None and count >= limit:
            return
        image = sample.load_image()
        height, width = image.height, image.width
        gt = mask_from_shapes(sample.shapes, height, width)
        targets = [t for t in target_masks(sample.shapes, height, width) if (t == 1).any()]
        yield EvalItem(
            id=sample.id,
            image=image,
            query=sample.texts[0],
            gt=gt,
            targets=targets,
            kind=str(sample.extra.get("kind", "reasonseg")),
            is_sentence=sample.is_sentence,
            target_names=[str(n) for n in sample.extra.get("target_names", [])],
        )


def items_from_world(seed: int, split: str, count: int, image_size: int = 128) -> list[EvalItem]:
    """EvalItems generated directly from ReasonWorld (no export), e.g. for validation while
    training; the masks are the generator's, which the exported files reproduce exactly."""
    from pixelreason.data.world import generate_sample

    items = []
    for index in range(count):
        sample = generate_sample(seed, split, index, size=image_size)
        targets = [m.astype(np.uint8) for m in sample.target_masks]
        shape = (sample.image.height, sample.image.width)
        gt = np.logical_or.reduce(targets) if targets else np.zeros(shape, bool)
        gt = gt.astype(np.uint8)
        if sample.ignore_mask is not None:
            gt[sample.ignore_mask] = 255
            for target in targets:
                target[sample.ignore_mask] = 255
        items.append(
            EvalItem(
                id=sample.id,
                image=sample.image,
                query=sample.texts[0],
                gt=gt,
                targets=targets,
                kind=sample.kind,
                is_sentence=sample.is_sentence,
                target_names=list(sample.target_names),
            )
        )
    return items


def evaluate(
    segmenter: Segmenter, items: Iterable[EvalItem], *, progress: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run every item; return (report, per-sample records incl. predictions for pictures)."""
    accumulator = IoUAccumulator()
    no_target, multi, named, latencies = [], [], [], []
    calibration: list[tuple[float, float]] = []  # (score, IoU) of lone masks for lone targets
    records: list[dict[str, Any]] = []
    for item in tqdm(list(items) if progress else items, desc="eval", disable=not progress):
        start = time.perf_counter()
        segmenter.set_image(item.image)
        try:
            result = segmenter.segment(item.query)
        except InputError as exc:  # a query the model cannot take counts as an empty answer
            result = None
            answer_text = f"(refused: {exc})"
        latencies.append(time.perf_counter() - start)
        height, width = item.gt.shape
        masks = result.masks if result is not None else np.zeros((0, height, width), bool)
        scores = [round(float(v), 4) for v in result.scores] if result is not None else []
        answer_text = result.text if result is not None else answer_text
        prediction = masks.any(axis=0) if len(masks) else np.zeros((height, width), bool)
        # Kinds are prefixed: ReasonWorld has a query kind named "long" as well.
        groups = [f"kind:{item.kind}", "long" if item.is_sentence else "short"]
        iou = accumulator.add(prediction, item.gt, groups)
        if not item.targets:
            no_target.append(len(masks) == 0)
        multi_iou = None
        if len(item.targets) >= 2:
            multi_iou = hungarian_multi_target_iou(list(masks), item.targets)
            multi.append(multi_iou)
        names = None
        if item.targets and item.target_names:
            names = names_targets(answer_text, len(masks), item.target_names)
            named.append(names)
        if len(item.targets) == 1 and len(masks) == 1:
            calibration.append((scores[0], iou))
        records.append(
            {
                "id": item.id,
                "kind": item.kind,
                "query": item.query,
                "answer": answer_text,
                "iou": round(iou, 5),
                "num_pred": int(len(masks)),
                "num_gt": len(item.targets),
                "multi_target_iou": None if multi_iou is None else round(multi_iou, 5),
                "scores": scores,
                "names_targets": names,
                "_masks": masks,
                "_item": item,
            }
        )
    summary = accumulator.summary()
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "model": segmenter.description,
        "count": accumulator.count,
        "overall": summary.get("all", {}),
        "short": summary.get("short"),
        "long": summary.get("long"),
        "by_kind": {
            k.removeprefix("kind:"): v for k, v in summary.items() if k.startswith("kind:")
        },
        "no_target_accuracy": _rate(no_target),
        "multi_target": {
            "hungarian_iou": float(np.mean(multi)) if multi else None,
            "count": len(multi),
        },
        "names_targets": _rate(named),
        "score_calibration": _calibration(calibration),
        "latency_ms_median": 1000 * statistics.median(latencies) if latencies else None,
        "samples": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
    }
    return report, records


def names_targets(answer: str, num_masks: int, target_names: Sequence[str]) -> bool:
    """Whether an answer names its targets: it grounds at least one mask and holds every
    target's name (any case). "There is no car in this image." names no car: it denies it."""
    lowered = answer.lower()
    return num_masks > 0 and all(name.lower() in lowered for name in target_names)


def _calibration(pairs: list[tuple[float, float]]) -> dict[str, float | int | None]:
    """How well the heads' mask scores predict the IoU their masks reach, over samples with one
    target and one predicted mask: Pearson correlation and mean absolute error."""
    if len(pairs) < 2:
        return {"pearson": None, "mean_abs_error": None, "count": len(pairs)}
    scores, ious = np.array(pairs).T
    varies = scores.std() > 0 and ious.std() > 0
    return {
        "pearson": float(np.corrcoef(scores, ious)[0, 1]) if varies else None,
        "mean_abs_error": float(np.abs(scores - ious).mean()),
        "count": len(pairs),
    }


def _rate(flags: list[bool]) -> dict[str, float | int | None]:
    return {"value": float(np.mean(flags)) if flags else None, "count": len(flags)}


def result_grid(records: list[dict[str, Any]], path: str | Path, per_side: int = 8) -> None:
    """A PNG of the `per_side` best and worst samples: overlay, query, answer and IoU."""
    ranked = sorted(records, key=lambda r: r["iou"], reverse=True)
    chosen = ranked[:per_side] + ranked[-per_side:] if len(ranked) > 2 * per_side else ranked
    tiles = []
    for record in chosen:
        item: EvalItem = record["_item"]
        gt_outline = item.gt == 1
        caption = f"IoU {record['iou']:.2f} [{item.kind}] Q: {item.query} A: {record['answer']}"
        masks = np.concatenate([record["_masks"], gt_outline[None] & _edge(gt_outline)[None]])
        labels = [f"prediction {k + 1}" for k in range(len(record["_masks"]))] + ["ground truth"]
        tile = overlay(item.image, masks, labels, caption=caption)
        tiles.append(tile.resize((256, int(256 * tile.height / tile.width))))
    if not tiles:
        return
    columns = min(4, len(tiles))
    rows = (len(tiles) + columns - 1) // columns
    height = max(t.height for t in tiles)
    grid = Image.new("RGB", (columns * 256, rows * height), (255, 255, 255))
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * 256, (index // columns) * height))
    grid.save(path)


def _edge(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
    inner &= padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner
