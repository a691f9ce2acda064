"""Multi-turn queries asked two ways: as the benchmark file holds them (both questions in one
turn, what `pixelreason eval` asks) and as a conversation (the first question, then the
follow-up with the model's own first answer in the history, `Segmenter.chat`). Prints a table
of gIoU over a ReasonWorld split's multi-turn samples.

    pixelreason world runs/rw --train 0 --val 0
    python benchmarks/multiturn.py --model default --data runs/rw/test
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pixelreason import Segmenter
from pixelreason.eval.evaluate import items_from_reasonseg
from pixelreason.eval.metrics import intersection_union, sample_iou


def _iou(masks: np.ndarray, gt: np.ndarray) -> float:
    prediction = masks.any(axis=0) if len(masks) else np.zeros(gt.shape, bool)
    return sample_iou(*intersection_union(prediction, gt))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="model name or directory (repeatable)")
    parser.add_argument("--data", default="runs/rw/test", help="a ReasonWorld split folder")
    args = parser.parse_args(argv)
    items = [i for i in items_from_reasonseg(args.data) if i.kind == "multiturn"]
    if not items:
        parser.error(f"no multi-turn samples in {args.data}")
    print("| model | multi-turn samples | joined (as evaluated) | as a conversation |")
    print("| --- | --- | --- | --- |")
    for name in args.model or ["default"]:
        segmenter = Segmenter.from_pretrained(name)
        joined, chat = [], []
        for item in tqdm(items, desc=name):
            record = json.loads((Path(args.data) / f"{item.id}.json").read_text())
            segmenter.set_image(item.image)
            joined.append(_iou(segmenter.segment(item.query).masks, item.gt))
            for user, _ in record["conversation"][:-1]:
                segmenter.chat(user)
            chat.append(_iou(segmenter.chat(record["conversation"][-1][0]).masks, item.gt))
        print(f"| {name} | {len(items)} | {np.mean(joined):.3f} | {np.mean(chat):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
