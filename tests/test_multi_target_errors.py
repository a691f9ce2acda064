"""The multi-target loss breakdown (`benchmarks/multi_target_errors.py`) on hand-made masks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pixelreason.eval.metrics import hungarian_multi_target_iou

_PATH = Path(__file__).parents[1] / "benchmarks" / "multi_target_errors.py"
_SPEC = importlib.util.spec_from_file_location("multi_target_errors", _PATH)
errors = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(errors)


def _box(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((20, 20), bool)
    mask[top:bottom, left:right] = True
    return mask


def test_one_mask_over_two_touching_targets_is_a_merge_and_a_missing_target():
    left, right = _box(2, 2, 8, 8), _box(2, 8, 8, 14)  # side by side, touching
    far = _box(14, 14, 18, 18)
    targets = [t.astype(np.uint8) for t in (left, right, far)]
    masks = [left | right, far]
    breakdown = errors.Breakdown()
    score = breakdown.add(masks, targets)
    assert score == pytest.approx(hungarian_multi_target_iou(masks, targets))
    assert score == pytest.approx((0.5 + 1.0) / 3, abs=1e-5)
    assert breakdown.samples == {"fewer": 1}
    assert breakdown.count_loss["fewer"] == pytest.approx(1 / 3)
    assert breakdown.match_loss["fewer"] == pytest.approx(0.5 / 3, abs=1e-5)
    assert breakdown.mistakes["merged"] == 1
    assert breakdown.mistakes["merged, touching"] == 1
    assert breakdown.mistakes["merged, one region"] == 1
    assert breakdown.mistakes["wrong object"] == 0


def test_a_mask_on_no_target_is_a_wrong_object_and_no_mask_loses_all():
    one, two, elsewhere = _box(0, 0, 4, 4), _box(10, 10, 14, 14), _box(0, 15, 4, 19)
    targets = [one.astype(np.uint8), two.astype(np.uint8)]
    breakdown = errors.Breakdown()
    assert breakdown.add([one, elsewhere], targets) == pytest.approx(0.5, abs=1e-5)
    assert breakdown.add([], targets) == 0.0
    assert breakdown.samples == {"equal": 1, "none": 1}
    assert breakdown.mistakes["wrong object"] == 1 and breakdown.mistakes["merged"] == 0
    assert breakdown.count_loss["none"] == 1.0 and breakdown.match_loss["equal"] == pytest.approx(
        0.5, abs=1e-5
    )
