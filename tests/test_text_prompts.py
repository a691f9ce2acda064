"""SAM4MLLM's text prompts: format, tolerant parsing (incl. fuzzing), grid <-> pixels."""

from __future__ import annotations

import math
import random

import pytest

from pixelreason.models.heads.text_prompts import (
    GRID,
    MAX_POINTS,
    NO_OBJECT,
    TextPrompt,
    box_to_grid,
    format_prompt,
    grid_box_to_pixels,
    grid_point_to_pixels,
    grid_points,
    parse_prompt,
    parse_prompts,
    point_to_grid,
    replace_prompts,
)
from pixelreason.tokenizer import bundled_tokenizer

EXAMPLE = "box(120,45,380,300) in(200,150) in(250,180) out(90,60)"


def test_format_writes_the_documented_text_and_parses_back() -> None:
    text = format_prompt((120, 45, 380, 300), [(200, 150), (250, 180), (90, 60)], [1, 1, 0])
    assert text == EXAMPLE
    prompt = parse_prompt(text)
    assert prompt.box == (120, 45, 380, 300)
    assert prompt.points == ((200, 150), (250, 180), (90, 60)) and prompt.labels == (1, 1, 0)
    assert not prompt.no_object and prompt.notes == ()
    assert prompt.to_text() == text and prompt.span == (0, len(text))
    assert format_prompt((0, 0, 999, 999)) == "box(0,0,999,999)"


@pytest.mark.parametrize(
    ("box", "points", "labels"),
    [((0, 0, 1000, 5), [], []), ((1, 2, 3), [], []), ((1, 2, 3, 4), [(1, 2)], []),
     ((1, 2, 3, 4), [(1, 2)], [2]), ((1, 2, 3, 4), [(-1, 2)], [1])],
)  # fmt: skip
def test_format_refuses_values_off_the_grid(box, points, labels) -> None:
    with pytest.raises(ValueError):
        format_prompt(box, points, labels)


def test_bundled_tokenizer_spells_a_prompt_with_ordinary_tokens() -> None:
    """One token per digit, no unknown bytes, and an exact round trip."""
    tokenizer = bundled_tokenizer()
    ids = tokenizer(" " + EXAMPLE, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == " " + EXAMPLE
    assert tokenizer.unk_token_id not in ids
    assert len(ids) <= 50
    digits = [tokenizer.convert_tokens_to_ids(d) for d in "0123456789"]
    assert tokenizer.unk_token_id not in digits
    no_object = tokenizer(" " + NO_OBJECT, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(no_object) == " " + NO_OBJECT


def test_an_answer_with_several_targets_gives_one_block_each() -> None:
    text = f"They are {EXAMPLE} and box(500,500,900,990) out(1,2), and {NO_OBJECT}"
    blocks = parse_prompts(text)
    assert [b.box for b in blocks] == [(120, 45, 380, 300), (500, 500, 900, 990), None]
    assert [b.no_object for b in blocks] == [False, False, True]
    assert blocks[1].labels == (0,)
    assert replace_prompts(text, "<SEG>") == f"They are <SEG> and <SEG>, and {NO_OBJECT}"
    assert text[slice(*blocks[1].span)] == "box(500,500,900,990) out(1,2)"


@pytest.mark.parametrize(
    ("text", "box", "points", "note"),
    [
        ("box(1,2,3,4) in(5,6", (1, 2, 3, 4), ((5, 6),), None),  # missing bracket
        ("box 1, 2, 3, 4 in 5 6", (1, 2, 3, 4), ((5, 6),), None),  # no brackets at all
        ("box(1,2,3", None, (), "4 numbers"),  # truncated box
        ("box(1,2,3,4) in(5", (1, 2, 3, 4), (), "2 numbers"),  # truncated point
        ("box(1,2,3,1000) in(5,6)", None, (), "outside 0-999"),
        ("box(1,2,3,4) in(5,-6) out(7,8)", (1, 2, 3, 4), ((7, 8),), "outside 0-999"),
        ("box(1,2,3,4) in(5,99999999999999999999999)", (1, 2, 3, 4), (), "outside 0-999"),
        ("box(9,8,3,4)", (3, 4, 9, 8), (), "reordered"),
        ("box(1,2,3,4,5) in(5,6,7)", (1, 2, 3, 4), ((5, 6),), "extra numbers"),
        ("in(5,6) box(1,2,3,4)", (1, 2, 3, 4), (), "needs a box before it"),
        ("box(1,2,3,4) box(5,6,7,8)", (1, 2, 3, 4), (), "further prompt"),
        ("box(1,2,3,4) and then in(5,6)", (1, 2, 3, 4), (), "needs a box before it"),
        ("garbage )))((( 12,,", None, (), "no prompt found"),
    ],
)
def test_malformed_prompts_keep_what_parses_and_say_what_was_dropped(
    text: str, box, points, note: str | None
) -> None:
    prompt = parse_prompt(text)
    assert prompt.box == box and prompt.points == points
    if note is None:
        assert prompt.notes == ()
    else:
        assert any(note in n for n in prompt.notes), prompt.notes


def test_english_words_are_not_prompts() -> None:
    text = "There is no box in this image; the cat is out in 2 minutes, inside or about."
    assert parse_prompts(text) == []
    assert replace_prompts(text, "<SEG>") == text


def test_no_object_and_too_many_points() -> None:
    assert parse_prompt("no object found").no_object
    assert parse_prompt(NO_OBJECT).box is None
    many = "box(1,2,3,4)" + " in(5,6)" * (MAX_POINTS + 5)
    prompt = parse_prompt(many)
    assert len(prompt.points) == MAX_POINTS
    assert any("5 points beyond" in n for n in prompt.notes)


def _check_sane(text: str, blocks: list[TextPrompt]) -> None:
    last_end = 0
    for block in blocks:
        start, end = block.span
        assert last_end <= start <= end <= len(text)
        last_end = end
        if block.box is not None:
            x0, y0, x1, y1 = block.box
            assert 0 <= x0 <= x1 < GRID and 0 <= y0 <= y1 < GRID
            assert not block.no_object
        else:
            assert block.points == ()
        assert len(block.points) == len(block.labels) <= MAX_POINTS
        assert all(0 <= v < GRID for p in block.points for v in p)
        assert set(block.labels) <= {0, 1}
        assert all(isinstance(n, str) and n for n in block.notes)


def _mutate(rng: random.Random, text: str) -> str:
    alphabet = "0123456789(),; -+boxinuNOfd.\n[]"
    chars = list(text)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(5)
        at = rng.randrange(len(chars) + 1)
        if kind == 0 and chars:  # delete
            del chars[min(at, len(chars) - 1)]
        elif kind == 1:  # insert
            chars.insert(at, rng.choice(alphabet))
        elif kind == 2 and chars:  # replace
            chars[min(at, len(chars) - 1)] = rng.choice(alphabet)
        elif kind == 3:  # truncate
            chars = chars[:at]
        else:  # duplicate a slice
            end = min(len(chars), at + rng.randint(1, 12))
            chars[at:at] = chars[at:end]
    return "".join(chars)


def test_fuzzed_model_output_never_raises_and_stays_sane() -> None:
    rng = random.Random(1234)
    junk_alphabet = "".join(chr(c) for c in range(32, 127)) + "éü中\u0000\t"
    cases, with_box, with_notes = 0, 0, 0
    for _ in range(3000):
        k = rng.randint(0, 4)
        box = sorted(rng.sample(range(GRID), 2))
        valid = format_prompt(
            (box[0], box[0], box[1], box[1]),
            [(rng.randrange(GRID), rng.randrange(GRID)) for _ in range(k)],
            [rng.randint(0, 1) for _ in range(k)],
        )
        choice = rng.random()
        if choice < 0.6:
            text = "It is " + _mutate(rng, valid + " and " + valid) + "."
        elif choice < 0.8:
            text = "".join(rng.choice(junk_alphabet) for _ in range(rng.randint(0, 200)))
        else:
            pieces = ["box(", "in(", "out(", ")", ",", "999", "1000", "-3", "No object found."]
            text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        blocks = parse_prompts(text)
        _check_sane(text, blocks)
        single = parse_prompt(text)
        _check_sane(text, [single])
        shown = replace_prompts(text, "<SEG>")
        assert shown.count("<SEG>") - text.count("<SEG>") == sum(b.has_box for b in blocks)
        cases += 1
        with_box += single.has_box
        with_notes += bool(single.notes)
    # The cases really mix usable prompts with damaged ones.
    assert cases == 3000 and 1000 < with_box < 2900 and with_notes > 500
    for bad in (None, 17, b"box(1,2,3,4)"):
        assert parse_prompts(bad) == []  # type: ignore[arg-type]
        assert parse_prompt(bad).box is None  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(48, 80), (7, 999), (1000, 1), (333, 640)])
def test_pixel_centres_survive_the_grid_round_trip(size: tuple[int, int]) -> None:
    height, width = size
    for x in range(width):
        for y in range(0, height, max(height // 7, 1)):
            gx, gy = point_to_grid((x + 0.5, y + 0.5), size)
            px, py = grid_point_to_pixels((gx, gy), size)
            assert math.floor(px) == x and math.floor(py) == y


def test_grid_boxes_cover_their_pixel_box_and_grid_points_stay_inside() -> None:
    size = (48, 80)
    for box in [(8, 8, 30, 28), (0, 0, 80, 48), (79, 47, 80, 48), (10, 3, 11, 4)]:
        grid = box_to_grid(box, size)
        x0, y0, x1, y1 = grid_box_to_pixels(grid, size)
        assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]
        assert x1 - box[2] < 80 / GRID + 1e-9 and box[0] - x0 < 80 / GRID + 1e-9
        cells = grid_points(grid, 5)
        assert len(cells) == 25
        assert all(grid[0] <= x <= grid[2] and grid[1] <= y <= grid[3] for x, y in cells)
    assert len(set(grid_points((0, 0, 999, 999), 5))) == 25
