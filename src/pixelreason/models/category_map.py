"""The category map: which category each pixel of an image belongs to.

The backbone's image tokens see a 128-pixel ReasonWorld image through a grid of patches, and
its probes (`pixelreason.models.probe`) miss small or half-covered objects: "the object that
grows on a branch" is answered "the red leaf <SEG>" for a small yellow leaf, and the mask
follows the colour word onto a red heart. `CategoryMap`, the object cuts' U-Net
(`pixelreason.models.objects.PixelNet`) with one output per category and one for the
background, reads the category of every pixel at the image's own resolution. It is trained
on fresh generated scenes, whose objects' visible pixels are known (`fit_world`, `pixelreason
fit-category-map`), and kept beside the model's weights (`FILE_NAME`). The segmenter uses it
to move a single target's mask that lies on no pixel of the category its answer names onto
one that does (`category_regions`, `ModelConfig.category_map`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pixelreason.errors import CheckpointError
from pixelreason.models.objects import PixelNet, fit_pixels

#: The map's file in a model directory.
FILE_NAME = "category_map.safetensors"
#: Channels of the network's first level.
CHANNELS = 32
#: Weight of the background's pixels in the cross-entropy (most of a scene is background).
BACKGROUND_WEIGHT = 0.3
#: A single target's mask stays where at least this share of its pixels are of its category.
KEEP_SHARE = 0.5
#: The map's regions of a category smaller than this many pixels, or this share of its
#: largest region, are stray pixels, not objects.
MIN_REGION = 12
MIN_REGION_SHARE = 0.1
#: A region the map is less sure of than this (its pixels' mean probability) is not moved to.
MIN_CONFIDENCE = 0.7
#: The same for a relation's candidates (`PixelReasonModel._mapped_candidates`).
CANDIDATE_CONFIDENCE = 0.7
_EIGHT = np.ones((3, 3), bool)


class CategoryMap(PixelNet):
    """`PixelNet` with one output for the background and one per category of `names`."""

    KIND = "category map"

    def __init__(self, names: Sequence[str], channels: int = CHANNELS) -> None:
        if not names:
            raise ValueError("a category map needs at least one category")
        super().__init__(channels, 1 + len(names))
        self.names = tuple(names)

    def class_id(self, name: str) -> int | None:
        """The class map's id of category `name` (1 + its index in `names`), or None."""
        return 1 + self.names.index(name) if name in self.names else None

    def class_map(self, pixels: np.ndarray) -> np.ndarray:
        """(h, w) int: 0 on background, 1 + the category's index in `names` elsewhere, for
        (h, w, 3) uint8 RGB pixels."""
        return self.read(pixels)[0]

    def read(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The class map of (h, w, 3) uint8 RGB pixels (`class_map`) and (h, w) float32 the
        probability the map gives each pixel's class."""
        probabilities = self.logits_of(pixels).softmax(dim=0)
        confidence, classes = probabilities.max(dim=0)
        return classes.numpy(), confidence.numpy()

    def _metadata(self) -> dict[str, str]:
        return {**super()._metadata(), "names": json.dumps(list(self.names))}

    def save(self, directory: str | Path) -> None:
        """Write `FILE_NAME` in `directory`, atomically."""
        self.save_file(Path(directory) / FILE_NAME)

    @classmethod
    def load(cls, path: str | Path) -> CategoryMap:
        """Read a file written by `save`; CheckpointError where it is not one."""
        metadata, tensors = cls._read(path)
        try:
            model = cls(json.loads(metadata["names"]), int(metadata["channels"]))
            model.load_state_dict(tensors)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read a category map from {path}: {exc}") from exc
        return model.eval()


def category_regions(
    mask: np.ndarray,
    classes: np.ndarray,
    target: int,
    keep_share: float | None = None,
    confidence: np.ndarray | None = None,
    least_confidence: float | None = None,
) -> list[np.ndarray]:
    """Where a single target's (H, W) bool `mask` should move: the regions (8-connected) of
    class `target` in the (H, W) int category map `classes`, largest first, that are at least
    `MIN_REGION` pixels and `MIN_REGION_SHARE` of the largest and, where the map's (H, W)
    `confidence` is given, whose pixels' mean confidence is `least_confidence` or more; empty
    where the mask stays (at least `keep_share` of it is of that class, or the map finds no
    such region). None: `KEEP_SHARE`, `MIN_CONFIDENCE`."""
    keep_share = KEEP_SHARE if keep_share is None else keep_share
    least_confidence = MIN_CONFIDENCE if least_confidence is None else least_confidence
    of_class = classes == target
    if mask.any() and (mask & of_class).sum() >= keep_share * mask.sum():
        return []
    labels, count = ndimage.label(of_class, structure=_EIGHT)
    if not count:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    least = max(MIN_REGION, MIN_REGION_SHARE * float(sizes.max()))
    regions = [labels == k + 1 for k in np.argsort(-sizes, kind="stable") if sizes[k] >= least]
    if confidence is None:
        return regions
    return [region for region in regions if confidence[region].mean() >= least_confidence]


def world_batch(
    rng: np.random.Generator, size: int, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` fresh ReasonWorld scenes: (count, 3, size, size) pixels in [0, 1] and their
    (count, size, size) long class maps (`Scene.semantic_map`: 0 background, 1 + the index in
    `CATEGORIES`)."""
    from pixelreason.data.world.scene import generate_scene

    images, maps = [], []
    for _ in range(count):
        scene = generate_scene(rng, size=size)
        images.append(np.asarray(scene.image.convert("RGB"), dtype=np.float32) / 255.0)
        maps.append(scene.semantic_map().astype(np.int64))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return pixels, torch.from_numpy(np.stack(maps))


def class_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, K, H, W) logits against (B, H, W) classes, the background's
    pixels weighted by `BACKGROUND_WEIGHT`."""
    weight = torch.ones(logits.shape[1], device=logits.device)
    weight[0] = BACKGROUND_WEIGHT
    return F.cross_entropy(logits, classes, weight=weight)


def class_scores(logits: torch.Tensor, classes: torch.Tensor) -> dict[str, float]:
    """The share of object pixels given their category, and of background pixels left
    background."""
    found = logits.argmax(dim=1)
    objects = classes > 0
    return {
        "objects": float((found == classes)[objects].float().mean()),
        "background": float((found == 0)[~objects].float().mean()),
    }


def fit_world(
    steps: int,
    *,
    batch: int = 16,
    size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    channels: int = CHANNELS,
    start: CategoryMap | None = None,
    progress: bool = True,
    snapshot: Callable[[CategoryMap, list[dict[str, float]]], None] | None = None,
) -> tuple[CategoryMap, list[dict[str, float]]]:
    """Train a `CategoryMap` over ReasonWorld's categories (or go on training `start`) for
    `steps` steps of `batch` fresh scenes, its first weights drawn from `seed`. Returns the
    model (in eval mode) and its history (`pixelreason.models.objects.fit_pixels`: loss, and
    the share of object and background pixels classed right on 64 held-out scenes);
    `snapshot(model, history)` is called at each point of the history."""
    from pixelreason.data.world.categories import CATEGORIES

    if start is not None:
        model = start
    else:
        with torch.random.fork_rng():  # the same seed, the same network
            torch.manual_seed(seed)
            model = CategoryMap([c.name for c in CATEGORIES], channels)
    history = fit_pixels(
        model, steps, world_batch, class_loss, class_scores,
        batch=batch, size=size, lr=lr, seed=seed, desc="category map", progress=progress,
        snapshot=None if snapshot is None else lambda history: snapshot(model, history),
    )  # fmt: skip
    return model, history
