"""How well a category map (`pixelreason.models.category_map`) reads ReasonWorld's objects.

On fresh scenes (a seed no fit uses), an object counts as found when most of its visible
pixels are given its category, and a category counts as found in a scene when the map has a
region of it (`category_regions`: at least `MIN_REGION` pixels; and with the confidence
floor the segmenter uses, `MIN_CONFIDENCE`). The tables give the objects
found, by their visible area, and per scene the categories found that the scene shows
(recall) and those found that it does not show (false ones), beside the vision probe's
presence at the presence check's threshold (`benchmarks/presence.py`) for the same scenes.

    python benchmarks/category_map.py --map path/to/category_map.safetensors
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from pixelreason.data.world import CATEGORIES
from pixelreason.data.world.scene import generate_scene
from pixelreason.models.category_map import (
    FILE_NAME,
    MIN_CONFIDENCE,
    CategoryMap,
    category_regions,
)
from pixelreason.models.presence import class_presence
from pixelreason.registry import BUNDLED_MODELS_DIR, load_model

AREAS = (0, 100, 200, 400, 800, 10**9)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", default=str(BUNDLED_MODELS_DIR / "default" / FILE_NAME))
    parser.add_argument("--model", default="default", help="the model whose probe to compare")
    parser.add_argument("--scenes", type=int, default=200, help="fresh scenes (default 200)")
    parser.add_argument("--seed", type=int, default=999, help="scene seed (default 999)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    net = CategoryMap.load(args.map)
    model, _ = load_model(args.model)
    from pixelreason.api import encode_image

    names = [c.name for c in CATEGORIES]
    rng = np.random.default_rng([args.seed, 31])
    found_by_area = np.zeros((len(AREAS) - 1, 2))
    counts = {
        "map": [0, 0, 0],
        "sure": [0, 0, 0],
        "probe": [0, 0, 0],
    }  # found there, shown, found not there
    for _ in range(args.scenes):
        scene = generate_scene(rng, size=128)
        pixels = np.asarray(scene.image.convert("RGB"))
        classes, confidence = net.read(pixels)
        shown = {obj.category.name for obj in scene.objects if obj.mask.any()}
        for obj in scene.objects:
            area = int(obj.mask.sum())
            if not area:
                continue
            wanted = 1 + net.names.index(obj.category.name)
            bucket = int(np.searchsorted(AREAS, area, side="right")) - 1
            found_by_area[bucket] += (float((classes[obj.mask] == wanted).mean() > 0.5), 1)
        empty = np.zeros(classes.shape, bool)
        mapped = {n for k, n in enumerate(net.names) if category_regions(empty, classes, k + 1)}
        sure = {
            n
            for k, n in enumerate(net.names)
            if category_regions(empty, classes, k + 1, confidence=confidence)
        }
        cache = encode_image(model, scene.image)
        presence = class_presence(model.probe, cache.features, cache.context)[0]
        threshold = model.config.presence_threshold
        probed = {model.config.probe_labels[c][0] for c, p in enumerate(presence) if p >= threshold}
        for key, found in (("map", mapped), ("sure", sure), ("probe", probed)):
            counts[key][0] += len(found & shown)
            counts[key][1] += len(shown)
            counts[key][2] += len(found - shown)
    print(f"{args.scenes} fresh scenes (seed {args.seed}), map {args.map}\n")
    print("| visible area (px) | objects | found by the map |\n|---|---|---|")
    for k in range(len(AREAS) - 1):
        hits, total = found_by_area[k]
        upper = "" if AREAS[k + 1] >= 10**9 else str(AREAS[k + 1] - 1)
        share = f"{hits / total:.3f}" if total else "-"
        print(f"| {AREAS[k]}-{upper} | {int(total)} | {share} |")
    hits, total = found_by_area.sum(axis=0)
    print(f"| all | {int(total)} | {hits / total:.3f} |\n")
    print("| reader | categories shown found | false categories per scene |\n|---|---|---|")
    for key, (hit, shown_total, false) in counts.items():
        label = {
            "map": "category map",
            "sure": f"category map, regions of mean probability >= {MIN_CONFIDENCE}",
            "probe": f"vision probe (>= {threshold})",
        }[key]
        print(f"| {label} | {hit / shown_total:.3f} | {false / args.scenes:.2f} |")
    assert len(names) == len(net.names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
