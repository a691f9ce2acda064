"""How do answers misname their target? Reads an eval report of a ReasonWorld split.

Each single-target sample's scene is regenerated from its id (generation is deterministic by
seed), and the answer is sorted by what it got wrong: the category (the last word of the
target's name) or, with the category right, the colour, and then where the wrong colour came
from: another object of the same category, another object in the scene, or nowhere in the
scene (a colour the LLM did not read off the image).

    pixelreason eval default runs/rw --split test --out runs/eval
    python benchmarks/naming_errors.py runs/eval/report.json
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixelreason.data.world import CATEGORIES
from pixelreason.data.world.samples import WorldSample, generate_sample

COLOURS = sorted({colour for category in CATEGORIES for colour in category.colours})


def classify(answer: str, sample: WorldSample) -> str:
    """The kind of naming the answer does for the sample's single target."""
    name = sample.target_names[0]
    answer = answer.lower()
    if name in answer:
        return "exact name"
    if name.split()[-1] not in answer:
        return "wrong category"
    target = next(o for o in sample.scene.objects if np.array_equal(o.mask, sample.target_masks[0]))
    said = [c for c in COLOURS if re.search(rf"\b{c}\b", answer)]
    if not said or said[0] == target.colour:
        return "right category and colour, other words"
    others = [o for o in sample.scene.objects if o is not target]
    if said[0] in {o.colour for o in others if o.category is target.category}:
        return "colour of another object of its category"
    if said[0] in {o.colour for o in others}:
        return "colour of another object in the scene"
    return "colour of no object in the scene"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="report.json of `pixelreason eval` on a ReasonWorld split")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    counts: collections.Counter[str] = collections.Counter()
    for row in report["samples"]:
        if row["num_gt"] != 1:
            continue
        split, seed, index = row["id"].rsplit("_", 2)
        sample = generate_sample(int(seed), split, int(index))
        counts[classify(row["answer"], sample)] += 1
    total = sum(counts.values())
    print(f"{args.report}: {total} single-target samples\n")
    print("| naming | share | count |\n|---|---|---|")
    for kind, count in counts.most_common():
        print(f"| {kind} | {count / total:.3f} | {count} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
