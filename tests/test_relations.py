"""Relations: parsing questions about positions and sizes, and choosing among regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelreason.models.relations import (
    Relation,
    choose,
    distinct,
    object_proposals,
    parse_relation,
)


@pytest.mark.parametrize(
    ("query", "kind", "direction", "target", "reference"),
    [
        (
            "Segment the teapot above the green pencil.",
            "relative",
            "above",
            "teapot",
            "green pencil",
        ),
        ("Which shoe is over the umbrella?", "relative", "above", "shoe", "umbrella"),
        ("the donut to the right of the bottle", "relative", "right", "donut", "bottle"),
        (
            "Find the mushroom that is beneath the bread loaf.",
            "relative",
            "below",
            "mushroom",
            "bread loaf",
        ),
        ("What is left of the red star?", "relative", "left", "", "red star"),
        ("Segment the thing next to the lamp.", "relative", "near", "", "lamp"),
        ("Which umbrella is the leftmost one?", "extreme", "left", "umbrella", ""),
        ("Show me the lowest leaf in the picture.", "extreme", "below", "leaf", ""),
        ("Segment the rightmost object.", "extreme", "right", "", ""),
        ("What is in the top right corner of the image?", "corner", "top right", "", ""),
        ("Segment the thing nearest the bottom left corner.", "corner", "bottom left", "", ""),
        ("Which thing to wear is the tiniest?", "size", "small", "thing to wear", ""),
        ("Find the largest of the objects.", "size", "big", "", ""),
        ("Segment the smallest kitchen item in the image.", "size", "small", "kitchen item", ""),
        ("Find the biggest of the fruits.", "size", "big", "fruits", ""),
        ("Which object is the smallest?", "size", "small", "", ""),
    ],
)
def test_parse_relation_reads_plain_english(query, kind, direction, target, reference):
    relation = parse_relation(query)
    assert relation == Relation(kind, direction, target, reference)


@pytest.mark.parametrize(
    ("query", "kind", "direction", "target", "colour"),
    [
        ("The banana. Which object is nearest to it?", "relative", "near", "", ""),
        ("Where is the book? What is below it?", "relative", "below", "", ""),
        ("Show me the black scissors. Where is the other scissors?", "other", "", "scissors", ""),
        (
            "Segment the red knife. Is there another one like it? Please segment it.",
            "other",
            "",
            "",
            "",
        ),
        ("Find the cat. What else has the same colour as it?", "colour", "", "", ""),
        ("Find the cat. Segment the other orange thing.", "colour", "", "", "orange"),
    ],
)
def test_parse_relation_follow_ups_refer_to_the_earlier_sentences(
    query, kind, direction, target, colour
):
    relation = parse_relation(query)
    assert relation is not None
    assert (relation.kind, relation.direction, relation.target, relation.colour) == (
        kind,
        direction,
        target,
        colour,
    )
    assert relation.reference == "it"
    assert relation.context and query.startswith(relation.context)


@pytest.mark.parametrize(
    "query",
    [
        "Where is the striped mug?",
        "What would you use to cut paper?",
        "Can you show me what goes on top of a christmas tree?",  # no definite reference
        "Find the thing that goes over the fire and tell me why.",  # a clause, not a subject
        "Segment all the fruits.",
        "Which is the biggest and the smallest?",  # two relations
        "",
    ],
)
def test_parse_relation_leaves_other_questions_alone(query):
    assert parse_relation(query) is None


def test_parse_relation_it_without_earlier_sentences_needs_a_conversation():
    # "it" is the previous turn's object: the model fills `context` from the conversation
    relation = parse_relation("What is under it?")
    assert relation == Relation("relative", "below", "", "it", "")


def _square(x0: int, y0: int, side: int, size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_choose_relative_takes_the_nearest_candidate_on_that_side():
    reference = _square(18, 18, 4)
    far_left, near_left, right = _square(0, 18, 4), _square(10, 18, 4), _square(30, 18, 4)
    candidates = [far_left, right, near_left]
    assert choose(Relation("relative", "left", "", "x"), candidates, reference) == 2
    assert choose(Relation("relative", "right", "", "x"), candidates, reference) == 1
    assert choose(Relation("relative", "near", "", "x"), candidates, reference) == 2
    # nothing above it: no answer, rather than a guess
    assert choose(Relation("relative", "above", "", "x"), candidates, reference) is None
    # the reference itself is no candidate
    assert choose(Relation("relative", "near", "", "x"), [reference, right], reference) == 1
    # a relative relation needs its reference
    assert choose(Relation("relative", "left", "", "x"), candidates, None) is None


def test_choose_extremes_corners_and_sizes():
    small, big, low = _square(30, 2, 3), _square(5, 10, 9), _square(12, 34, 5)
    candidates = [small, big, low]
    assert choose(Relation("extreme", "left"), candidates) == 1
    assert choose(Relation("extreme", "right"), candidates) == 0
    assert choose(Relation("extreme", "above"), candidates) == 0
    assert choose(Relation("extreme", "below"), candidates) == 2
    assert choose(Relation("corner", "top right"), candidates) == 0
    assert choose(Relation("corner", "bottom left"), candidates) == 2
    assert choose(Relation("size", "big"), candidates) == 1
    assert choose(Relation("size", "small"), candidates) == 0
    assert choose(Relation("size", "small"), [np.zeros((40, 40), bool)]) is None


def test_object_proposals_are_each_masks_regions_without_specks():
    logits = torch.full((2, 40, 40), -5.0)
    logits[0, 2:12, 2:12] = 5.0  # 100 px
    logits[0, 20:28, 20:28] = 5.0  # 64 px
    logits[1, 20:28, 20:30] = 6.0  # 80 px, overlapping mask 0's second region
    logits[0, 35:37, 35:37] = 5.0  # 4 px: a speck
    found = object_proposals(logits)
    assert [(k, int(r.sum())) for k, r in found] == [(0, 100), (0, 64), (1, 80)]
    assert object_proposals(torch.full((1, 8, 8), -1.0)) == []


def test_distinct_keeps_the_stronger_of_overlapping_regions():
    a, b, c = _square(0, 0, 10), _square(2, 2, 10), _square(25, 25, 5)
    # b overlaps a by 64 of 100 px: one object; b's class is read more there
    assert distinct([a, b, c], [0.2, 0.6, 0.1]) == [1, 2]
    assert distinct([a, b, c], [0.7, 0.6, 0.1]) == [0, 2]
    # a small region half inside a big one is the same object too
    assert distinct([_square(0, 0, 20), _square(15, 15, 6)], [0.9, 0.1]) == [0]
    assert distinct([_square(0, 0, 20), _square(18, 18, 6)], [0.9, 0.1]) == [0, 1]
