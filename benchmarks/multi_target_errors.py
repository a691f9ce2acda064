"""Where does the multi-target score go? Runs a model on a ReasonSeg-format split's samples of
two or more targets and splits what the Hungarian score (`hungarian_multi_target_iou`) loses
into its parts, as a table.

The score is the matched IoUs' sum over max(#masks, #targets), so a sample's loss, 1 - score,
is a *count* part (the unmatched masks or targets, (max - min) / max) plus a *match* part (1 -
IoU of each matched pair, over max). Samples are grouped by whether the answer grounds fewer
masks than targets, as many, or more. Two kinds of mistake are counted apart:

- *merged*: a mask that covers at least half of each of two or more targets; *touching* when
  two of those targets lie within 2 pixels of each other, *one region* when the mask is one
  connected region (8-neighbour): what an instance split by regions cannot take apart;
- *wrong object*: a matched pair of IoU under 0.1.

    pixelreason world runs/rw --train 0 --val 0
    python benchmarks/multi_target_errors.py --model default --data runs/rw/test
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from pixelreason import Segmenter
from pixelreason.eval.evaluate import items_from_reasonseg
from pixelreason.eval.metrics import intersection_union, max_weight_assignment, sample_iou

#: A matched pair under this IoU is a mask on the wrong object.
WRONG_OBJECT = 0.1
#: Share of a target a mask must cover for the mask to hold it.
HOLDS = 0.5
#: Targets within this many pixels of each other touch.
TOUCH = 2
#: The table's rows: how many masks an answer grounds against its targets.
GROUPS = {
    "fewer": "fewer masks than targets",
    "equal": "as many masks as targets",
    "more": "more masks than targets",
    "none": "no mask",
}


@dataclass
class Breakdown:
    """Losses (summed over samples) and counts, by group: "fewer", "equal", "more"."""

    samples: collections.Counter[str] = field(default_factory=collections.Counter)
    count_loss: collections.Counter[str] = field(default_factory=collections.Counter)
    match_loss: collections.Counter[str] = field(default_factory=collections.Counter)
    mistakes: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, masks: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """Adds one sample (bool masks, uint8 0/1/255 targets); returns its score."""
        n, m = len(masks), len(targets)
        group = "none" if n == 0 else "fewer" if n < m else "more" if n > m else "equal"
        self.samples[group] += 1
        if n == 0:
            self.count_loss[group] += 1.0
            return 0.0
        ious = np.array([[sample_iou(*intersection_union(p, t)) for t in targets] for p in masks])
        pairs = max_weight_assignment(ious)
        matched = [ious[p, t] for p, t in pairs]
        self.count_loss[group] += (max(n, m) - min(n, m)) / max(n, m)
        self.match_loss[group] += sum(1.0 - iou for iou in matched) / max(n, m)
        self.mistakes["wrong object"] += sum(iou < WRONG_OBJECT for iou in matched)
        for mask in masks:
            self._merged(mask, [t == 1 for t in targets])
        return float(sum(matched) / max(n, m))

    def _merged(self, mask: np.ndarray, targets: list[np.ndarray]) -> None:
        held = [t for t in targets if t.any() and (mask & t).sum() >= HOLDS * t.sum()]
        if len(held) < 2:
            return
        self.mistakes["merged"] += 1
        near = np.ones((2 * TOUCH + 1,) * 2, bool)
        grown = [ndimage.binary_dilation(t, near) for t in held]
        if any((grown[a] & held[b]).any() for a in range(len(held)) for b in range(a)):
            self.mistakes["merged, touching"] += 1
        if ndimage.label(mask, structure=np.ones((3, 3), bool))[1] == 1:
            self.mistakes["merged, one region"] += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model name or directory")
    parser.add_argument("--data", default="runs/rw/test", help="a ReasonSeg-format split folder")
    parser.add_argument("--limit", type=int, default=None, help="at most this many samples")
    args = parser.parse_args(argv)
    items = [i for i in items_from_reasonseg(args.data) if len(i.targets) >= 2][: args.limit]
    if not items:
        parser.error(f"no samples of two or more targets in {args.data}")
    segmenter = Segmenter.from_pretrained(args.model)
    breakdown, scores = Breakdown(), []
    for item in tqdm(items, desc="samples"):
        segmenter.set_image(item.image)
        scores.append(breakdown.add(list(segmenter.segment(item.query).masks), item.targets))
    total = len(items)
    print(f"model: {args.model}; {total} samples of two or more targets in {args.data}")
    print(f"multi-target score: {np.mean(scores):.3f} (loss {total - sum(scores):.1f} of {total})")
    print("| answer grounds | samples | count loss | match loss |")
    print("| --- | --- | --- | --- |")
    for group, words in GROUPS.items():
        print(
            f"| {words} | {breakdown.samples[group]} "
            f"| {breakdown.count_loss[group]:.1f} | {breakdown.match_loss[group]:.1f} |"
        )
    print("| mistake | masks or pairs |")
    print("| --- | --- |")
    for name in ("merged", "merged, touching", "merged, one region", "wrong object"):
        print(f"| {name} | {breakdown.mistakes[name]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
