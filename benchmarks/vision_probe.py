"""Can the LLM see? Linear probes for each object's colour and category in the image tokens.

For generated ReasonWorld scenes, each object's feature is the coverage-weighted mean over the
vision tower's patch grid of (a) the projected image features the LLM reads and (b) the LLM's
hidden states at the image positions after each layer. A softmax-regression probe trained on
three quarters of the objects predicts the object's colour and its category on the rest. Two
references bound the numbers: the object's mean RGB (colour is nearly all there) and the same
probe on an untrained model of the same preset.

    python benchmarks/vision_probe.py --model default --model random:small

A model whose probes sit near the majority-class rate is answering from the text alone: the
names it writes come from the question and the facts, not from the image.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pixelreason.data.world import generate_scene
from pixelreason.prompting import Turn
from pixelreason.registry import load_model


def object_features(
    name: str, scenes: int, seed: int, min_area: int
) -> tuple[dict[str, list[torch.Tensor]], list[str], list[str], float]:
    """Per object: features by source, colours, categories; and the mean image-token norm."""
    model, _ = load_model(name)
    model.eval()
    backbone, size = model.backbone, model.config.backbone_image_size
    grid = backbone.grid_size
    cell = size // grid
    ids = model.preprocessor.encode([Turn("What is in the picture?")]).input_ids[None]
    image_positions = (ids[0] == backbone.image_token_id).nonzero().flatten()
    feats: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
    colours, categories, norms = [], [], []
    with torch.no_grad():
        for index in range(scenes):
            scene = generate_scene(np.random.default_rng([seed, index]), size=size)
            pixels = model.preprocessor.prepare_image(scene.image).backbone_pixels[None]
            tokens = backbone.encode_image(pixels)
            norms.append(float(tokens.norm(dim=-1).mean()))
            out = backbone.model(
                inputs_embeds=backbone.embed(ids, tokens),
                output_hidden_states=True,
                use_cache=False,
            )
            layers = [h[0, image_positions] for h in out.hidden_states[1:]]
            rgb = np.asarray(scene.image, dtype=np.float32) / 255
            for obj in scene.objects:
                if obj.area < min_area:
                    continue
                cover = obj.mask.reshape(grid, cell, grid, cell).mean(axis=(1, 3)).reshape(-1)
                weights = torch.from_numpy(cover / cover.sum()).float()
                feats["object mean RGB"].append(torch.from_numpy(rgb[obj.mask].mean(0)))
                feats["LLM input (image tokens)"].append(weights @ tokens[0])
                for layer, hidden in enumerate(layers, 1):
                    feats[f"LLM layer {layer}"].append(weights @ hidden)
                colours.append(obj.colour)
                categories.append(obj.category.name)
    return feats, colours, categories, float(np.mean(norms))


def probe_accuracy(features: Sequence[torch.Tensor], labels: Sequence[str], steps: int) -> float:
    """Held-out accuracy of a softmax regression on standardised features (last quarter)."""
    torch.manual_seed(0)
    x = torch.stack(list(features)).float()
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    train = int(0.75 * len(y))
    mean, std = x[:train].mean(0), x[:train].std(0) + 1e-5
    x = (x - mean) / std
    probe = torch.nn.Linear(x.shape[1], len(classes))
    optimiser = torch.optim.AdamW(probe.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(probe(x[:train]), y[:train]).backward()
        optimiser.step()
    with torch.no_grad():
        return float((probe(x[train:]).argmax(1) == y[train:]).float().mean())


def majority_rate(labels: Sequence[str]) -> float:
    train, test = labels[: int(0.75 * len(labels))], labels[int(0.75 * len(labels)) :]
    top = collections.Counter(train).most_common(1)[0][0]
    return sum(label == top for label in test) / len(test)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="model name or directory (repeatable)")
    parser.add_argument("--scenes", type=int, default=600, help="generated scenes (default 600)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-area", type=int, default=20, help="skip objects under N pixels")
    parser.add_argument("--steps", type=int, default=400, help="probe optimiser steps")
    args = parser.parse_args(argv)
    models = args.model or ["default", "random:small"]
    print("| model | image-token norm | features | colour acc | category acc |")
    print("|---|---|---|---|---|")
    for name in models:
        feats, colours, categories, norm = object_features(
            name, args.scenes, args.seed, args.min_area
        )
        for source, values in feats.items():
            colour = probe_accuracy(values, colours, args.steps)
            category = probe_accuracy(values, categories, args.steps)
            print(f"| {name} | {norm:.3g} | {source} | {colour:.3f} | {category:.3f} |")
        print(
            f"| {name} | | majority class | {majority_rate(colours):.3f} | "
            f"{majority_rate(categories):.3f} |"
        )
    print(
        f"\n{len(colours)} objects per model, {len(set(colours))} colours, "
        f"{len(set(categories))} categories; probes trained on 75%, scored on the rest."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
