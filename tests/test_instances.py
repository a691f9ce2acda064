"""The instance split and the instance question: the masks of an answer that grounds one class
several times become one instance each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelreason.api import encode_image
from pixelreason.data.world.samples import generate_sample
from pixelreason.eval.metrics import hungarian_multi_target_iou
from pixelreason.models.instances import (
    OUTSIDE_LOGIT,
    duplicate_groups,
    instance_question,
    repeated_classes,
    split_duplicates,
    take_regions,
    target_classes,
)
from pixelreason.models.segmenter import Answer
from pixelreason.prompting import Turn
from pixelreason.registry import load_model


def _blobs(*boxes: tuple[int, int, int, int], size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for top, left, bottom, right in boxes:
        mask[top:bottom, left:right] = True
    return mask


def _logits(*masks: np.ndarray, strength: float = 3.0) -> torch.Tensor:
    return torch.stack([torch.where(torch.as_tensor(m), strength, -strength) for m in masks])


A, B = (2, 2, 10, 10), (20, 20, 30, 30)


def test_two_copies_of_two_regions_take_one_region_each():
    both = _blobs(A, B)
    logits = _logits(both, both)
    logits[1, 20:30, 20:30] = 5.0  # the second mask is surer of B
    out, splits = split_duplicates(logits, 0.5)
    masks = (out > 0).numpy()
    assert np.array_equal(masks[0], _blobs(A)) and np.array_equal(masks[1], _blobs(B))
    assert np.array_equal(masks.any(axis=0), both)  # the union is kept
    assert out[0, 25, 25] <= OUTSIDE_LOGIT and out[1, 25, 25] == 5.0
    assert [(s.masks, s.regions) for s in splits] == [((0, 1), (100, 64))]
    assert torch.equal(logits[0], _logits(both)[0])  # the input is not changed


def test_masks_that_do_not_repeat_or_cover_one_region_are_kept():
    one = _blobs(A)
    for logits in (
        _logits(_blobs(A, B), _blobs(A)),  # IoU 0.39: not repeats
        _logits(one, one),  # repeats, but one region: the same instance twice
        _logits(_blobs(A, B)),  # a single mask
    ):
        out, splits = split_duplicates(logits, 0.5)
        assert out is logits and splits == []
    out, splits = split_duplicates(_logits(_blobs(A, B), _blobs(A, B)), 0.0)  # off
    assert splits == []


def test_more_masks_than_regions_and_small_regions():
    both = _blobs(A, B)
    # three copies, two regions: two take one each, the third keeps the union
    out, _ = split_duplicates(_logits(both, both, both), 0.5)
    sizes = sorted(int(m.sum()) for m in (out > 0).numpy())
    assert sizes == [64, 100, 164]
    # a speck below min_share of the largest region is not an instance, but stays covered
    specked = _blobs(A, B, (0, 31, 1, 32))
    out, splits = split_duplicates(_logits(specked, specked), 0.5, min_share=0.1)
    assert splits[0].regions == (100, 64, 1)
    masks = (out > 0).numpy()
    assert np.array_equal(masks.any(axis=0), specked)
    assert sorted(int(m.sum()) for m in masks) in ([64, 101], [65, 100])


def test_duplicate_groups_link_through_a_chain():
    a, b = _blobs((0, 0, 10, 10)), _blobs((0, 0, 10, 12))
    c, far = _blobs((0, 0, 10, 14)), _blobs(B)
    assert duplicate_groups(np.stack([a, far, b, c]), 0.8) == [[0, 2, 3]]
    assert duplicate_groups(np.stack([a, far]), 0.8) == []


def test_bundled_default_gives_each_cheese_wedge_its_own_mask():
    model, _ = load_model("default")
    assert model.config.instance_overlap > 0
    sample = generate_sample(0, "test", 568)  # "everything that is made from milk"
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    turns = [[Turn(sample.texts[0])]]
    alone = {"instance_question": "", "mask_names": False}  # the split alone
    free = model.answer_batch([cache], turns, **alone)[0]
    model.config.instance_overlap = 0.0
    kept = model.answer_batch([cache], turns, **alone)[0]
    text = "Here they are: the cheese wedge <SEG> and the cheese wedge <SEG>."
    assert free.text == kept.text == text and "instance_split" in free.extras
    assert len(sample.target_masks) == 3  # the third wedge is missed either way

    def ious(logits: torch.Tensor) -> np.ndarray:  # (mask, target)
        masks = logits.numpy() > 0
        return np.array(
            [[(m & t).sum() / (m | t).sum() for t in sample.target_masks] for m in masks]
        )

    assert ious(kept.mask_logits).max() < 0.6  # each mask holds both wedges
    matched = ious(free.mask_logits)[:, :2]
    assert min(matched.max(axis=0)) > 0.7 and min(matched.max(axis=1)) > 0.7  # one each


LABELS = [["orange", "oranges"], ["cat", "cats"], ["potted plant", "potted plants"], ["plant"]]


def test_target_classes_name_the_class_right_before_each_target():
    text = "They are the striped orange cat <SEG>, the orange <SEG> and the Orange <SEG>."
    assert target_classes(text, LABELS) == [1, 0, 0]
    assert repeated_classes(text, LABELS) == {0: [1, 2]}
    assert target_classes("Sure, it is <SEG>.", LABELS) == [None]
    assert target_classes("the potted plant <SEG> and a plant <SEG>", LABELS) == [2, 3]
    assert repeated_classes("the potted plant <SEG> and a plant <SEG>", LABELS) == {}
    assert target_classes("There is no orange in this image.", LABELS) == []
    question = instance_question("Where are the {plural}?", LABELS[2])
    assert question == "Where are the potted plants?"
    assert instance_question("Segment every {name}.", LABELS[3]) == "Segment every plant."


def test_take_regions_gives_each_mask_one_instance():
    one = _blobs(A)
    logits = _logits(one, one)  # both masks on the same instance: nothing to split
    logits[1, 2:10, 2:10] = 5.0  # the second is surer of it
    found = _logits(_blobs(A, B), strength=4.0)[0]
    out, regions, spare = take_regions(logits, [0, 1], found)
    masks = (out > 0).numpy()
    assert regions == (100, 64) and spare.shape == (0, 32, 32)
    assert np.array_equal(masks[1], _blobs(A)) and np.array_equal(masks[0], _blobs(B))
    assert out[0, 25, 25] == 4.0 and out[0, 5, 5] <= OUTSIDE_LOGIT
    assert torch.equal(logits[0], _logits(one)[0])  # the input is not changed
    # three instances for two masks: the third goes to the mask surer of it; specks are
    # dropped; a mask outside the group is left alone
    other = _blobs((12, 0, 16, 4))
    logits = torch.cat([_logits(one, one), _logits(other)])
    logits[0, 0:2, 20:24] = 2.0
    found = _logits(_blobs(A, B, (0, 20, 8, 28), (31, 31, 32, 32)))[0]
    out, regions, spare = take_regions(logits, [0, 1], found)
    assert regions == (100, 64, 64) and len(spare) == 0
    masks = (out > 0).numpy()
    assert np.array_equal(masks[1], _blobs(A))  # the surer of A keeps it
    assert np.array_equal(masks[0], _blobs(B, (0, 20, 8, 28)))
    assert not masks[:2, 31, 31].any()
    assert torch.equal(out[2], logits[2])
    # with `spare` the instance no mask is matched to becomes a mask of its own (the first
    # mask is surer of the third instance than of B, so B is the spare one)
    out, regions, spare = take_regions(logits, [0, 1], found, spare=True)
    masks = (out > 0).numpy()
    assert np.array_equal(masks[1], _blobs(A))
    assert np.array_equal(masks[0], _blobs((0, 20, 8, 28)))
    assert spare.shape == (1, 32, 32) and np.array_equal((spare[0] > 0).numpy(), _blobs(B))
    assert spare[0, 25, 25] == found[25, 25] and spare[0, 5, 5] <= OUTSIDE_LOGIT
    assert torch.equal(out[2], logits[2])
    # the instance question found nothing: unchanged
    out, regions, spare = take_regions(logits, [0, 1], torch.full((32, 32), -3.0), spare=True)
    assert out is logits and regions == () and len(spare) == 0


def test_bundled_default_asks_for_the_socks_it_grounds_twice():
    model, _ = load_model("default")
    assert model.config.instance_question == "Where are the {plural}?"
    sample = generate_sample(1, "test", 30, kind="multi")  # "Highlight each of the socks."
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    turns = [[Turn(sample.texts[0])]]
    asked = model.answer_batch([cache], turns, mask_names=False)[0]
    alone = model.answer_batch([cache], turns, instance_question="")[0]
    text = "Here they are: the red sock <SEG> and the red sock <SEG>."
    assert asked.text == alone.text == text
    # with mask colours (on in the default) the second sock, now a mask of its own, is named
    coloured = model.answer_batch([cache], turns)[0]
    assert coloured.text == "Here they are: the red sock <SEG> and the purple sock <SEG>."
    assert torch.equal(coloured.mask_logits, asked.mask_logits)
    assert [extra["question"] for extra in asked.extras["instance_question"]] == [
        "Where are the socks?"
    ]
    assert "instance_question" not in alone.extras
    assert asked.extras["instance_question"][0]["answer"].startswith("It is <SEG>.")  # given
    with pytest.raises(ValueError, match="answer starts"):
        model.answer_batch([cache], turns, starts=["It is", "It is"])
    assert sorted(sample.target_names) == ["purple sock", "red sock"]

    def ious(logits: torch.Tensor) -> np.ndarray:  # (mask, target)
        masks = logits.numpy() > 0
        return np.array(
            [[(m & t).sum() / (m | t).sum() for t in sample.target_masks] for m in masks]
        )

    assert ious(alone.mask_logits).max(axis=0).min() < 0.1  # both masks on one sock
    found = ious(asked.mask_logits)
    assert found.max(axis=0).min() > 0.8 and found.max(axis=1).min() > 0.8  # one sock each


def test_bundled_default_grounds_a_third_orange_as_a_target_of_its_own():
    model, _ = load_model("default")
    assert model.config.instance_spare
    sample = generate_sample(0, "test", 115)  # "... grows on trees": three oranges, a cherry
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    turns = [[Turn(sample.texts[0])]]
    # group members (tests/test_members.py) would add the cherries, which this test is not about
    model.config.group_members = False
    model.config.instance_spare = False
    try:
        merged = model.answer_batch([cache], turns)[0]
        model.config.instance_spare = True
        spared = model.answer_batch([cache], turns)[0]
    finally:
        model.config.instance_spare = True
        model.config.group_members = True
    assert merged.text == "I found the orange <SEG> and the orange <SEG>."
    assert spared.text == "I found the orange <SEG> and the orange <SEG> and the orange <SEG>."
    assert spared.extras.get("raw_text") is None and len(spared.token_ids) > len(merged.token_ids)
    masks = spared.mask_logits.numpy() > 0
    assert len(masks) == len(spared.scores) == 3 and masks.sum(axis=0).max() == 1  # disjoint
    assert np.array_equal(masks.any(axis=0), (merged.mask_logits.numpy() > 0).any(axis=0))
    named = zip(sample.target_masks, sample.target_names, strict=True)
    oranges = [target for target, name in named if "orange" in name]
    assert len(oranges) == 3
    best = [max((m & t).sum() / (m | t).sum() for m in masks) for t in oranges]
    assert min(best) > 0.7  # one mask on each orange


def test_bundled_default_instances_come_from_the_snapped_instance_answer() -> None:
    """A fresh-stream query (seed 23): "Which objects here are baked into pies?" of two
    cherries. The instance answer's union, region-snapped, falls apart into the two cherries
    (multi-target IoU 1.0 in the eval); as it is, into pieces that become four targets."""

    model, _ = load_model("default")
    sample = generate_sample(23, "test", 230)
    assert sample.texts[0] == "Which objects here are baked into pies?"
    assert len(sample.target_masks) == 2
    cache = encode_image(model, sample.image)
    turns = [[Turn(sample.texts[0])]]
    targets = [t.astype(np.uint8) for t in sample.target_masks]

    def score(answer) -> float:
        return hungarian_multi_target_iou(list(answer.mask_logits.numpy() > 0), targets)

    answer = model.answer_batch([cache], turns)[0]
    assert answer.text == "They are the cherry <SEG> and the cherry <SEG>."
    assert score(answer) > 0.95
    plain = model.answer_batch([cache], turns, snap_scale=0.0)[0]
    assert len(plain.scores) == 4 and score(plain) < 0.5


def _answer(model, text: str, masks: list[np.ndarray]) -> Answer:
    ids = model.preprocessor.tokenizer.encode(text, add_special_tokens=False)
    return Answer(text, torch.tensor(ids), _logits(*masks), torch.full((len(masks),), 0.9))


def test_repeated_targets_of_a_several_class_answer_are_one_target():
    model, _ = load_model("default")
    assert model.config.instance_overlap > 0
    glass, cup = _blobs(A, size=64), _blobs(B, size=64)
    other = _blobs((40, 40, 50, 50), size=64)
    text = "The wine glass <SEG> and the wine glass <SEG> and the blue cup <SEG>."
    answer = _answer(model, text, [glass, glass, cup])
    model._drop_repeats([answer])
    assert answer.text == "The wine glass <SEG> and the blue cup <SEG>."
    assert len(answer.scores) == 2 and answer.extras["repeats_dropped"] == ["wine glass"]
    assert np.array_equal(answer.mask_logits.numpy() > 0, np.stack([glass, cup]))
    kept = [  # one class only; separate objects; other words; the setting off
        _answer(model, "The lemon <SEG> and the lemon <SEG>.", [glass, glass]),
        _answer(model, text, [glass, other, cup]),
        _answer(
            model, "The red cup <SEG> and the blue cup <SEG> and the key <SEG>.", [cup, cup, glass]
        ),
    ]
    model._drop_repeats(kept)
    model.config.instance_overlap = 0.0
    off = _answer(model, text, [glass, glass, cup])
    model._drop_repeats([off])
    for answer, count in zip([*kept, off], (2, 3, 3, 3), strict=True):
        assert len(answer.scores) == count and "repeats_dropped" not in answer.extras


def test_bundled_default_names_a_wine_glass_once():
    model, _ = load_model("default")
    sample = generate_sample(23, "test", 454)  # one wine glass and a blue cup
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    answer = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert answer.text == "The wine glass <SEG> and the blue cup <SEG>."
    assert answer.extras["repeats_dropped"] == ["wine glass"] and len(answer.scores) == 2


def _cells(model, reads: dict[tuple[int, int], str], grid: int = 4) -> torch.Tensor:
    """(1, C, grid, grid) probe cells: each listed cell reads its class, the rest background."""
    labels = model.config.probe_labels
    cells = torch.zeros(1, len(labels) + 1, grid, grid)
    cells[0, 0] = 1.0
    for (y, x), name in reads.items():
        index = next(k for k, label in enumerate(labels) if label[0] == name)
        cells[0, :, y, x] = 0.0
        cells[0, index + 1, y, x] = 1.0
    return cells


def test_targets_whose_class_the_probe_does_not_read_are_dropped():
    """Four targets on four 16-pixel cells; the probe reads a balloon under "the green apple",
    so that target goes and the answer is written again; with three targets of which two are
    unseen, only the least read goes (two stay); two targets are left alone."""
    model, _ = load_model("default")
    corners = [(0, 0), (0, 3), (3, 3), (3, 0)]
    masks = [
        _blobs((16 * y + 2, 16 * x + 2, 16 * y + 14, 16 * x + 14), size=64) for y, x in corners
    ]
    cells = _cells(model, dict(zip(corners, ["apple", "balloon", "cup", "key"], strict=True)))
    text = "The red apple <SEG> and the green apple <SEG> and the blue cup <SEG> and the key <SEG>."
    answer = _answer(model, text, masks)
    model._drop_unseen([answer], cells)
    assert answer.text == "The red apple <SEG> and the blue cup <SEG> and the key <SEG>."
    assert answer.extras["unseen_dropped"] == ["apple"]
    assert np.array_equal(answer.mask_logits.numpy() > 0, np.stack([masks[0], *masks[2:]]))
    # the cup's cell reads 3% cup, 97% key: unseen too, but it is read more than the apple
    cup, key = (
        next(k for k, label in enumerate(model.config.probe_labels) if label[0] == name) + 1
        for name in ("cup", "key")
    )
    cells[0, cup, 3, 3], cells[0, key, 3, 3] = 0.03, 0.97
    three = _answer(model, "The apple <SEG> and the cup <SEG> and the key <SEG>.", masks[1:])
    model._drop_unseen([three], cells)
    assert three.text == "The cup <SEG> and the key <SEG>." and three.extras["unseen_dropped"] == [
        "apple"
    ]
    two = _answer(model, "The apple <SEG> and the cup <SEG>.", masks[1:3])
    model._drop_unseen([two], cells)
    assert len(two.scores) == 2 and "unseen_dropped" not in two.extras


def test_bundled_default_drops_a_fish_that_is_not_there():
    """ "Find every fish in this picture." (seed 23): the LLM lists a third, yellow fish whose
    mask the probe does not read as a fish; it goes, and two fish masks remain, each a fish."""
    model, _ = load_model("default")
    sample = generate_sample(23, "test", 142)
    answer = model.answer_batch([encode_image(model, sample.image)], [[Turn(sample.texts[0])]])[0]
    assert answer.extras["unseen_dropped"] == ["fish"]
    assert answer.text == "I found the orange fish <SEG> and the blue fish <SEG>."
    masks = answer.mask_logits.numpy() > 0
    targets = [t.astype(np.uint8) for t in sample.target_masks]
    assert len(targets) == 2 and hungarian_multi_target_iou(list(masks), targets) > 0.7


def test_bundled_default_answers_a_plural_request_with_the_class_instances():
    """ "Segment all the carrots." (development stream, seed 21): the LLM answers with two
    umbrellas; as a plural request the answer becomes the instance question's regions, each
    a carrot, and they cover the four carrots; with plural requests off, the umbrellas stay."""
    model, _ = load_model("default")
    assert model.config.plural_requests
    sample = generate_sample(21, "test", 530)
    assert sample.texts[0] == "Segment all the carrots."
    cache = encode_image(model, sample.image)
    answer = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert "umbrella" in answer.extras["plural_request"]["rejected"]
    assert answer.text.startswith("The carrot <SEG> and the carrot <SEG>")
    masks = list(answer.mask_logits.numpy() > 0)
    targets = [t.astype(np.uint8) for t in sample.target_masks]
    assert len(targets) == 4 and hungarian_multi_target_iou(masks, targets) > 0.6
    model.config.plural_requests = False
    try:
        plain = model.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    finally:
        model.config.plural_requests = True
    assert "plural_request" not in plain.extras and "umbrella" in plain.text
