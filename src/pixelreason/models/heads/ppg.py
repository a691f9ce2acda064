"""PPG training targets (SAM4MLLM's prompt-point generation) and SAM's prompt frame.

For each ground-truth mask, K groups of points are sampled (n1 inside the mask, n2 outside it
but inside its box where possible); SAM decodes box + points of all K groups in one batched
call on the image's cached embedding, and the group whose mask best overlaps the ground truth
becomes the text the LLM learns to write (k = 1). Everything is in grid coordinates as soon as
it is sampled, so SAM scores exactly the prompts the text will carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from pixelreason.data.schema import IGNORE_VALUE
from pixelreason.models.heads.text_prompts import (
    GRID,
    TextPrompt,
    box_to_grid,
    grid_point_to_pixels,
)
from pixelreason.processing import ImageInputs


class PromptDecoder(Protocol):
    """What PPG needs of SAM (`pixelreason.models.sam.SamDecoder`)."""

    @property
    def image_size(self) -> int: ...

    def prompt(
        self,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def decode(
        self, image_embeddings: torch.Tensor, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class PromptFrame:
    """Where an image lies in SAM's padded square input: resized to (h, w) and padded
    bottom-right. Grid coordinates are relative to the image, so (h, w) is all it takes."""

    resized: tuple[int, int]

    @classmethod
    def of(cls, image: ImageInputs) -> PromptFrame:
        if image.head_resized_size is None:
            raise ValueError("SAM prompts need the image's size inside SAM's input")
        return cls((int(image.head_resized_size[0]), int(image.head_resized_size[1])))

    def _scale(self, device: torch.device) -> torch.Tensor:
        """SAM input pixels per grid cell, (x, y)."""
        height, width = self.resized
        return torch.tensor([width / GRID, height / GRID], device=device)

    def points(self, grid: torch.Tensor) -> torch.Tensor:
        """Grid points (..., 2) -> SAM input coordinates (..., 2) of the cells' centres.

        SAM's prompt encoder adds half a pixel (it takes pixel indices), so it is taken off.
        """
        return (grid.float() + 0.5) * self._scale(grid.device) - 0.5

    def boxes(self, grid: torch.Tensor) -> torch.Tensor:
        """Grid boxes (..., 4), inclusive corner cells -> SAM input (x0, y0, x1, y1) edges."""
        scale = self._scale(grid.device).repeat(2)
        edges = grid.float() + torch.tensor([0.0, 0.0, 1.0, 1.0], device=grid.device)
        return edges * scale - 0.5


@dataclass(frozen=True)
class PointGroups:
    """K candidate prompts for one mask, in grid coordinates.

    box: the mask's box; points (K, n, 2) with labels (n,) (n1 ones, then n2 zeros).
    """

    box: tuple[int, int, int, int]
    points: torch.Tensor
    labels: torch.Tensor

    def prompt(self, group: int) -> TextPrompt:
        points = tuple((int(x), int(y)) for x, y in self.points[group].tolist())
        return TextPrompt(box=self.box, points=points, labels=tuple(self.labels.tolist()))


def _pixel_grid(
    coordinates: np.ndarray, size: tuple[int, int], index: torch.Tensor
) -> torch.Tensor:
    """Grid cells (..., 2) of the centres of pixels `coordinates[index]` ((P, 2) as (x, y))."""
    height, width = size
    picked = torch.from_numpy(coordinates)[index].double() + 0.5  # (..., 2)
    extent = torch.tensor([width, height], dtype=torch.float64)
    return torch.floor(picked * GRID / extent).long().clamp(0, GRID - 1)


def sample_point_groups(
    mask: np.ndarray,
    groups: int,
    generator: torch.Generator,
    *,
    positives: int = 2,
    negatives: int = 1,
) -> PointGroups | None:
    """K = `groups` groups of points for a uint8 mask (H, W) (1 target, 0 background, 255
    ignore), or None when the mask has no target pixel.

    Positives are target pixels; negatives are background pixels inside the mask's box, or
    anywhere when the mask fills its box, and there are none when the whole image is target.
    Pixels are drawn uniformly with replacement (a one-pixel mask repeats its pixel); ignored
    pixels are never drawn. For images up to 1000 px a side every point's grid cell centre
    lies in the pixel it was drawn from.
    """
    target = mask == 1
    if not target.any():
        return None
    size = (int(mask.shape[0]), int(mask.shape[1]))
    ys, xs = np.nonzero(target)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    background = mask == 0
    in_box = np.zeros_like(background)
    in_box[y0:y1, x0:x1] = True
    pool = background & in_box
    if not pool.any():
        pool = background
    negatives = negatives if pool.any() else 0
    inside = np.stack([xs, ys], axis=1)
    index = torch.randint(len(inside), (groups, positives), generator=generator)
    parts = [_pixel_grid(inside, size, index)]
    if negatives:
        ny, nx = np.nonzero(pool)
        outside = np.stack([nx, ny], axis=1)
        index = torch.randint(len(outside), (groups, negatives), generator=generator)
        parts.append(_pixel_grid(outside, size, index))
    labels = torch.tensor([1] * positives + [0] * negatives, dtype=torch.long)
    return PointGroups(box_to_grid((x0, y0, x1, y1), size), torch.cat(parts, dim=1), labels)


def mask_value(mask: np.ndarray, point: Sequence[int]) -> int:
    """The uint8 mask's value at the pixel holding a grid cell's centre."""
    height, width = mask.shape
    x, y = grid_point_to_pixels(point, (height, width))
    return int(mask[min(int(y), height - 1), min(int(x), width - 1)])


def mask_coverage(
    mask: np.ndarray, frame: PromptFrame, input_size: int, side: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uint8 mask (H, W) as seen in SAM's low-resolution output (side x side) of a padded
    `input_size` input: the fraction of each cell that is target, and that is not ignored."""
    height = max(int(round(frame.resized[0] * side / input_size)), 1)
    width = max(int(round(frame.resized[1] * side / input_size)), 1)
    planes = torch.from_numpy(np.stack([mask == 1, mask != IGNORE_VALUE])).float()[None]
    small = F.interpolate(planes.to(device), (height, width), mode="area")[0]
    padded = small.new_zeros((2, side, side))
    padded[:, : small.shape[1], : small.shape[2]] = small[:, :side, :side]
    return padded[0], padded[1]


def soft_iou(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks (K, s, s) with a fractional target (s, s), counting only the valid
    fraction of each cell: |P∩T| / |P∩V ∪ T|. Returns (K,)."""
    predicted = predicted.float()
    intersection = (predicted * target).flatten(1).sum(1)
    union = (predicted * valid + target - predicted * target).flatten(1).sum(1)
    return intersection / union.clamp(min=1e-6)


@dataclass(frozen=True)
class PpgChoice:
    """The chosen prompt and the IoU with the ground truth of every candidate group (K,)."""

    prompt: TextPrompt
    ious: torch.Tensor
    best: int


def select_point_group(
    decoder: PromptDecoder,
    embedding: torch.Tensor | None,
    mask: np.ndarray,
    frame: PromptFrame,
    generator: torch.Generator,
    *,
    groups: int = 64,
    positives: int = 2,
    negatives: int = 1,
) -> PpgChoice | None:
    """PPG for one mask: sample `groups` candidates, decode all of them in ONE SAM call on the
    image's embedding (1, C, h, w), keep the one with the highest IoU with the mask (the first
    on ties). None when the mask has no target pixel. A single group is returned unscored
    (then `embedding` may be None)."""
    candidates = sample_point_groups(
        mask, groups, generator, positives=positives, negatives=negatives
    )
    if candidates is None:
        return None
    if groups == 1:
        return PpgChoice(candidates.prompt(0), torch.zeros(1), 0)
    if embedding is None:
        raise ValueError("scoring several point groups needs the image's SAM embedding")
    device = embedding.device
    with torch.no_grad():
        boxes = frame.boxes(torch.tensor(candidates.box, device=device)).expand(groups, 4)
        points = frame.points(candidates.points.to(device))
        labels = candidates.labels.to(device).expand(groups, -1)
        sparse = decoder.prompt(points, labels, boxes)
        logits, _ = decoder.decode(embedding.expand(groups, -1, -1, -1), sparse)
        target, valid = mask_coverage(mask, frame, decoder.image_size, logits.shape[-1], device)
        ious = soft_iou(logits > 0, target, valid).cpu()
    best = int(torch.argmax(ious))
    return PpgChoice(candidates.prompt(best), ious, best)
