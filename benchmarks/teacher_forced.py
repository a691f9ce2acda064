"""Teacher-forced mask IoU per data source: how good a model's masks are when the answer is
given (so the LLM's choice of words is taken out), on fresh ReasonWorld training-mix samples.

    python benchmarks/teacher_forced.py [--model default] [--samples 64] [--seed 5]

Prints one row per source (sem_seg: "segment the X"; refer: explicit and spatial; reason: the
reasoning kinds) with the mean IoU of the thresholded masks over all their targets.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.registry import load_model


def mask_ious(model, source: str, samples: int, seed: int, batch: int = 8) -> list[float]:
    mixture = WorldMixture(MixConfig(rates={source: 1}, seed=seed))
    ious = []
    for start in range(0, samples, batch):
        collated = model.collate([mixture(i) for i in range(start, min(start + batch, samples))])
        _, prediction = model.teacher_forced(collated)
        for logits, image, targets in zip(
            prediction.logits, collated.images, collated.masks, strict=True
        ):
            if logits.shape[0] == 0:
                continue
            masks = model.preprocessor.masks_to_image(logits, image) > 0
            for mask, target in zip(masks, targets, strict=True):
                target = target == 1
                union = int((mask | target).sum())
                ious.append(int((mask & target).sum()) / union if union else 1.0)
    return ious


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")[0]
    print(f"| source | masks | teacher-forced mean IoU ({args.model}) |\n|---|---|---|")
    with torch.no_grad():
        for source in ("sem_seg", "refer", "reason"):
            ious = mask_ious(model, source, args.samples, args.seed)
            print(f"| {source} | {len(ious)} | {np.mean(ious):.3f} |")


if __name__ == "__main__":
    main()
