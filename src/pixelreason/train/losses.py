"""Training losses as pure functions (LISA: text CE + mask BCE + DICE; PixelLLM: + point L1;
SAM: + the MSE of its predicted IoU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixelreason.processing import IGNORE_INDEX


@dataclass(frozen=True)
class LossWeights:
    """L = text * CE + mask * (bce * BCE + dice * DICE) + refine * REFINE + point * POINT
    + score * SCORE; defaults are LISA's (PixelLM adds its target refinement loss with
    `refine` > 0, PixelLLM its per-word location L1 with `point` > 0). `score` > 0 trains a SAM
    head's IoU prediction as SAM does (MSE against the IoU its mask really reaches); LISA
    leaves it untrained, so its scores mean nothing unless a recipe turns this on.

    A head's own terms (`MaskPrediction.losses`) are weighted by the field of the same name.
    """

    text: float = 1.0
    mask: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    refine: float = 0.0
    point: float = 0.0
    score: float = 0.0
    #: Auxiliary vision probes (`pixelreason.models.probe`); 0 (off) in the papers' recipes.
    probe: float = 0.0
    #: The probes' image-level presence loss (`VisionProbe.presence_loss`); `task: probe` and
    #: `task: pretrain` recipes only.
    presence: float = 0.0


def text_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy. logits (B, T, V), labels (B, T) with IGNORE_INDEX off answers.

    Position t predicts labels[t + 1]. Returns 0 (with a graph) when nothing is supervised.
    """
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    if not bool((shifted_labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX)


def mask_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-mask mean binary cross-entropy over valid pixels.

    logits, target (0/1), valid (bool): (N, H, W). Returns (N,). A mask with no valid pixel
    scores 0.
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    valid = valid.float()
    return (per_pixel * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1.0)


def mask_dice(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1.0
) -> torch.Tensor:
    """Per-mask soft DICE loss 1 - (2|P∩T| + eps) / (|P| + |T| + eps) over valid pixels.

    logits, target (0/1), valid (bool): (N, H, W). Returns (N,). `eps` keeps an empty target
    with an empty prediction at loss 0.
    """
    prob = torch.sigmoid(logits.float()) * valid
    target = target.float() * valid
    intersection = (prob * target).flatten(1).sum(1)
    total = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return 1.0 - (2.0 * intersection + eps) / (total + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-mask IoU of the hard masks `logits > 0` with `target` over valid pixels, no gradient.

    logits, target (0/1), valid (bool): (N, H, W). Returns (N,); empty vs empty scores 1, as in
    the benchmark's gIoU.
    """
    with torch.no_grad():
        predicted = (logits > 0) & valid
        truth = target.bool() & valid
        intersection = (predicted & truth).flatten(1).sum(1).float()
        union = (predicted | truth).flatten(1).sum(1).float()
        return torch.where(union > 0, intersection / union.clamp(min=1.0), torch.ones_like(union))


def score_mse(scores: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
    """SAM's IoU-prediction loss: per-mask squared error of the predicted scores (N,) against
    the IoUs the masks reached (N,, no gradient). Returns (N,)."""
    return (scores.float() - reached.detach().float()) ** 2


def target_overlap(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """PixelLM-style target refinement: how much the masks of one image claim the same pixels.

    logits (T, H, W) of the T targets named in one answer, valid (H, W) bool. Per valid pixel
    the claims beyond the strongest one, sum_t p_t - max_t p_t, averaged: 0 when no two targets
    claim a pixel, and it grows as they do. Returns a scalar (0 for fewer than two targets).
    """
    if logits.shape[0] < 2:
        return logits.sum() * 0.0
    probs = torch.sigmoid(logits.float())
    excess = probs.sum(0) - probs.max(0).values
    valid = valid.float()
    return (excess * valid).sum() / valid.sum().clamp(min=1.0)


def location_l1(
    predicted: torch.Tensor, target: torch.Tensor, located: torch.Tensor
) -> torch.Tensor:
    """Mean L1 between predicted and target coordinates over the located tokens only.

    predicted, target (..., C); located (...) bool. Returns 0 (with a graph) when no token
    has a target, so batches without targets train the rest unchanged.
    """
    if not bool(located.any()):
        return predicted.sum() * 0.0
    return (predicted.float() - target.float()).abs()[located].mean()


def combine(
    text: torch.Tensor,
    bce: torch.Tensor,
    dice: torch.Tensor,
    weights: LossWeights,
    refine: torch.Tensor | None = None,
    head_losses: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Total loss from the text CE (scalar), per-mask BCE and DICE (N,), averaged over masks,
    the per-image target refinement terms (M,), averaged over images, and a head's own scalar
    terms, each weighted by the `weights` field of its name."""
    total = weights.text * text
    if bce.numel():
        total = total + weights.mask * (weights.bce * bce.mean() + weights.dice * dice.mean())
    if refine is not None and refine.numel() and weights.refine:
        total = total + weights.refine * refine.mean()
    for name, value in (head_losses or {}).items():
        if not hasattr(weights, name):
            raise ValueError(f"no loss weight named {name!r} for the head's loss")
        weight = getattr(weights, name)
        if weight:
            total = total + weight * value
    return total
