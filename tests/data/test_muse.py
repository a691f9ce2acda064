"""MUSE format: round trip, RLE and polygon reading, malformed files, samples, world export."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelreason import cli
from pixelreason.data.formats.muse import (
    MuseQuestion,
    MuseRecord,
    load_muse,
    record_samples,
    save_muse,
)
from pixelreason.data.formats.reasonseg import DatasetFormatError
from pixelreason.data.world import KINDS, generate_sample
from pixelreason.data.world.export import export_muse, to_muse
from pixelreason.prompting import Turn

H, W = 10, 12


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """A (H, W) bool mask with columns x0..x1-1 and rows y0..y1-1 set."""
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _records() -> list[MuseRecord]:
    ring = _box(1, 1, 6, 6) & ~_box(2, 2, 5, 5)  # not a box: checks the pixels, not the bbox
    first = MuseRecord(
        image="images/a.png",
        height=H,
        width=W,
        questions=[
            MuseQuestion(
                "Which things here would you eat?",
                "The apple {seg} and the pear {seg}.",
                [_box(3, 2, 8, 5), ring],
                ["apple", "pear"],
            ),
            MuseQuestion("Is there a cat?", "There is no cat.", [], []),
        ],
        extra={"id": "a", "source": {"hand": True}},
    )
    second = MuseRecord(
        "images/b.png",
        H,
        W,
        [MuseQuestion("What is in the corner?", "A cup {seg}.", [_box(10, 8, 12, 10)], ["cup"])],
    )
    return [first, second]


def _uncompressed(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts (column-major runs, starting with background)."""
    counts, value, run = [], False, 0
    for pixel in mask.flatten(order="F"):
        if bool(pixel) != value:
            counts.append(run)
            value, run = not value, 0
        run += 1
    return [*counts, run]


def test_round_trip_keeps_masks_texts_and_extra_keys(tmp_path: Path) -> None:
    records = _records()
    path = tmp_path / "muse_val.json"
    save_muse(records, path)
    loaded = load_muse(path)
    assert len(loaded) == 2
    for got, want in zip(loaded, records, strict=True):
        assert (got.image, got.height, got.width) == (want.image, want.height, want.width)
        assert got.extra == want.extra
        assert len(got.questions) == len(want.questions)
        for q, w in zip(got.questions, want.questions, strict=True):
            assert (q.question, q.text_answer) == (w.question, w.text_answer)
            assert q.categories == w.categories
            assert len(q.masks) == len(w.masks)
            for m, e in zip(q.masks, w.masks, strict=True):
                assert m.dtype == bool and m.shape == (H, W)
                np.testing.assert_array_equal(m, e)

    raw = json.loads(path.read_text())
    first = raw[0]
    assert first["questions"] == ["Which things here would you eat?", "Is there a cat?"]
    assert first["text_answers"][0].count("{seg}") == 2
    assert first["id"] == "a" and first["source"] == {"hand": True}
    assert [len(a) for a in first["answers"]] == [2, 0]
    apple, pear = first["answers"][0]
    assert apple["category"] == "apple" and pear["category"] == "pear"
    for annotation in (apple, pear):
        segmentation = annotation["segmentation"]
        assert set(segmentation) == {"size", "counts"}  # plain COCO RLE
        assert segmentation["size"] == [H, W] and isinstance(segmentation["counts"], str)
    assert apple["bbox"] == [3, 2, 5, 3]  # [x, y, w, h]
    assert pear["bbox"] == [1, 1, 5, 5]
    assert raw[1]["answers"][0][0]["bbox"] == [10, 8, 2, 2]


def _record_json(segmentation: object, text: str = "It is {seg}.") -> dict:
    return {
        "image": "x.png",
        "height": H,
        "width": W,
        "questions": ["where?"],
        "text_answers": [text],
        "answers": [[{"segmentation": segmentation, "category": "thing"}]],
    }


def _load_one(tmp_path: Path, payload: object) -> np.ndarray:
    path = tmp_path / "muse.json"
    path.write_text(json.dumps([payload]))
    (record,) = load_muse(path)
    (question,) = record.questions
    (mask,) = question.masks
    assert mask.dtype == bool and mask.shape == (H, W)
    return mask


def test_polygon_segmentations_are_rasterised(tmp_path: Path) -> None:
    # A wide rectangle, x 1..8 and y 1..4: pixels well inside are set, pixels well outside not.
    mask = _load_one(tmp_path, _record_json([[1, 1, 8, 1, 8, 4, 1, 4]]))
    assert mask[2:4, 2:8].all()
    assert not mask[6:].any() and not mask[:, 10:].any() and not mask[0].any()
    # Several polygons of one target are merged.
    mask = _load_one(tmp_path, _record_json([[1, 1, 4, 1, 4, 4, 1, 4], [7, 5, 11, 5, 11, 9, 7, 9]]))
    assert mask[2, 2] and mask[7, 9]
    assert not mask[7, 2] and not mask[2, 9]


def test_uncompressed_rle_is_read(tmp_path: Path) -> None:
    expected = _box(3, 2, 8, 5) | _box(0, 9, 2, 10)
    rle = {"size": [H, W], "counts": _uncompressed(expected)}
    assert sum(rle["counts"]) == H * W
    np.testing.assert_array_equal(_load_one(tmp_path, _record_json(rle)), expected)


def _valid() -> dict:
    return {
        "image": "x.png",
        "height": H,
        "width": W,
        "questions": ["what to eat?", "any cat?"],
        "text_answers": ["The apple {seg}.", "No cat."],
        "answers": [
            [{"segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]], "category": "apple"}],
            [],
        ],
    }


def _broken(**changes: object) -> list[dict]:
    """Two records; the second (record 1) gets the changes (None deletes a key)."""
    record = _valid()
    for key, value in changes.items():
        if value is None:
            del record[key]
        else:
            record[key] = value
    return [_valid(), record]


def _target(segmentation: object) -> list[dict]:
    return _broken(answers=[[{"segmentation": segmentation}], []])


MALFORMED = {
    "not_json": ("[{not json", "not valid JSON"),
    "not_list": ({"records": []}, "expected a JSON list of records"),
    "record_not_object": ([_valid(), "x.png"], "record 1: expected an object"),
    "missing_key": (_broken(answers=None), r"record 1: missing keys \['answers'\]"),
    "bad_size": (_broken(height=0), "record 1: height and width must be positive"),
    "not_lists": (_broken(questions="what?"), "record 1: .*must be lists"),
    "length_mismatch": (
        _broken(text_answers=["The apple {seg}."]),
        "record 1: questions, text_answers and answers differ in length",
    ),
    "too_few_seg": (
        _broken(text_answers=["The apple.", "No cat."]),
        r"record 1, question 0: 0 \{seg\} but 1 annotations",
    ),
    "too_many_seg": (
        _broken(text_answers=["The apple {seg}.", "No cat {seg}."]),
        r"record 1, question 1: 1 \{seg\} but 0 annotations",
    ),
    "question_not_string": (
        _broken(questions=[["what to eat?"], "any cat?"]),
        "record 1, question 0: question and text answer must be strings",
    ),
    "answers_entry_not_list": (
        _broken(answers=[[{"segmentation": [[1, 1, 5, 1, 5, 5]]}], {}]),
        "record 1, question 1: answers entry must be a list",
    ),
    "no_segmentation": (
        _broken(answers=[[{"bbox": [1, 1, 4, 4]}], []]),
        "record 1, question 0, target 0: annotation needs a segmentation",
    ),
    "rle_size_mismatch": (
        _target({"size": [W, H], "counts": "abc"}),
        r"record 1, question 0, target 0: RLE size \[12, 10\] != \[10, 12\]",
    ),
    "rle_counts_type": (
        _target({"size": [H, W], "counts": 7}),
        "record 1, question 0, target 0: RLE counts must be a string or a list",
    ),
    "rle_counts_short": (
        _target({"size": [H, W], "counts": [5, 5]}),  # would decode uninitialised memory
        "record 1, question 0, target 0: RLE counts do not sum to 120",
    ),
    "rle_counts_long": (
        _target({"size": [H, W], "counts": [5, 200]}),
        "record 1, question 0, target 0: RLE counts do not sum to 120",
    ),
    "rle_counts_not_numbers": (
        _target({"size": [H, W], "counts": [5, "x"]}),
        "record 1, question 0, target 0: unreadable segmentation",
    ),
    "rle_counts_garbage": (
        _target({"size": [H, W], "counts": "garbage!!"}),
        "record 1, question 0, target 0: unreadable segmentation",
    ),
    "odd_polygon": (
        _target([[1, 1, 5, 1, 5, 5, 1]]),
        "record 1, question 0, target 0: polygons need an even number",
    ),
    "short_polygon": (
        _target([[1, 1, 5, 1]]),  # four numbers would be read as a box by pycocotools
        "record 1, question 0, target 0: polygons need an even number",
    ),
    "polygon_not_numbers": (
        _target([[1, "a", 5, 1, 5, 5]]),
        "record 1, question 0, target 0: unreadable segmentation",
    ),
    "segmentation_neither": (
        _target("a mask"),
        "record 1, question 0, target 0: segmentation must be COCO RLE or a list of polygons",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_one_line_errors(tmp_path: Path, case: str) -> None:
    payload, message = MALFORMED[case]
    path = tmp_path / "muse_bad.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    with pytest.raises(DatasetFormatError, match=message) as info:
        load_muse(path)
    text = str(info.value)
    assert text.count(str(path)) == 1 and "\n" not in text  # named once, not nested
    assert isinstance(info.value, ValueError)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="MUSE file not found"):
        load_muse(tmp_path / "muse_nope.json")


def test_answer_uses_seg_tokens() -> None:
    question = MuseQuestion("q", "The apple {seg} and the pear {seg}.", [], [])
    assert question.answer == "The apple <SEG> and the pear <SEG>."
    assert MuseQuestion("q", "None.", [], []).answer == "None."


def test_record_samples_one_per_question(tmp_path: Path) -> None:
    record = _records()[0]
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    samples = list(record_samples(record, tmp_path))
    assert len(samples) == 2
    first, second = samples
    assert first.image.size == (W, H) and first.image.mode == "RGB"
    assert first.turns == [
        Turn("Which things here would you eat?", "The apple <SEG> and the pear <SEG>.")
    ]
    assert len(first.masks) == 2
    for got, want in zip(first.masks, record.questions[0].masks, strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want.astype(np.uint8))
    assert second.turns == [Turn("Is there a cat?", "There is no cat.")] and second.masks == []


def test_record_samples_rejects_wrong_or_missing_image(tmp_path: Path) -> None:
    record = _records()[0]
    with pytest.raises(DatasetFormatError, match="cannot read image"):
        list(record_samples(record, tmp_path))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (H, W)).save(tmp_path / "images" / "a.png")  # transposed
    with pytest.raises(DatasetFormatError, match="the record says 12x10"):
        list(record_samples(record, tmp_path))


def _check_against_generator(path: Path, split: str, count: int) -> None:
    records = load_muse(path)
    assert len(records) == count
    for index, record in enumerate(records):
        sample = generate_sample(0, split, index, size=128)
        assert (record.height, record.width) == (128, 128)
        assert record.extra == {"id": sample.id, "kind": sample.kind}
        assert (path.parent / record.image).is_file()
        (question,) = record.questions
        assert question.question == sample.texts[0]
        assert question.answer == sample.answer
        assert question.text_answer.count("{seg}") == len(question.masks)
        assert question.categories == list(sample.target_names)
        assert len(question.masks) == len(sample.target_masks)
        for got, want in zip(question.masks, sample.target_masks, strict=True):
            np.testing.assert_array_equal(got, want)


def test_export_muse_matches_generator(tmp_path: Path) -> None:
    files = export_muse(tmp_path, seed=0, sizes={"val": 4, "zeroshot": 2}, progress=False)
    assert files == {"val": tmp_path / "muse_val.json", "zeroshot": tmp_path / "muse_zeroshot.json"}
    _check_against_generator(files["val"], "val", 4)
    _check_against_generator(files["zeroshot"], "zeroshot", 2)
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(images) == 6 and len(set(images)) == 6
    # The written images are the generator's and feed record_samples.
    record = load_muse(files["val"])[0]
    (sample,) = record_samples(record, tmp_path)
    assert sample.image.tobytes() == generate_sample(0, "val", 0).image.tobytes()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_query_kind_survives_muse(tmp_path: Path, kind: str) -> None:
    sample = generate_sample(1, "train", 0, size=64, kind=kind)
    save_muse([to_muse(sample, "img.png")], tmp_path / "muse.json")
    (record,) = load_muse(tmp_path / "muse.json")  # validates {seg} count == masks
    (question,) = record.questions
    assert question.answer == sample.answer and record.extra["kind"] == kind
    pairs = zip(question.masks, sample.target_masks, strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


def test_cli_world_muse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "world"
    argv = ["world", str(out), "--format", "muse", "--train", "0", "--val", "2"]
    assert cli.main([*argv, "--test", "0", "--zeroshot", "0"]) == 0
    assert sorted(p.name for p in out.glob("muse_*.json")) == ["muse_val.json"]
    _check_against_generator(out / "muse_val.json", "val", 2)
    assert "muse_val.json" in capsys.readouterr().out
