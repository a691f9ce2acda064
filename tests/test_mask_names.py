"""Mask colours: each target's colour word names the colour inside its own mask."""

from __future__ import annotations

import numpy as np
import torch

from pixelreason.api import encode_image
from pixelreason.data.world.samples import generate_sample
from pixelreason.models.mask_names import (
    colour_names,
    mask_class,
    mask_colours,
    names_nothing,
    read_masks,
)
from pixelreason.prompting import Turn
from pixelreason.registry import load_model
from pixelreason.tokenizer import bundled_tokenizer

LABELS = ["red apple", "green apple", "yellow apple", "red mug", "blue mug", "orange orange"]
TARGET = 9999


def _ids(text: str) -> list[int]:
    return bundled_tokenizer().encode(text, add_special_tokens=False)


def test_colour_names_find_coloured_and_bare_targets_but_not_other_words() -> None:
    tokenizer = bundled_tokenizer()
    answer = (
        _ids("They are the red apple ")
        + [TARGET]
        + _ids(" and the apple")
        + [TARGET]
        + _ids(" and the striped mug")
        + [TARGET]
        + _ids(" and the blue mug")
        + [TARGET]
        + _ids(" and the blue apple")  # a colour apples do not come in
        + [TARGET]
    )
    names = colour_names(answer, tokenizer, LABELS, TARGET)
    assert [n.target for n in names] == [0, 1, 3, 4]  # "striped mug": no article before it
    red, bare, blue, odd = names
    assert red.colour == answer[red.position] == _ids(" red")[0]
    assert red.colours == {_ids(" red")[0]: 0, _ids(" green")[0]: 1, _ids(" yellow")[0]: 2}
    assert bare.colour is None and answer[bare.position] == _ids(" apple")[0]
    assert blue.colours == {_ids(" red")[0]: 3, _ids(" blue")[0]: 4}
    assert odd.colour == _ids(" blue")[0] and odd.colours == red.colours
    assert colour_names(_ids("The red apple is here."), tokenizer, LABELS, TARGET) == []
    one = _ids("the orange") + [TARGET]  # oranges come in one colour: nothing to tell apart
    assert colour_names(one, tokenizer, LABELS, TARGET) == []


def test_mask_colours_read_the_probe_inside_each_mask() -> None:
    tokenizer = bundled_tokenizer()
    answer = _ids("the red apple") + [TARGET] + _ids(" and the red apple") + [TARGET]
    names = colour_names(answer, tokenizer, LABELS, TARGET)
    # a 4 x 4 grid: green apple cells on the left half, red apple cells on the right
    cells = torch.zeros(len(LABELS) + 1, 4, 4)
    cells[2, :, :2] = 0.9  # class 2 = label 1, "green apple"
    cells[1, :, 2:] = 0.8  # class 1 = label 0, "red apple"
    cells[0] = 1 - cells.sum(0)
    masks = torch.full((2, 64, 64), -5.0)
    masks[0, 10:50, 4:28] = 5.0  # left: on the green apple
    masks[1, 10:50, 36:60] = 5.0  # right: on the red one
    red, green = _ids(" red")[0], _ids(" green")[0]
    assert mask_colours(read_masks(cells, masks), names) == [green, red]
    masks[0] = -5.0  # an empty mask keeps the colour it was given
    assert mask_colours(read_masks(cells, masks), names) == [red, red]


def test_bundled_default_names_the_colour_of_each_masked_sock() -> None:
    model, _ = load_model("default")
    assert model.config.mask_names
    sample = generate_sample(0, "test", 56)  # "everything that usually comes in pairs"
    assert sorted(sample.target_names) == ["blue sock", "purple sock", "red sock"]
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    turns = [[Turn(sample.texts[0])]]
    named = model.answer_batch([cache], turns)[0]
    plain = model.answer_batch([cache], turns, mask_names=False)[0]
    assert plain.text == "They are the purple sock <SEG> and the white sock <SEG>."
    assert named.text == "They are the purple sock <SEG> and the blue sock <SEG>."
    assert named.extras["mask_colour"] == {
        "rejected": plain.text,
        "changed": [{"target": 1, "was": "white", "now": "blue"}],
    }
    assert torch.equal(named.mask_logits, plain.mask_logits)  # only the words change
    # the second mask holds the blue sock and no other: the colour names what it segmented
    masks = named.mask_logits.numpy() > 0
    by_name = dict(zip(sample.target_names, sample.target_masks, strict=True))
    blue = by_name["blue sock"]
    assert (masks[1] & blue).sum() > 0.9 * blue.sum()
    assert np.all([(masks[1] & by_name[n]).sum() == 0 for n in ("purple sock", "red sock")])


def test_read_masks_and_mask_class_read_the_probe_inside_each_mask() -> None:
    cells = torch.zeros(4, 2, 2)  # background and three classes on a 2 x 2 grid
    cells[0] = 0.5
    cells[2, 0, 0] = 0.5  # class 2 (label 1) in the top-left cell
    cells[3, 1, :] = 0.5  # class 3 (label 2) along the bottom row
    masks = torch.full((3, 8, 8), -1.0)
    masks[0, :4, :4] = 1.0  # the top-left cell
    masks[1, 4:, 2:6] = 1.0  # half of each bottom cell
    read = read_masks(cells, masks)
    assert torch.allclose(read[0], torch.tensor([0.5, 0.0, 0.5, 0.0]))
    assert torch.allclose(read[1], torch.tensor([0.5, 0.0, 0.0, 0.5]))
    assert [mask_class(r) for r in read] == [1, 2, None]  # the third mask is empty


def test_names_nothing_leaves_articles_and_colours_to_the_answer() -> None:
    colours = ["red", "green"]
    assert names_nothing("Sure, it is ", colours)
    assert names_nothing("Sure, the segmentation result is", colours)
    assert not names_nothing("It is the red ", colours)
    assert not names_nothing("It is the ", colours)
    assert not names_nothing("", colours)


def test_bundled_default_names_and_splits_a_target_it_named_by_no_class() -> None:
    model, _ = load_model("default")
    sample = generate_sample(0, "test", 227)  # "Where are the sailboats?"
    assert sorted(sample.target_names) == ["blue sailboat", "blue sailboat", "brown sailboat"]
    cache = encode_image(model, sample.image)  # with its pixels: region snap on, as bundled
    turns = [[Turn(sample.texts[0])]]
    plain = model.answer_batch([cache], turns, mask_names=False)[0]
    # the colours as the colour probe reads them (the pixels' reading is checked below)
    model.config.colour_pixels = False
    try:
        named = model.answer_batch([cache], turns)[0]
    finally:
        model.config.colour_pixels = True
    assert plain.text == "Sure, it is <SEG>."  # one mask over every sailboat
    boats = " and the ".join(["brown sailboat <SEG>"] + ["blue sailboat <SEG>"] * 3)
    assert named.text == f"Sure, it is the {boats}."
    # off the pixels, the region that holds only the third boat's white sail reads white
    pixels = model.answer_batch([cache], turns)[0]
    boats = " and the ".join(f"{c} sailboat <SEG>" for c in ("brown", "blue", "white", "blue"))
    assert pixels.text == f"Sure, it is the {boats}."
    assert torch.equal(pixels.mask_logits, named.mask_logits)
    assert named.extras["mask_class"] == [{"target": 0, "classes": ["sailboat"] * 4}]
    masks = named.mask_logits.numpy() > 0
    assert len(masks) == len(named.scores) == 4 and masks.sum(axis=0).max() == 1  # disjoint
    union = plain.mask_logits[0].numpy() > 0
    assert np.array_equal(masks.any(axis=0), union)
    # two sailboats have a mask of their own; the third falls into two regions, two masks
    best = [max((m & t).sum() / (m | t).sum() for m in masks) for t in sample.target_masks]
    assert sorted(best)[1] > 0.9 and min(best) > 0.4
