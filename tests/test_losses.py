import math

import pytest
import torch

from pixelreason.train.losses import (
    IGNORE_INDEX,
    LossWeights,
    combine,
    mask_bce,
    mask_dice,
    mask_iou,
    score_mse,
    target_overlap,
    text_loss,
)


def test_text_loss_is_shifted_and_ignores_unlabelled_positions() -> None:
    vocab = 5
    logits = torch.zeros(1, 3, vocab)
    logits[0, 0, 2] = 10.0  # position 0 predicts token at position 1
    logits[0, 1, 4] = -10.0
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX]])
    expected = -torch.log_softmax(logits[0, 0], dim=-1)[2]
    assert torch.allclose(text_loss(logits, labels), expected)


def test_text_loss_without_labels_is_zero_but_differentiable() -> None:
    logits = torch.randn(2, 4, 7, requires_grad=True)
    loss = text_loss(logits, torch.full((2, 4), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_bce_matches_hand_computation_and_skips_invalid_pixels() -> None:
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 5.0]]])
    target = torch.tensor([[[1, 0], [0, 1]]])
    valid = torch.tensor([[[True, True], [True, False]]])
    values = [math.log(2), math.log(1 + math.exp(2)), math.log(1 + math.exp(-1))]
    assert mask_bce(logits, target, valid).item() == pytest.approx(sum(values) / 3, rel=1e-5)


def test_dice_is_zero_for_perfect_and_empty_masks_and_near_one_for_disjoint() -> None:
    target = torch.zeros(3, 4, 4)
    target[0, :2] = 1
    target[2, 2:] = 1
    logits = torch.full((3, 4, 4), -50.0)
    logits[0, :2] = 50.0  # perfect
    logits[2, :2] = 50.0  # disjoint from its target
    valid = torch.ones(3, 4, 4, dtype=torch.bool)
    dice = mask_dice(logits, target, valid)
    assert dice[0].item() == pytest.approx(0.0, abs=1e-6)
    assert dice[1].item() == pytest.approx(0.0, abs=1e-6)  # empty target, empty prediction
    assert dice[2].item() == pytest.approx(1 - 1 / 17, abs=1e-4)


def test_combine_uses_lisa_weights_by_default() -> None:
    text, bce, dice = torch.tensor(1.5), torch.tensor([0.2, 0.4]), torch.tensor([0.1, 0.3])
    total = combine(text, bce, dice, LossWeights())
    assert total.item() == pytest.approx(1.5 + 1.0 * (2.0 * 0.3 + 0.5 * 0.2))
    assert combine(text, bce[:0], dice[:0], LossWeights()).item() == pytest.approx(1.5)


def test_target_overlap_counts_only_pixels_claimed_twice() -> None:
    logits = torch.full((2, 2, 2), -60.0)
    logits[0, 0, :] = 60.0  # target 0 claims the top row
    logits[1, :, 0] = 60.0  # target 1 claims the left column: shared pixel (0, 0)
    valid = torch.ones(2, 2, dtype=torch.bool)
    assert target_overlap(logits, valid).item() == pytest.approx(1 / 4, abs=1e-6)
    valid[0, 0] = False  # the shared pixel is ignored
    assert target_overlap(logits, valid).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.zeros(3, 1, 1)  # three targets at p = 0.5: excess 1.5 - 0.5 = 1.0
    assert target_overlap(half, torch.ones(1, 1, dtype=torch.bool)).item() == pytest.approx(1.0)
    assert target_overlap(logits[:1], valid).item() == 0.0


def test_combine_adds_refinement_only_when_weighted() -> None:
    text, bce, dice = torch.tensor(1.0), torch.tensor([0.2]), torch.tensor([0.1])
    refine = torch.tensor([0.3, 0.1])
    plain = combine(text, bce, dice, LossWeights(), refine)
    weighted = combine(text, bce, dice, LossWeights(refine=2.0), refine)
    assert weighted.item() == pytest.approx(plain.item() + 2.0 * 0.2)


def test_combine_weights_head_losses_by_name() -> None:
    text, bce, dice = torch.tensor(1.0), torch.tensor([0.2]), torch.tensor([0.1])
    head = {"point": torch.tensor(0.25)}
    plain = combine(text, bce, dice, LossWeights(), None, head)  # point weight 0 by default
    assert plain.item() == pytest.approx(combine(text, bce, dice, LossWeights()).item())
    weighted = combine(text, bce, dice, LossWeights(point=4.0), None, head)
    assert weighted.item() == pytest.approx(plain.item() + 1.0)
    with pytest.raises(ValueError, match="no loss weight"):
        combine(text, bce, dice, LossWeights(), None, {"colour": torch.tensor(1.0)})


def test_mask_iou_counts_valid_pixels_only_and_empty_vs_empty_as_one() -> None:
    logits = torch.full((3, 2, 4), -5.0)
    logits[0, 0, :2] = 5.0  # predicts 2 pixels
    logits[1, 0, 0] = 5.0
    target = torch.zeros(3, 2, 4)
    target[0, 0, 1:3] = 1  # overlaps 1 of the 2; union 3
    target[1, 1, 0] = 1
    valid = torch.ones(3, 2, 4, dtype=torch.bool)
    valid[1, 1, 0] = False  # item 1's only target pixel is ignored: prediction vs nothing
    iou = mask_iou(logits, target, valid)
    assert iou.tolist() == pytest.approx([1 / 3, 0.0, 1.0])
    assert not iou.requires_grad


def test_score_mse_trains_scores_only() -> None:
    scores = torch.tensor([0.5, 0.9], requires_grad=True)
    reached = torch.tensor([0.25, 0.9], requires_grad=True)
    loss = score_mse(scores, reached)
    assert loss.tolist() == pytest.approx([0.0625, 0.0])
    loss.sum().backward()
    assert scores.grad.tolist() == pytest.approx([0.5, 0.0])
    assert reached.grad is None
