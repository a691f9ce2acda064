"""Segmentation metrics for reasoning segmentation, as pure numpy functions.

The rules follow the ReasonSeg reference evaluation:

* ground-truth pixels equal to 255 are ignored,
* I = |pred AND gt| and U = |pred OR gt| over the remaining pixels,
* per-sample IoU = I / (U + 1e-5), and a sample whose U is 0 (both empty) scores 1.0,
* gIoU = mean of per-sample IoU, cIoU = sum(I) / sum(U) over a split.

`hungarian_multi_target_iou` scores answers with several masks the MUSE way: predicted and
ground-truth masks are matched one to one so the summed IoU is largest, and the sum is divided
by the larger of the two counts, so missing and surplus masks both cost.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

IGNORE_VALUE = 255
EPS = 1e-5
# Exhaustive search is exact and cheap up to 7! = 5040 permutations; beyond that the O(n^3)
# Hungarian algorithm takes over.
BRUTE_FORCE_MAX = 7

__all__ = [
    "IGNORE_VALUE",
    "GroupScore",
    "IoUAccumulator",
    "hungarian_multi_target_iou",
    "intersection_union",
    "max_weight_assignment",
    "sample_iou",
]


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Intersection and union of a predicted and a ground-truth mask.

    Args:
        pred: HxW predicted mask (bool, or anything where nonzero means foreground).
        gt: HxW uint8 ground truth: 0 background, 1 target, 255 ignored.

    Returns:
        (I, U): pixel counts over the pixels that are not ignored.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    valid = gt != IGNORE_VALUE
    pred_fg = pred.astype(bool) & valid
    gt_fg = (gt != 0) & valid
    intersection = int(np.count_nonzero(pred_fg & gt_fg))
    union = int(np.count_nonzero(pred_fg | gt_fg))
    return intersection, union


def sample_iou(intersection: int, union: int) -> float:
    """Per-sample IoU with the reference conventions (empty vs empty scores 1.0)."""
    if union == 0:
        return 1.0
    return intersection / (union + EPS)


@dataclass(frozen=True)
class GroupScore:
    """Scores of one group of samples."""

    giou: float
    ciou: float
    count: int

    def as_dict(self) -> dict[str, float | int]:
        return {"giou": self.giou, "ciou": self.ciou, "count": self.count}


def _score(intersections: Sequence[int], unions: Sequence[int]) -> GroupScore:
    if not intersections:
        # No samples: report NaN rather than a perfect score nobody earned.
        return GroupScore(giou=float("nan"), ciou=float("nan"), count=0)
    ious = [sample_iou(i, u) for i, u in zip(intersections, unions, strict=True)]
    total_u = sum(unions)
    ciou = 1.0 if total_u == 0 else sum(intersections) / total_u
    return GroupScore(giou=float(np.mean(ious)), ciou=float(ciou), count=len(ious))


@dataclass
class IoUAccumulator:
    """Collects per-sample I and U and reports gIoU / cIoU, overall and per group.

    Groups are free-form labels given per sample (e.g. "short"/"long" or a query kind); a
    sample may belong to several groups. `summary()` returns the key "all" plus one key per
    group seen, each mapping to {"giou", "ciou", "count"}.
    """

    intersections: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)
    groups: dict[str, list[int]] = field(default_factory=dict)

    def add(self, pred: np.ndarray, gt: np.ndarray, groups: Sequence[str] = ()) -> float:
        """Adds one sample (HxW masks, see `intersection_union`); returns its IoU."""
        intersection, union = intersection_union(pred, gt)
        return self.add_counts(intersection, union, groups)

    def add_counts(self, intersection: int, union: int, groups: Sequence[str] = ()) -> float:
        """Adds one sample from precomputed counts; returns its IoU."""
        if intersection < 0 or union < intersection:
            raise ValueError(f"invalid counts I={intersection}, U={union}")
        if isinstance(groups, str):
            # A bare string would otherwise be split into one group per character.
            groups = (groups,)
        index = len(self.intersections)
        self.intersections.append(int(intersection))
        self.unions.append(int(union))
        for name in dict.fromkeys(groups):
            self.groups.setdefault(name, []).append(index)
        return sample_iou(intersection, union)

    @property
    def count(self) -> int:
        return len(self.intersections)

    @property
    def giou(self) -> float:
        return _score(self.intersections, self.unions).giou

    @property
    def ciou(self) -> float:
        return _score(self.intersections, self.unions).ciou

    def group_score(self, name: str) -> GroupScore:
        indices = self.groups.get(name, [])
        return _score([self.intersections[i] for i in indices], [self.unions[i] for i in indices])

    def summary(self) -> dict[str, dict[str, float | int]]:
        result = {"all": _score(self.intersections, self.unions).as_dict()}
        for name in sorted(self.groups):
            result[name] = self.group_score(name).as_dict()
        return result


def _brute_force_assignment(weights: np.ndarray) -> np.ndarray:
    n = weights.shape[0]
    best_value, best_perm = -np.inf, tuple(range(n))
    rows = np.arange(n)
    for perm in itertools.permutations(range(n)):
        value = weights[rows, perm].sum()
        if value > best_value:
            best_value, best_perm = value, perm
    return np.asarray(best_perm, dtype=np.int64)


def _hungarian_assignment(weights: np.ndarray) -> np.ndarray:
    """The column of each row in a maximum-weight assignment (scipy's Hungarian solver)."""
    _, col_of_row = linear_sum_assignment(weights, maximize=True)
    return col_of_row


def max_weight_assignment(weights: np.ndarray, method: str = "auto") -> list[tuple[int, int]]:
    """One-to-one assignment of rows to columns with the largest total weight.

    Args:
        weights: RxC matrix of finite weights (R and C may differ).
        method: "brute" (all permutations), "hungarian" (O(n^3)), or "auto" (brute force up to
            `BRUTE_FORCE_MAX` rows/columns, Hungarian beyond).

    Returns:
        min(R, C) pairs (row, col), sorted by row.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"weights must be 2-D, got shape {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError("weights must be finite")
    rows, cols = weights.shape
    n = max(rows, cols)
    if n == 0:
        return []
    # Padding with zero-weight dummies makes the problem square without changing the optimum.
    square = np.zeros((n, n))
    square[:rows, :cols] = weights
    if method == "auto":
        method = "brute" if n <= BRUTE_FORCE_MAX else "hungarian"
    if method == "brute":
        col_of_row = _brute_force_assignment(square)
    elif method == "hungarian":
        col_of_row = _hungarian_assignment(square)
    else:
        raise ValueError(f"unknown method {method!r}")
    return [(r, int(col_of_row[r])) for r in range(rows) if col_of_row[r] < cols]


def hungarian_multi_target_iou(
    preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], method: str = "auto"
) -> float:
    """MUSE-style score of several predicted masks against several ground-truth masks.

    Predictions and targets are matched one to one to maximise the summed IoU; an unmatched
    prediction or target is paired with an empty mask and contributes 0. The score is the sum of
    matched IoUs divided by max(#pred, #gt); no predictions and no targets scores 1.0.

    Args:
        preds: P predicted HxW bool masks.
        gts: G ground-truth HxW uint8 masks (0/1, 255 ignored).
        method: assignment solver, see `max_weight_assignment`.
    """
    if not preds and not gts:
        return 1.0
    if not preds or not gts:
        return 0.0
    ious = np.zeros((len(preds), len(gts)))
    for p, pred in enumerate(preds):
        for g, gt in enumerate(gts):
            ious[p, g] = sample_iou(*intersection_union(pred, gt))
    pairs = max_weight_assignment(ious, method=method)
    matched = sum(ious[p, g] for p, g in pairs)
    return float(matched / max(len(preds), len(gts)))
