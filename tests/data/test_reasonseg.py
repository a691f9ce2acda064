"""ReasonSeg format: round trip, the reference mask rule, and malformed files."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelreason.data.formats.reasonseg import (
    DatasetFormatError,
    ReasonSegSample,
    Shape,
    iter_split,
    load_sample,
    mask_from_shapes,
    save_sample,
    target_masks,
)


def _square(x0: int, y0: int, x1: int, y1: int, label: str = "target") -> Shape:
    return Shape(label=label, points=[(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _write(folder: Path, stem: str, payload: object, image: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    if image:
        Image.new("RGB", (8, 6)).save(folder / f"{stem}.jpg")
    return path


VALID = {
    "text": ["what can cut paper?"],
    "is_sentence": False,
    "shapes": [{"label": "target", "points": [[1, 1], [4, 1], [4, 4]], "shape_type": "polygon"}],
}


def test_round_trip_keeps_extra_keys(tmp_path: Path) -> None:
    shape = _square(1, 1, 5, 4)
    shape.extra["target_index"] = 1
    sample = ReasonSegSample(
        id="s1",
        image_path=Path("unused"),
        texts=["the striped mug", "the mug with stripes"],
        is_sentence=True,
        shapes=[shape, _square(0, 0, 2, 2, label="ignore")],
        extra={"kind": "explicit", "answer": "It is <SEG>."},
    )
    image = Image.fromarray(np.full((10, 12, 3), 200, dtype=np.uint8))
    written = save_sample(sample, image, tmp_path)
    assert written.image_path == tmp_path / "s1.jpg"
    raw = json.loads((tmp_path / "s1.json").read_text())
    assert list(raw)[:3] == ["text", "is_sentence", "shapes"]  # reference keys untouched
    loaded = load_sample(tmp_path / "s1.json")
    assert loaded == written
    assert loaded.shapes[0].extra == {"target_index": 1}
    assert loaded.load_image().size == (12, 10)


def test_png_images_and_sorted_split(tmp_path: Path) -> None:
    image = Image.new("RGB", (4, 4))
    for stem in ("b", "a", "c"):
        sample = ReasonSegSample(stem, Path(), ["q"], False, [])
        save_sample(sample, image, tmp_path, image_format="png")
    loaded = list(iter_split(tmp_path))
    assert [s.id for s in loaded] == ["a", "b", "c"]
    assert all(s.image_path.suffix == ".png" for s in loaded)


def test_save_refuses_to_overwrite_reference_keys(tmp_path: Path) -> None:
    sample = ReasonSegSample("x", Path(), ["q"], False, [], extra={"text": "oops"})
    with pytest.raises(ValueError, match="reference keys"):
        save_sample(sample, Image.new("RGB", (2, 2)), tmp_path)


def test_mask_fill_and_outline() -> None:
    mask = mask_from_shapes([_square(1, 1, 3, 3)], 5, 5)
    expected = np.zeros((5, 5), dtype=np.uint8)
    expected[1:4, 1:4] = 1  # the vertices' own pixels are painted by the outline
    np.testing.assert_array_equal(mask, expected)
    # A degenerate polygon (a line, a point) still paints its outline.
    line = mask_from_shapes([Shape("target", [(0.0, 2.0), (4.0, 2.0)])], 5, 5)
    assert line[2].tolist() == [1, 1, 1, 1, 1] and line.sum() == 5
    point = mask_from_shapes([Shape("target", [(3.7, 1.2)])], 5, 5)
    assert point[1, 3] == 1 and point.sum() == 1  # coordinates truncate like int32 casts


def test_mask_small_shapes_overwrite_large_ones() -> None:
    big_ignore = _square(0, 0, 7, 7, label="ignore")
    small_target = _square(2, 2, 4, 4)
    # Whatever the file order, the smaller target is painted last.
    for shapes in ([big_ignore, small_target], [small_target, big_ignore]):
        mask = mask_from_shapes(shapes, 8, 8)
        assert mask[3, 3] == 1 and mask[0, 0] == 255 and mask[7, 7] == 255
        assert set(np.unique(mask)) == {1, 255}
    big_target = _square(0, 0, 7, 7)
    small_ignore = _square(2, 2, 4, 4, label="Ignore_region")
    mask = mask_from_shapes([small_ignore, big_target], 8, 8)
    assert mask[3, 3] == 255 and mask[0, 0] == 1


def test_mask_skips_flag_and_any_label_paints_one() -> None:
    shapes = [_square(0, 0, 3, 3, label="Flag"), _square(5, 5, 6, 6, label="cup")]
    mask = mask_from_shapes(shapes, 8, 8)
    assert mask[:4, :4].sum() == 0
    assert mask[5:7, 5:7].tolist() == [[1, 1], [1, 1]]


def test_target_masks_split_by_index() -> None:
    a, b, c = _square(0, 0, 1, 1), _square(4, 4, 5, 5), _square(6, 0, 7, 1)
    a.extra["target_index"] = 1
    b.extra["target_index"] = 0
    c.extra["target_index"] = 1
    masks = target_masks([a, b, c], 8, 8)
    assert len(masks) == 2
    assert masks[0].sum() == 4 and masks[0][4, 4] == 1
    assert masks[1].sum() == 8 and masks[1][0, 0] == 1 and masks[1][0, 7] == 1


def _mutated(**changes: object) -> dict:
    payload = json.loads(json.dumps(VALID))
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    return payload


def _shape_payload(**changes: object) -> dict:
    shape = dict(VALID["shapes"][0])
    for key, value in changes.items():
        if value is None:
            del shape[key]
        else:
            shape[key] = value
    return _mutated(shapes=[shape])


MALFORMED = {
    "bad_json": ("{not json", "cannot read JSON"),
    "not_object": ([1, 2], "top level must be an object"),
    "missing_text": (_mutated(text=None), "missing key 'text'"),
    "missing_is_sentence": (_mutated(is_sentence=None), "missing key 'is_sentence'"),
    "missing_shapes": (_mutated(shapes=None), "missing key 'shapes'"),
    "text_not_list": (_mutated(text="a query"), "'text' must be a non-empty list"),
    "text_empty": (_mutated(text=[]), "'text' must be a non-empty list"),
    "text_not_strings": (_mutated(text=["ok", 3]), "'text' must be a non-empty list"),
    "is_sentence_int": (_mutated(is_sentence=1), "'is_sentence' must be a bool"),
    "shapes_not_list": (_mutated(shapes={}), "'shapes' must be a list"),
    "shape_not_object": (_mutated(shapes=["target"]), r"shapes\[0\] must be an object"),
    "shape_no_label": (_shape_payload(label=None), "missing key 'label'"),
    "shape_no_points": (_shape_payload(points=None), "missing key 'points'"),
    "label_not_string": (_shape_payload(label=1), "label must be a string"),
    "not_polygon": (_shape_payload(shape_type="rectangle"), "shape_type must be 'polygon'"),
    "points_empty": (_shape_payload(points=[]), "points must be a non-empty list"),
    "point_not_pair": (_shape_payload(points=[[1, 2, 3]]), r"points\[0\] is not a numeric"),
    "point_not_numeric": (_shape_payload(points=[[1, "2"]]), r"points\[0\] is not a numeric"),
    "point_bool": (_shape_payload(points=[[1, 2], [True, 2]]), r"points\[1\] is not a numeric"),
    "point_nan": (_shape_payload(points=[[1, float("nan")]]), r"points\[0\] is not a numeric"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_one_line_errors(tmp_path: Path, case: str) -> None:
    payload, message = MALFORMED[case]
    path = _write(tmp_path, "broken", payload)
    with pytest.raises(DatasetFormatError, match=message) as info:
        load_sample(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_image_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "lonely", VALID, image=False)
    with pytest.raises(DatasetFormatError, match="no image lonely"):
        load_sample(path)


def test_missing_split_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="not a directory"):
        list(iter_split(tmp_path / "nope"))
