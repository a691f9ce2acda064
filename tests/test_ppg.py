"""PPG training targets: point sampling, one batched SAM call, best-IoU selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelreason.config import tiny
from pixelreason.models.heads.ppg import (
    PromptFrame,
    mask_coverage,
    mask_value,
    sample_point_groups,
    select_point_group,
    soft_iou,
)
from pixelreason.models.heads.text_prompts import box_to_grid
from pixelreason.models.sam import SamDecoder


def _l_shape() -> np.ndarray:
    """An L-shaped target (so its box holds background) with an ignored stripe."""
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[5:35, 10:20] = 1
    mask[25:35, 10:50] = 1
    mask[0:3, :] = 255
    return mask


def _values(mask: np.ndarray, points: torch.Tensor) -> np.ndarray:
    return np.array([mask_value(mask, p) for p in points.reshape(-1, 2).tolist()])


def test_points_lie_inside_and_outside_the_mask_and_negatives_inside_its_box() -> None:
    mask = _l_shape()
    groups = sample_point_groups(mask, 64, torch.Generator().manual_seed(0))
    assert groups is not None
    assert groups.points.shape == (64, 3, 2) and groups.labels.tolist() == [1, 1, 0]
    assert groups.box == box_to_grid((10, 5, 50, 35), mask.shape)
    assert (_values(mask, groups.points[:, :2]) == 1).all()
    assert (_values(mask, groups.points[:, 2]) == 0).all()
    x0, y0, x1, y1 = groups.box
    negatives = groups.points[:, 2]
    assert ((negatives[:, 0] >= x0) & (negatives[:, 0] <= x1)).all()
    assert ((negatives[:, 1] >= y0) & (negatives[:, 1] <= y1)).all()
    # 64 groups are not 64 copies of one.
    assert len({tuple(g) for g in groups.points.reshape(64, -1).tolist()}) > 50


def test_sampling_is_deterministic_given_the_generator() -> None:
    mask = _l_shape()
    a = sample_point_groups(mask, 8, torch.Generator().manual_seed(3))
    b = sample_point_groups(mask, 8, torch.Generator().manual_seed(3))
    c = sample_point_groups(mask, 8, torch.Generator().manual_seed(4))
    assert a is not None and b is not None and c is not None
    assert torch.equal(a.points, b.points) and not torch.equal(a.points, c.points)


def test_tiny_full_and_empty_masks() -> None:
    generator = torch.Generator().manual_seed(0)
    assert sample_point_groups(np.zeros((9, 9), np.uint8), 4, generator) is None
    only_ignored = np.full((9, 9), 255, np.uint8)
    assert sample_point_groups(only_ignored, 4, generator) is None
    # One pixel: both positives are that pixel; the box is one pixel, so negatives lie outside.
    one = np.zeros((9, 9), np.uint8)
    one[4, 6] = 1
    groups = sample_point_groups(one, 4, generator)
    assert groups is not None
    assert (_values(one, groups.points[:, :2]) == 1).all()
    assert (_values(one, groups.points[:, 2]) == 0).all()
    # A mask that fills its box takes negatives elsewhere; a full image has none.
    full = np.ones((9, 9), np.uint8)
    groups = sample_point_groups(full, 4, generator)
    assert groups is not None and groups.points.shape == (4, 2, 2)
    assert groups.labels.tolist() == [1, 1] and groups.box == (0, 0, 999, 999)


class StubDecoder:
    """A SAM stand-in whose masks (K, s, s) are given; records its calls."""

    image_size = 64

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks
        self.prompt_calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.decode_calls = 0

    def prompt(self, points, labels, boxes) -> torch.Tensor:
        self.prompt_calls.append((points, labels, boxes))
        return torch.zeros((boxes.shape[0], 4, 8))

    def decode(self, image_embeddings, sparse) -> tuple[torch.Tensor, torch.Tensor]:
        self.decode_calls += 1
        assert image_embeddings.shape[0] == sparse.shape[0] == len(self.masks)
        return self.masks.float() * 20 - 10, torch.zeros(len(self.masks))


def test_selection_keeps_the_group_whose_mask_best_matches_in_one_call() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1
    predicted = torch.zeros((64, 16, 16), dtype=torch.bool)
    for k in range(64):  # shifted squares: the more shifted, the worse
        shift = (k * 7) % 9 + 1
        predicted[k, 4 + shift : 12 + shift, 4:12] = True
    predicted[37:39] = False
    predicted[37, 4:12, 4:12] = True  # exactly the ground truth
    predicted[38, 4:12, 4:13] = True  # close, not exact
    decoder = StubDecoder(predicted)
    frame = PromptFrame((64, 64))
    choice = select_point_group(
        decoder, torch.zeros(1, 8, 4, 4), mask, frame, torch.Generator().manual_seed(0)
    )
    assert choice is not None
    assert choice.best == 37 and choice.ious[37] == pytest.approx(1.0)
    assert float(choice.ious.max()) == float(choice.ious[37]) > float(choice.ious[38])
    assert decoder.decode_calls == 1 and len(decoder.prompt_calls) == 1
    points, labels, boxes = decoder.prompt_calls[0]
    assert points.shape == (64, 3, 2) and labels.shape == (64, 3) and boxes.shape == (64, 4)
    # The kept prompt is group 37, with the mask's box, in grid coordinates.
    groups = sample_point_groups(mask, 64, torch.Generator().manual_seed(0))
    assert groups is not None and choice.prompt == groups.prompt(37)
    assert choice.prompt.box == (250, 250, 749, 749)
    # SAM sees the grid prompts in its own input frame (the image fills it here).
    torch.testing.assert_close(boxes[0], torch.tensor([15.5, 15.5, 47.5, 47.5]))


def test_one_group_needs_no_decoder() -> None:
    mask = _l_shape()
    choice = select_point_group(
        None,
        None,
        mask,
        PromptFrame((40, 60)),
        torch.Generator(),
        groups=1,  # type: ignore[arg-type]
    )
    assert choice is not None and choice.prompt.box is not None and len(choice.prompt.points) == 3


def test_coverage_of_a_padded_frame_and_soft_iou() -> None:
    mask = np.zeros((30, 60), np.uint8)  # landscape: resized to 32 x 64 of a 64 input
    mask[:, 30:] = 1
    mask[0, :] = 255
    target, valid = mask_coverage(mask, PromptFrame((32, 64)), 64, 16, torch.device("cpu"))
    assert target.shape == (16, 16)
    assert target[8:, :].sum() == 0 and valid[8:, :].sum() == 0  # padding below the image
    assert target[2:8, 8:].min() == 1 and target[:, :8].max() == 0
    exact = (target > 0.5)[None]
    assert soft_iou(exact, target, valid)[0] > 0.95
    assert soft_iou(~exact, target, valid)[0] == 0


def test_ppg_with_a_real_tiny_sam() -> None:
    torch.manual_seed(0)
    sam = SamDecoder.from_config(tiny().sam).eval()
    mask = _l_shape()
    embedding = sam.encode_image(torch.randn(1, 3, 64, 64))
    frame = PromptFrame((43, 64))  # 40 x 60 resized to SAM's 64-px input
    choice = select_point_group(
        sam, embedding, mask, frame, torch.Generator().manual_seed(1), groups=16
    )
    assert choice is not None and choice.ious.shape == (16,)
    assert ((choice.ious >= 0) & (choice.ious <= 1)).all()
    assert choice.ious[choice.best] == choice.ious.max()
    assert choice.prompt.labels == (1, 1, 0) and choice.prompt.box == box_to_grid(
        (10, 5, 50, 35), mask.shape
    )
