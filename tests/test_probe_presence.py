"""The probes' image-level presence: what the presence check reads, its loss and `task: probe`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pixelreason.cli import main
from pixelreason.errors import CheckpointError
from pixelreason.models.probe import VisionProbe
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.train.pretrain import rank_auc
from pixelreason.train.recipe import build_model


def _probe(head: bool) -> VisionProbe:
    """3 classes (0 = background); features and embeddings of width 2 pick a class per cell."""
    probe = VisionProbe(3, 2, 2 if head else None)
    weight = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    with torch.no_grad():
        probe.backbone.weight.copy_(weight)
        probe.backbone.bias.zero_()
        if probe.head is not None:
            probe.head.weight.copy_(weight[:, :, None, None])
            probe.head.bias.zero_()
    return probe


def test_presence_is_the_highest_cell_probability_and_the_mean_of_both_probes() -> None:
    probe = _probe(head=True)
    # 4 cells (a 2 x 2 grid): one says class 1 strongly, the rest are background-like.
    features = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    cell = torch.tensor([0.0, 4.0, 0.0]).softmax(0)  # the class-1 cell
    flat = torch.tensor([0.0, 0.0, 0.0]).softmax(0)  # any background-like cell
    expected = torch.tensor([[cell[1], flat[2]]])
    assert torch.allclose(probe.presence(features), expected)
    # The mask-head probe sees class 2 in one cell of its 4 x 4 grid, class 1 nowhere.
    context = torch.zeros(1, 2, 4, 4)
    context[0, 1, 3, 3] = 1.0
    head = torch.tensor([[flat[1], cell[1]]])
    assert torch.allclose(probe.presence(features, context), (expected + head) / 2)
    assert torch.allclose(_probe(head=False).presence(features, context), expected)


def test_presence_loss_rewards_finding_what_the_class_map_shows() -> None:
    probe = _probe(head=True)
    features = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    context = torch.zeros(1, 2, 4, 4)
    context[0, 0, 0, 0] = 1.0
    right = [torch.tensor([[0, 1], [0, 0]])]  # class 1 shown, class 2 not
    wrong = [torch.tensor([[0, 2], [0, 0]])]  # class 2 shown, class 1 not
    assert probe.presence_loss(features, context, right) < probe.presence_loss(
        features, context, wrong
    )
    # One gradient step on it raises the shown class's presence.
    before = probe.presence(features, context)[0, 1].item()
    optimiser = torch.optim.SGD(probe.parameters(), lr=1.0)
    probe.presence_loss(features, context, wrong).backward()
    optimiser.step()
    assert probe.presence(features, context)[0, 1].item() > before


@pytest.mark.parametrize(
    ("height", "width", "padded", "side"),
    [(37, 53, 53, 4), (74, 106, 128, 16), (20, 29, 32, 8)],
)
def test_cell_shares_equal_the_pooled_one_hot_map(
    height: int, width: int, padded: int, side: int
) -> None:
    """The probes' cell targets: a (37, 53) class map's one-hot, resized by area to (height,
    width), zero-padded bottom-right to a square and average-pooled to side x side."""
    probe = VisionProbe(7, 2, None)
    semantic = torch.randint(0, 7, (37, 53), generator=torch.Generator().manual_seed(0))
    one_hot = F.one_hot(semantic, 7).permute(2, 0, 1).float()[None]
    resized = F.interpolate(one_hot, (height, width), mode="area")
    padded_map = F.pad(resized, (0, padded - width, 0, padded - height))
    expected = F.adaptive_avg_pool2d(padded_map, side)[0]
    shares = probe._shares(semantic, side, (height, width), padded)
    assert torch.allclose(shares, expected, atol=1e-6)


def test_rank_auc_counts_pairs_and_ties() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    labels = torch.tensor([False, False, True, True])
    assert rank_auc(scores, labels) == pytest.approx(0.75)  # 3 of 4 pairs ordered right
    assert rank_auc(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == 0.5
    assert rank_auc(scores, torch.ones(4, dtype=torch.bool)) == 0.5  # no negatives


def test_probe_recipe_fits_the_category_probe_alone(tmp_path: Path) -> None:
    spec = "{preset: tiny, seed: 0, probe_classes: 56, presence_mask_head: true}"
    recipe = tmp_path / "probe.yaml"
    recipe.write_text(
        f"model: {spec}\ntask: probe\ndata: {{image_size: 64}}\nval: {{samples: 2}}\n"
        "train: {steps: 3, batch_size: 2, lr: 0.01, log_every: 1, eval_every: 3, "
        "loss: {probe: 1.0, presence: 1.0, mask: 0.0}}\n"
        f"out: {tmp_path / 'run'}\n"
    )
    assert main(["train", str(recipe)]) == 0
    fresh = build_model({"preset": "tiny", "seed": 0, "probe_classes": 56})
    fitted = PixelReasonModel.from_pretrained(tmp_path / "run" / "model")
    assert fitted.config.presence_mask_head
    before, after = fresh.state_dict(), fitted.state_dict()
    moved = {name for name, value in after.items() if not torch.equal(value, before[name])}
    assert moved and all(name.startswith("probe.") for name in moved)
    assert any(name.startswith("probe.head.") for name in moved)  # SAM's grid is probed too
    assert "val_presence_auc" in (tmp_path / "run" / "history.json").read_text()


def test_presence_loss_and_the_head_presence_are_refused_where_they_cannot_work(
    tmp_path: Path,
) -> None:
    with pytest.raises(CheckpointError, match="presence_mask_head"):
        build_model(
            {
                "preset": "tiny",
                "probe_classes": 56,
                "probe_mask_head": False,
                "presence_mask_head": True,
            }
        )
    for task, loss in (("probe", "{presence: 1.0, mask: 1.0}"), ("segment", "{presence: 1.0}")):
        recipe = tmp_path / f"{task}.yaml"
        recipe.write_text(
            f"model: {{preset: tiny, probe_classes: 56}}\ntask: {task}\n"
            f"train: {{steps: 1, loss: {loss}}}\nout: {tmp_path / task}\n"
        )
        assert main(["train", str(recipe)]) != 0


def test_strongest_is_the_highest_reading_of_either_probe() -> None:
    """Where one probe sees a class and the other misses it, `presence` (their mean) halves it;
    `strongest` keeps the part that sees it."""
    probe = _probe(head=True)
    features = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    context = torch.zeros(1, 2, 4, 4)
    context[0, 1, 3, 3] = 1.0
    cell = torch.tensor([0.0, 4.0, 0.0]).softmax(0)
    flat = torch.tensor([0.0, 0.0, 0.0]).softmax(0)
    assert torch.allclose(probe.strongest(features, context), torch.tensor([[cell[1], cell[1]]]))
    assert torch.allclose(probe.strongest(features), torch.tensor([[cell[1], flat[2]]]))
    assert (probe.strongest(features, context) >= probe.presence(features, context)).all()
