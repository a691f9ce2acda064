"""Group members: the classes a several-target answer leaves out (`pixelreason.models.members`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelreason.api import encode_image
from pixelreason.cli import main
from pixelreason.data.world.samples import generate_sample
from pixelreason.models.instances import OUTSIDE_LOGIT
from pixelreason.models.members import first_slot_texts, likeliest_run, new_targets
from pixelreason.prompting import Turn
from pixelreason.registry import load_model


def test_likeliest_run_stops_at_a_large_step() -> None:
    assert likeliest_run({3: -20.0, 5: -21.0, 7: -22.4, 1: -26.0}) == [3, 5, 7]
    assert likeliest_run({3: -20.0, 5: -21.6}) == [3]
    assert likeliest_run({2: -30.0}) == [2]
    assert likeliest_run({}) == []


def test_likeliest_run_stops_at_its_span_below_the_likeliest() -> None:
    scores = {0: -20.0, 1: -21.4, 2: -22.8, 3: -24.2}  # steps of 1.4, the last 4.2 below
    assert likeliest_run(scores) == [0, 1, 2]
    assert likeliest_run(scores, span=5.0) == [0, 1, 2, 3]
    assert likeliest_run(scores, gap=1.0) == [0]


def test_first_slot_texts_name_each_class_by_its_first_name() -> None:
    labels = [["cup", "cups"], ["potted plant", "potted plants"]]
    assert first_slot_texts(labels, [1, 0]) == ["The potted plant", "The cup"]


def test_new_targets_are_the_free_regions_of_the_instances() -> None:
    found = torch.full((40, 40), -5.0)
    found[2:12, 2:12] = 4.0  # free: a target
    found[20:30, 20:30] = 3.0  # inside the answer's targets already
    found[35:37, 35:37] = 2.0  # a speck: 4 pixels, under a tenth of the largest
    taken = torch.zeros((40, 40), dtype=torch.bool)
    taken[18:32, 18:32] = True
    masks = new_targets(found, taken)
    assert masks.shape == (1, 40, 40)
    assert torch.equal(masks[0] > 0, found > 3.5)
    assert torch.equal(masks[0][2:12, 2:12], found[2:12, 2:12])
    assert float(masks[0][20:30, 20:30].max()) == OUTSIDE_LOGIT
    # half inside the answer's targets still counts as free; more does not
    taken[2:7, 2:12] = True
    assert len(new_targets(found, taken)) == 1
    taken[2:8, 2:12] = True
    assert len(new_targets(found, taken)) == 0
    assert new_targets(torch.full((8, 8), -1.0), taken[:8, :8]).shape == (0, 8, 8)


def _iou(mask: np.ndarray, target: np.ndarray) -> float:
    return float((mask & target).sum() / (mask | target).sum())


@pytest.mark.parametrize(
    ("index", "named", "member"),
    [
        (374, "bread loaf", "pizza slice"),  # "Which objects here are baked in an oven?"
        (568, "cheese wedge", "ice cream"),  # "everything that is made from milk"
    ],
)
def test_bundled_default_grounds_the_member_its_answer_leaves_out(
    index, named, member, monkeypatch
) -> None:
    import pixelreason.models.segmenter as segmenter

    # Repeated targets kept: test 374's two bread loaves touch, and once a pizza slice joins
    # them, the answer's two masks over both loaves would be one target (a known loss).
    monkeypatch.setattr(segmenter, "REPEAT_OVERLAP", 2.0)
    model, _ = load_model("default")
    assert model.config.group_members
    sample = generate_sample(0, "test", index)
    cache = encode_image(model, sample.image)
    model.config.group_members = False
    try:
        plain = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    finally:
        model.config.group_members = True
    answer = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert named in plain.text and member not in plain.text
    assert "group_members" not in plain.extras
    assert [m["class"] for m in answer.extras["group_members"]] == [member]
    assert answer.text.startswith(plain.text[:-1])  # the answer goes on: " and the cup <SEG>."
    assert f"{member} <SEG>" in answer.text
    # the new target is the member's object, and every target is found
    masks = answer.mask_logits.numpy() > 0
    targets = [t.astype(bool) for t in sample.target_masks]
    kinds = [o.category.name for o in sample.scene.objects]
    assert member in kinds and len(masks) == len(targets)
    added = masks[-1]
    assert max(_iou(added, t) for t in targets) > 0.6
    assert _iou(masks.any(axis=0), np.logical_or.reduce(targets)) > 0.7


def test_bundled_default_drops_the_targets_of_a_class_without_the_fact(monkeypatch) -> None:
    """ "Which objects here grow on trees?" (a fresh several-target query, seed 23): the answer
    grounds two cherries, a donut, a phone and a strawberry; after "What grows on trees?", the
    last three's statements of the fact are more than `FACT_SPAN` nats below the cherry's, so
    their targets go, and the answer is the two cherries, each mostly a target; with an
    unreachable span they stay."""
    import pixelreason.models.segmenter as segmenter

    model, _ = load_model("default")
    # object cuts part this image's cherry object (two berries on stems) into three targets
    monkeypatch.setattr(model.config, "object_cuts", False)
    sample = generate_sample(23, "test", 2156)
    cache = encode_image(model, sample.image)

    def ask():
        return model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]

    answer = ask()
    dropped = ["donut", "phone", "strawberry"]
    assert answer.extras["non_members"] == {"fact": "grows on trees", "dropped": dropped}
    assert answer.text == "The cherry <SEG> and the cherry <SEG>."
    masks = answer.mask_logits.numpy() > 0
    targets = [t.astype(bool) for t in sample.target_masks]
    assert len(masks) == len(targets) == 2
    for mask in masks:
        assert max(_iou(mask, t) for t in targets) > 0.6
    monkeypatch.setattr(segmenter, "FACT_SPAN", 1e9)
    kept = ask()
    assert "non_members" not in kept.extras and "donut <SEG>" in kept.text
    # the two cherries touch: both masks hold both, and beside other classes the repeated
    # targets rule makes them one; kept apart, there are five targets
    assert len(kept.scores) == 4 and kept.extras["repeats_dropped"] == ["cherry"]
    monkeypatch.setattr(segmenter, "REPEAT_OVERLAP", 2.0)
    assert len(ask().scores) == 5


def test_bundled_default_leaves_single_target_answers_alone() -> None:
    model, _ = load_model("default")
    sample = generate_sample(0, "test", 0)  # "Can you find the spotted cup in this picture?"
    cache = encode_image(model, sample.image)
    answer = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert len(answer.scores) == 1
    assert "group_members" not in answer.extras


def test_group_members_option_turns_them_off(tmp_path: Path) -> None:
    sample = generate_sample(0, "test", 568)  # "everything that is made from milk"
    image = tmp_path / "scene.png"
    sample.image.save(image)
    texts = {}
    for flag in ("--group-members", "--no-group-members"):
        out = tmp_path / flag
        assert main(["segment", str(image), sample.texts[0], "--out", str(out), flag]) == 0
        texts[flag] = json.loads((out / "result.json").read_text())["text"]
    assert "ice cream <SEG>" in texts["--group-members"]
    assert "ice cream" not in texts["--no-group-members"]
    assert load_model("default")[0].config.group_members  # the option changes no saved setting


def test_bundled_default_adds_no_member_to_a_query_that_asks_for_a_class(monkeypatch) -> None:
    model, _ = load_model("default")
    # object cuts part a cherry object (two berries on stems) into two targets here
    monkeypatch.setattr(model.config, "object_cuts", False)
    # "all the cherries": the LLM scores a cup about as likely as the cherries here, and the
    # query asks for cherries only
    sample = generate_sample(0, "val", 46)
    assert sample.texts[0] == "all the cherries"
    answer = model.answer_batch([encode_image(model, sample.image)], [[Turn("all the cherries")]])
    assert answer[0].text == "Here they are: the cherry <SEG> and the cherry <SEG>."
    assert "group_members" not in answer[0].extras
    # "... grows on trees" names trees only in passing: the cherries join the three oranges
    sample = generate_sample(0, "test", 115)
    query = sample.texts[0]
    assert query == "Show me everything in this image that grows on trees."
    answer = model.answer_batch([encode_image(model, sample.image)], [[Turn(query)]])[0]
    assert [m["class"] for m in answer.extras["group_members"]] == ["cherry"]
    masks = answer.mask_logits.numpy() > 0
    union = np.logical_or.reduce([t.astype(bool) for t in sample.target_masks])
    assert _iou(masks.any(axis=0), union) > 0.9
