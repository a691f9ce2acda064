"""Hand-computed checks of the ReasonSeg and MUSE metrics."""

import math

import numpy as np
import pytest

from pixelreason.eval.evaluate import names_targets
from pixelreason.eval.metrics import (
    IoUAccumulator,
    hungarian_multi_target_iou,
    intersection_union,
    max_weight_assignment,
    sample_iou,
)


def _mask(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Bool mask with the given (y0, y1, x0, x1) boxes set."""
    mask = np.zeros(shape, dtype=bool)
    for y0, y1, x0, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def test_intersection_union_basic() -> None:
    pred = _mask((4, 4), (0, 2, 0, 2))  # 4 pixels
    gt = _mask((4, 4), (0, 2, 1, 3)).astype(np.uint8)  # 4 pixels, 2 shared
    assert intersection_union(pred, gt) == (2, 6)


def test_ignore_pixels_are_excluded() -> None:
    pred = _mask((4, 4), (0, 4, 0, 2))  # 8 pixels
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[0:2, 0:2] = 1
    gt[2:4, 0:4] = 255  # the lower half of the prediction lands on ignored pixels
    assert intersection_union(pred, gt) == (4, 4)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        intersection_union(np.zeros((2, 2), bool), np.zeros((3, 2), np.uint8))


def test_sample_iou_conventions() -> None:
    empty = np.zeros((3, 3), dtype=bool)
    assert sample_iou(*intersection_union(empty, empty.astype(np.uint8))) == 1.0
    gt = _mask((3, 3), (0, 1, 0, 1)).astype(np.uint8)
    assert sample_iou(*intersection_union(empty, gt)) == 0.0
    assert sample_iou(2, 4) == pytest.approx(0.5, abs=1e-5)


def test_ciou_is_ratio_of_sums() -> None:
    acc = IoUAccumulator()
    # Sample A: I=1, U=2 (IoU 0.5). Sample B: I=90, U=100 (IoU 0.9).
    acc.add_counts(1, 2, groups=["short"])
    acc.add_counts(90, 100, groups=["long"])
    assert acc.count == 2
    assert acc.giou == pytest.approx((0.5 + 0.9) / 2, abs=1e-5)
    assert acc.ciou == pytest.approx(91 / 102)
    assert acc.giou != pytest.approx(acc.ciou, abs=1e-3)


def test_accumulator_groups_and_masks() -> None:
    acc = IoUAccumulator()
    pred = _mask((4, 4), (0, 2, 0, 2))
    gt = _mask((4, 4), (0, 2, 0, 1)).astype(np.uint8)
    assert acc.add(pred, gt, groups=("short", "explicit")) == pytest.approx(0.5, abs=1e-5)
    empty = np.zeros((4, 4), dtype=bool)
    acc.add(empty, empty.astype(np.uint8), groups="long")  # a bare string is one group
    summary = acc.summary()
    assert set(summary) == {"all", "short", "explicit", "long"}
    assert summary["short"]["count"] == 1
    assert summary["long"] == {"giou": 1.0, "ciou": 1.0, "count": 1}
    assert summary["all"]["giou"] == pytest.approx(0.75, abs=1e-5)
    assert summary["all"]["ciou"] == pytest.approx(2 / 4)


def test_empty_accumulator_is_nan() -> None:
    acc = IoUAccumulator()
    assert acc.count == 0
    assert math.isnan(acc.giou) and math.isnan(acc.ciou)


def test_hungarian_perfect_match_in_any_order() -> None:
    a = _mask((6, 6), (0, 2, 0, 2))
    b = _mask((6, 6), (3, 6, 3, 6))
    gts = [b.astype(np.uint8), a.astype(np.uint8)]
    assert hungarian_multi_target_iou([a, b], gts) == pytest.approx(1.0, abs=1e-5)


def test_hungarian_unmatched_masks_cost() -> None:
    a = _mask((6, 6), (0, 2, 0, 2))
    b = _mask((6, 6), (3, 6, 3, 6))
    c = _mask((6, 6), (0, 1, 4, 6))
    # One surplus prediction: 2 perfect matches out of max(3, 2) = 3.
    gts = [a.astype(np.uint8), b.astype(np.uint8)]
    assert hungarian_multi_target_iou([c, a, b], gts) == pytest.approx(2 / 3, abs=1e-5)
    # One missed target: 1 perfect match out of 2.
    assert hungarian_multi_target_iou([b], gts) == pytest.approx(0.5, abs=1e-5)
    assert hungarian_multi_target_iou([], []) == 1.0
    assert hungarian_multi_target_iou([], gts) == 0.0
    assert hungarian_multi_target_iou([a], []) == 0.0


def test_hungarian_prefers_global_optimum_over_greedy() -> None:
    # pred0 overlaps gt0 a lot and gt1 a bit more; greedy on pred0 would take gt1 and strand
    # pred1, whose only overlap is gt1.
    gt0 = _mask((1, 10), (0, 1, 0, 4))
    gt1 = _mask((1, 10), (0, 1, 3, 8))
    pred0 = _mask((1, 10), (0, 1, 0, 7))
    pred1 = _mask((1, 10), (0, 1, 6, 8))
    ious = np.array([[4 / 7, 4 / 8], [0.0, 2 / 5]])
    expected = (ious[0, 0] + ious[1, 1]) / 2
    gts = [gt0.astype(np.uint8), gt1.astype(np.uint8)]
    assert hungarian_multi_target_iou([pred0, pred1], gts) == pytest.approx(expected, abs=1e-4)


def _total(weights: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    return float(sum(weights[r, c] for r, c in pairs))


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (7, 5), (6, 6)])
def test_hungarian_solver_matches_brute_force(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        weights = rng.random(shape)
        # Ties are common with IoUs (many zeros); round some weights to provoke them.
        weights[rng.random(shape) < 0.3] = 0.0
        brute = max_weight_assignment(weights, method="brute")
        hung = max_weight_assignment(weights, method="hungarian")
        assert len(brute) == len(hung) == min(shape)
        assert _total(weights, hung) == pytest.approx(_total(weights, brute))
        assert len({c for _, c in hung}) == len(hung)


def test_hungarian_solver_large_against_known_optimum() -> None:
    # A permuted diagonal of ones on a background of small weights has a known optimum.
    n = 12
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    weights = rng.random((n, n)) * 0.1
    weights[np.arange(n), perm] = 1.0
    pairs = max_weight_assignment(weights)
    assert pairs == [(r, int(perm[r])) for r in range(n)]


def test_names_targets_needs_a_grounded_answer() -> None:
    assert names_targets("The Red Mug <SEG>.", 1, ["red mug"])
    assert not names_targets("The blue mug <SEG>.", 1, ["red mug"])
    # Every target must be named.
    assert not names_targets("The apple <SEG> and <SEG>.", 2, ["apple", "pear"])
    assert names_targets("The apple <SEG> and the pear <SEG>.", 2, ["apple", "pear"])
    # A refusal mentions the name only to deny it.
    assert not names_targets("There is no red mug in this image.", 0, ["red mug"])
