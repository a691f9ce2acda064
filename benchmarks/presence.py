"""How well a model's vision probe tells which ReasonWorld categories an image shows: the signal
of the presence check (`pixelreason.models.presence`).

For fresh test scenes, a category counts as found when the backbone probe gives it probability
>= T in some grid cell; the table gives, per threshold T, the share of the categories in the
scene that are found (recall) and the categories found that are not there, per scene.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from pixelreason.data.world import CATEGORIES
from pixelreason.data.world.samples import generate_sample
from pixelreason.models.presence import class_presence
from pixelreason.registry import load_model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--scenes", type=int, default=300, help="test scenes (default 300)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, description = load_model(args.model)
    if model.probe is None or len(model.config.probe_labels) != len(CATEGORIES):
        parser.error(f"{description} has no probe over ReasonWorld's categories")
    scores, truth = [], []
    for index in range(args.scenes):
        sample = generate_sample(0, "test", index)
        cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
        with torch.no_grad():
            scores.append(class_presence(model.probe, cache.features)[0].numpy())
        shown = np.zeros(len(CATEGORIES), dtype=bool)
        for obj in sample.scene.objects:
            shown[CATEGORIES.index(obj.category)] = True
        truth.append(shown)
    found, shown = np.stack(scores), np.stack(truth)
    print(f"{description}: {args.scenes} test scenes, {shown.sum(1).mean():.1f} categories each")
    print("| threshold | recall | found but absent, per scene |\n|---|---|---|")
    for threshold in args.thresholds:
        hit = found >= threshold
        recall = (hit & shown).sum() / shown.sum()
        false = (hit & ~shown).sum() / args.scenes
        print(f"| {threshold:g} | {recall:.3f} | {false:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
