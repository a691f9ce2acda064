"""How well a model's vision probe tells which ReasonWorld categories an image shows: the signal
of the presence check (`pixelreason.models.presence`).

For fresh test scenes, a category counts as found when the backbone probe gives it probability
>= T in some grid cell; the table gives, per threshold T, the share of the categories in the
scene that are found (recall) and the categories found that are not there, per scene. For a
model with a colour probe (the colour check's signal), a second table does the same for the
"COLOUR CATEGORY" pairs of the categories each scene shows: the pairs there that are found, and
the other colours of those categories found though no object has them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from pixelreason.data.world import CATEGORIES
from pixelreason.data.world.categories import colour_labels
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
    labels = model.config.colour_probe_labels
    colour = model.colour_probe is not None and labels == colour_labels()
    scores, truth, pair_scores, pair_truth, pair_scope = [], [], [], [], []
    for index in range(args.scenes):
        sample = generate_sample(0, "test", index)
        cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
        with torch.no_grad():
            scores.append(class_presence(model.probe, cache.features)[0].numpy())
            if colour:
                pair_scores.append(class_presence(model.colour_probe, cache.features)[0].numpy())
        shown = np.zeros(len(CATEGORIES), dtype=bool)
        pairs = np.zeros(len(labels), dtype=bool)
        for obj in sample.scene.objects:
            shown[CATEGORIES.index(obj.category)] = True
            if colour:
                pairs[labels.index(f"{obj.colour} {obj.category.name}")] = True
        truth.append(shown)
        pair_truth.append(pairs)
        names = {CATEGORIES[i].name for i in np.flatnonzero(shown)}
        pair_scope.append(np.array([label.split(" ", 1)[1] in names for label in labels]))
    print(
        f"{description}: {args.scenes} test scenes, {np.sum(truth, 1).mean():.1f} categories each"
    )
    _table(np.stack(scores), np.stack(truth), None, args.thresholds, "categories")
    if colour:
        _table(
            np.stack(pair_scores),
            np.stack(pair_truth),
            np.stack(pair_scope),
            args.thresholds,
            "colour-category pairs of the categories shown",
        )
    return 0


def _table(
    found: np.ndarray,
    shown: np.ndarray,
    scope: np.ndarray | None,
    thresholds: Sequence[float],
    what: str,
) -> None:
    """Recall and false finds per scene, per threshold, of scores `found` against `shown`
    (scenes x classes), counting only the classes in `scope` when given."""
    scope = np.ones_like(shown) if scope is None else scope
    print(f"\n{what}\n| threshold | recall | found but absent, per scene |\n|---|---|---|")
    for threshold in thresholds:
        hit = (found >= threshold) & scope
        recall = (hit & shown).sum() / shown.sum()
        false = (hit & ~shown).sum() / len(found)
        print(f"| {threshold:g} | {recall:.3f} | {false:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
