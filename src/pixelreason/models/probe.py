"""Auxiliary dense supervision of the two image encoders ("vision probes").

The papers start from CLIP and SAM pretrained on hundreds of millions of images; we train both
encoders from scratch on a few thousand generated scenes, where the answer and mask losses
alone teach them to see slowly. When a sample carries its scene's class map
(`SegSample.semantic`), a linear classifier on each encoder's output grid predicts the share of
every class in each cell: one on the projected image features the LLM reads, one on the mask
head's image embedding (SAM heads). Its soft cross-entropy is the `probe` loss term (weight 0
unless a recipe sets it). The *presence* loss (weight `presence`, in `task: probe` and `task:
pretrain` recipes) trains what the presence check reads: for every class, its highest
probability over the cells, against whether the image shows it at all (binary cross-entropy,
multiple-instance style). A cell-share target alone leaves a small object's class well below
any threshold in every cell, since it covers little of each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelreason.processing import ImageInputs


class VisionProbe(nn.Module):
    """Linear per-cell classifiers over `classes` classes (0 = background)."""

    def __init__(self, classes: int, backbone_dim: int, head_dim: int | None) -> None:
        super().__init__()
        self.classes = classes
        self.backbone = nn.Linear(backbone_dim, classes)
        self.head = nn.Conv2d(head_dim, classes, 1) if head_dim else None

    def loss(
        self,
        features: torch.Tensor,
        context: object,
        semantic: Sequence[torch.Tensor],
        images: Sequence[ImageInputs],
        head_size: int,
    ) -> torch.Tensor:
        """features (B, N, D): the LLM's image features, N = g * g (a leading class token, if
        any, is skipped); context: the head's image context, probed if it is a (B, C, h, w)
        map; semantic: per item (H, W) class ids; head_size: side of the head's padded input.
        Returns the mean soft cross-entropy over all probed cells."""
        logits, target = self.cell_logits(features, semantic)
        losses = [_soft_ce(logits, target, torch.ones_like(target[:, 0], dtype=torch.bool))]
        if self.head is not None and isinstance(context, torch.Tensor) and context.dim() == 4:
            side = context.shape[-1]
            cells, valid = [], []
            for s, image in zip(semantic, images, strict=True):
                # SAM's frame: resized to `head_resized_size`, padded bottom-right to head_size.
                height, width = image.head_resized_size or s.shape[-2:]
                pooled = self._shares(s, side, (height, width), head_size)
                cells.append(pooled)
                valid.append(pooled.sum(0) > 0.5)
            target = torch.stack(cells)
            logits = self.head(context)
            losses.append(_soft_ce(logits, target, torch.stack(valid)))
        return torch.stack(losses).mean()

    def presence(self, features: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C - 1): each non-background class's highest probability over the backbone
        probe's cells of features (B, N, D); with a mask-head probe and its image embedding
        `context` (B, C', h, w), the mean of that and the same over the head probe's finer grid."""
        return torch.stack(self._highest(features, context)).mean(0)

    def strongest(
        self, features: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C - 1): each non-background class's highest probability in the probed part that
        reads it most (the backbone probe's cells, or with `context` the mask-head probe's):
        `presence` averages the parts, so a class one part sees and the other misses reads
        half as much there."""
        return torch.stack(self._highest(features, context)).amax(0)

    def presence_loss(
        self,
        features: torch.Tensor,
        context: torch.Tensor | None,
        semantic: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Mean binary cross-entropy of each non-background class's highest cell probability
        against whether the (H, W) class map shows it, for the backbone probe and (with
        `context`) the mask-head probe."""
        shown = torch.stack(
            [
                torch.bincount(s.long().flatten(), minlength=self.classes)[1 : self.classes] > 0
                for s in semantic
            ]
        ).float()
        found = self._highest(features, context)
        losses = [F.binary_cross_entropy(f.clamp(1e-6, 1 - 1e-6), shown) for f in found]
        return torch.stack(losses).mean()

    def _highest(self, features: torch.Tensor, context: torch.Tensor | None) -> list[torch.Tensor]:
        """Per probed part, (B, C - 1): each non-background class's highest cell probability;
        the backbone part over the last g * g of features (B, N, D) (a class token is
        skipped), then the mask-head part over context (B, C', h, w) when both are there."""
        grid = int(round(features.shape[1] ** 0.5))
        logits = self.backbone(features[:, -grid * grid :].float())
        found = [logits.softmax(-1).amax(1)[:, 1:]]
        if self.head is not None and context is not None:
            found.append(self.head(context.float()).softmax(1).flatten(2).amax(2)[:, 1:])
        return found

    def cell_logits(
        self, features: torch.Tensor, semantic: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone probe's logits (B, C, g, g) over the grid of features (B, N, D) and the
        class shares (B, C, g, g) of each cell in the (H, W) class maps."""
        grid = int(round((features.shape[1]) ** 0.5))
        tokens = features[:, -grid * grid :]
        # The backbone sees the whole image resized to a square: each map's shares per cell.
        target = torch.stack([self._shares(s, grid) for s in semantic])
        logits = self.backbone(tokens).transpose(1, 2).reshape(target.shape)
        return logits, target

    def _shares(
        self,
        semantic: torch.Tensor,
        side: int,
        resized: tuple[int, int] | None = None,
        padded: int | None = None,
    ) -> torch.Tensor:
        """(C, side, side) class shares of the cells of an (H, W) class map resized by area to
        `resized` (height, width), zero-padded bottom-right to a `padded` square and average-
        pooled to side x side (default: no resize, no padding). Each pixel of class c adds
        rows[i, y] * cols[j, x] to cell (i, j) of channel c, with the separable per-axis weights
        of `_area_weights`: the (C, H, W) one-hot map is never built."""
        semantic = semantic.long().clamp(0, self.classes - 1)
        height, width = semantic.shape
        new_height, new_width = resized or (height, width)
        rows = _area_weights(height, new_height, padded or new_height, side, semantic.device)
        cols = _area_weights(width, new_width, padded or new_width, side, semantic.device)
        y = torch.arange(height, device=semantic.device)[:, None]
        per_row = cols.new_zeros(self.classes * height, side)
        # Row (c, y) sums cols[:, x] over the pixels (y, x) of class c.
        per_row.index_add_(
            0,
            (semantic * height + y).flatten(),
            cols.T[None].expand(height, width, -1).reshape(-1, side),
        )
        return torch.einsum("iy,cyj->cij", rows, per_row.view(self.classes, height, side))


def _area_weights(
    size: int, resized: int, padded: int, side: int, device: torch.device | str
) -> torch.Tensor:
    """(side, size): how much of each pixel along one axis of `size` reaches each of `side`
    cells when the axis is resized to `resized` by area, zero-padded at the end to `padded`
    and average-pooled to `side` (both steps are `adaptive_avg_pool`, separable by axis)."""
    axis = torch.eye(size, device=device)[None]
    axis = F.adaptive_avg_pool1d(axis, resized)
    axis = F.pad(axis, (0, padded - resized))
    return F.adaptive_avg_pool1d(axis, side)[0].T


def _soft_ce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (B, C, h, w) against class shares target (B, C, h, w) over the
    valid cells (B, h, w), normalised by each cell's total share."""
    share = target / target.sum(1, keepdim=True).clamp(min=1e-6)
    per_cell = -(share * F.log_softmax(logits.float(), dim=1)).sum(1)
    return per_cell[valid].mean() if bool(valid.any()) else logits.sum() * 0.0
