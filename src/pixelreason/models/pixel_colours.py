"""Pixel colours: the colour of what a mask holds, read off the image's own pixels.

The colour probe (`pixelreason.models.presence`) reads "COLOUR CATEGORY" classes off the LLM's
8 x 8 grid of image features: a small object is a share of one cell, and two apples side by
side fall into the same cells. Once an answer's masks are final, the pixels inside each mask
say more: this reader keeps, for every "COLOUR CATEGORY" label, how often its objects' pixels
fall into each of `levels`^3 RGB bins (counted on scenes whose objects' colours and visible
pixels are known: ReasonWorld's, `fit_world`), and reads a mask as the mean log-likelihood of
its pixels under each label, each label's bins mixed with the background's (`mix`) so that
the few background pixels a mask takes in cost every label alike. Its reading (`read`) has the
layout of the colour probe's (`mask_names.read_masks`): column 0 the background, then one
column per label, the best label 1 and the others `exp` of their mean log-likelihood below it.

`ModelConfig.colour_pixels` makes mask names and the relations' "same colour" read colours
here rather than off the colour probe; the counts are kept beside the model's weights
(`FILE_NAME`, safetensors) and written by `pixelreason fit-colours`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from pixelreason.errors import CheckpointError
from pixelreason.utils.files import atomic_write_bytes

#: The reader's file in a model directory.
FILE_NAME = "pixel_colours.safetensors"
#: Quantisation levels per RGB channel: 8 gives 512 bins.
LEVELS = 8
#: The background's share in each label's mixture.
MIX = 0.3
#: Added to every bin's count before the counts become probabilities.
PRIOR = 0.5


def colour_bins(pixels: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """(h, w) int64 bin of each pixel of (h, w, 3) uint8 RGB pixels: `levels` per channel."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"pixel colours need (h, w, 3) uint8 RGB pixels, got {pixels.shape}")
    q = pixels.astype(np.int64) * levels // 256
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


@dataclass
class PixelColours:
    """Per "COLOUR CATEGORY" label, its objects' pixel counts per RGB bin (`counts` (L, B)),
    and the background's (`background` (B,)); `add` counts, `read` reads masks."""

    labels: list[str]
    levels: int = LEVELS
    mix: float = MIX
    counts: torch.Tensor = field(default=None)  # type: ignore[assignment]
    background: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        bins = self.levels**3
        if self.counts is None:
            self.counts = torch.zeros(len(self.labels), bins, dtype=torch.float64)
        if self.background is None:
            self.background = torch.zeros(bins, dtype=torch.float64)
        if tuple(self.counts.shape) != (len(self.labels), bins) or self.background.shape != (bins,):
            raise ValueError(
                f"pixel colour counts {tuple(self.counts.shape)} / "
                f"{tuple(self.background.shape)} do not fit {len(self.labels)} labels x "
                f"{bins} bins"
            )
        if not 0.0 <= self.mix < 1.0:
            raise ValueError(f"pixel colour mix must be in [0, 1), got {self.mix}")
        self._log_probs: torch.Tensor | None = None

    def add(self, pixels: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[int]) -> None:
        """Count one image's (h, w, 3) uint8 pixels: each (h, w) bool mask's under its label
        (an index into `labels`), the pixels outside every mask as the background's."""
        bins = colour_bins(pixels, self.levels)
        size = self.levels**3
        outside = np.ones(bins.shape, bool)
        for mask, label in zip(masks, labels, strict=True):
            self.counts[label] += torch.from_numpy(np.bincount(bins[mask], minlength=size))
            outside &= ~mask
        self.background += torch.from_numpy(np.bincount(bins[outside], minlength=size))
        self._log_probs = None

    def log_probs(self) -> torch.Tensor:
        """(L, B) float32: each label's log-probability of each bin, mixed with the
        background's."""
        if self._log_probs is None:
            own = self.counts + PRIOR
            own = own / own.sum(1, keepdim=True)
            background = (self.background + PRIOR) / (self.background + PRIOR).sum()
            mixed = (1 - self.mix) * own + self.mix * background
            self._log_probs = mixed.log().float()
        return self._log_probs

    def read(self, pixels: np.ndarray, masks: torch.Tensor) -> torch.Tensor:
        """(n, 1 + L): what each mask ((n, H, W) over the whole image, > 0 inside; scaled to
        the pixels' size by nearest neighbour) holds, in the colour probe's layout: column 0
        (the background) 0, then per label exp(its mean log-likelihood - the best's); a row
        of zeros for an empty mask."""
        bins = torch.from_numpy(colour_bins(pixels, self.levels)).reshape(-1)
        inside = (masks > 0).float()
        if inside.shape[-2:] != pixels.shape[:2]:
            inside = F.interpolate(inside[:, None], size=pixels.shape[:2], mode="nearest")[:, 0]
        inside = inside.reshape(len(inside), -1)
        hist = torch.zeros(len(inside), self.levels**3).index_add_(1, bins, inside)
        total = hist.sum(1, keepdim=True)
        mean = hist @ self.log_probs().T / total.clamp(min=1)
        read = (mean - mean.max(1, keepdim=True).values).exp() * (total > 0)
        return torch.cat([torch.zeros(len(read), 1), read], 1)

    def save(self, directory: str | Path) -> None:
        """Write `FILE_NAME` in `directory`, atomically."""
        metadata = {"labels": json.dumps(self.labels), "levels": str(self.levels)}
        metadata["mix"] = str(self.mix)
        tensors = {"counts": self.counts.float(), "background": self.background.float()}
        atomic_write_bytes(Path(directory) / FILE_NAME, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> PixelColours:
        """Read a file written by `save`; CheckpointError where it is not one."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
            return cls(
                labels=[str(label) for label in json.loads(metadata["labels"])],
                levels=int(metadata["levels"]),
                mix=float(metadata["mix"]),
                counts=tensors["counts"].double(),
                background=tensors["background"].double(),
            )
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"cannot read pixel colours from {path}: {exc}") from exc


def fit_world(
    labels: Sequence[str],
    scenes: int,
    seed: int = 0,
    size: int = 128,
    *,
    progress: bool = True,
) -> PixelColours:
    """A reader counted on `scenes` ReasonWorld scenes (training-stream randomness from
    `seed`): each object's visible pixels under its "COLOUR CATEGORY" label; `labels` must
    be ReasonWorld's (`categories.colour_labels()`, the bundled models' colour probe labels)."""
    from pixelreason.data.world.scene import generate_scene

    index = {label: k for k, label in enumerate(labels)}
    reader = PixelColours(list(labels))
    rng = np.random.default_rng([seed, 7919])
    for _ in tqdm(range(scenes), desc="pixel colours", unit="scene", disable=not progress):
        scene = generate_scene(rng, size=size)
        objects = [o for o in scene.objects if o.mask.any()]
        names = [f"{o.colour} {o.category.name}" for o in objects]
        missing = sorted({name for name in names if name not in index})
        if missing:
            raise ValueError(f"labels lack ReasonWorld's {', '.join(missing[:3])}")
        pixels = np.asarray(scene.image.convert("RGB"), dtype=np.uint8)
        reader.add(pixels, [o.mask for o in objects], [index[name] for name in names])
    return reader
