"""SAM prompts written as plain text (SAM4MLLM): format, tolerant parsing, grid coordinates.

One target is written as a box and its points, integers on a 0-999 grid relative to the
image's width and height:

    box(120,45,380,300) in(200,150) in(250,180) out(90,60)

`box(x0,y0,x1,y1)` names the grid cells of the top-left and bottom-right corners (inclusive);
`in(x,y)` is a point on the target, `out(x,y)` one off it. A target that is not there is
written exactly "No object found.". No new tokens are needed: with a byte-level BPE every digit,
bracket and comma is an ordinary token (the bundled tokenizer has one token per digit).

Model output is never trusted: `parse_prompts` keeps what parses, drops the rest, and says what
it dropped in each prompt's `notes`; it never raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Coordinates are integers in [0, GRID).
GRID = 1000
NO_OBJECT = "No object found."
#: PQPP's answers to "is this point on the target?".
YES, NO = "yes", "no"
#: Points kept per prompt at most; more is junk, not a prompt.
MAX_POINTS = 32
#: Longest digit run read as a number (anything longer is out of range anyway).
_MAX_DIGITS = 4

GridBox = tuple[int, int, int, int]
GridPoint = tuple[int, int]

_ITEM = re.compile(
    r"(?<![A-Za-z])(?P<kind>box|in|out)\s*(?P<open>\()?(?P<body>[\d\s,;+-]*)(?P<close>\))?",
    re.IGNORECASE,
)
_NO_OBJECT = re.compile(r"no\s+object\s+found\.?", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?\d+")
_GAP = re.compile(r"[\s,;]*")


@dataclass(frozen=True)
class TextPrompt:
    """One prompt block of an answer, in grid coordinates.

    box: (x0, y0, x1, y1) or None when no usable box was written (then the block yields no
    mask); points: (x, y) each with labels 1 (inside) or 0 (outside); no_object: the block is
    "No object found."; notes: what was dropped or repaired; span: [start, end) in the text.
    """

    box: GridBox | None = None
    points: tuple[GridPoint, ...] = ()
    labels: tuple[int, ...] = ()
    no_object: bool = False
    notes: tuple[str, ...] = ()
    span: tuple[int, int] = (0, 0)

    @property
    def has_box(self) -> bool:
        return self.box is not None

    def to_text(self) -> str:
        if self.box is None:
            return NO_OBJECT
        return format_prompt(self.box, self.points, self.labels)

    def to_pixels(self, size: tuple[int, int]) -> dict[str, Any]:
        """The prompt SAM gets, in pixels of an image of size (H, W): `box` [x0, y0, x1, y1]
        (far edges exclusive) and `points` [x, y, label] at their cells' centres, plus the
        text it came from. Only for blocks with a box."""
        if self.box is None:
            raise ValueError("a prompt without a box has no pixel form")
        height, width = size
        return {
            "text": self.to_text(),
            "box": [round(v, 2) for v in grid_box_to_pixels(self.box, size)],
            "points": [
                [round((x + 0.5) * width / GRID, 2), round((y + 0.5) * height / GRID, 2), label]
                for (x, y), label in zip(self.points, self.labels, strict=True)
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for answer extras)."""
        return {
            "box": None if self.box is None else list(self.box),
            "points": [list(p) for p in self.points],
            "labels": list(self.labels),
            "no_object": self.no_object,
            "notes": list(self.notes),
        }


def format_prompt(
    box: Sequence[int], points: Sequence[Sequence[int]] = (), labels: Sequence[int] = ()
) -> str:
    """`box(x0,y0,x1,y1) in(x,y) ... out(x,y)`; raises ValueError on values off the grid."""
    if len(box) != 4:
        raise ValueError(f"a box has 4 coordinates, got {len(box)}")
    if len(points) != len(labels):
        raise ValueError(f"{len(points)} points but {len(labels)} labels")
    values = [*box, *(v for p in points for v in p)]
    if any(not 0 <= int(v) < GRID for v in values):
        raise ValueError(f"grid coordinates must lie in [0, {GRID}): {values}")
    if any(len(p) != 2 for p in points) or any(label not in (0, 1) for label in labels):
        raise ValueError("points are (x, y) with labels 0 or 1")
    parts = ["box({},{},{},{})".format(*(int(v) for v in box))]
    parts += [
        f"{'in' if label else 'out'}({int(x)},{int(y)})"
        for (x, y), label in zip(points, labels, strict=True)
    ]
    return " ".join(parts)


def point_question(point: Sequence[int], box: Sequence[int]) -> str:
    """PQPP's round-2 question about one grid point of the target in a grid box."""
    x, y = point
    return f"Is the point ({x},{y}) on the target in box({box[0]},{box[1]},{box[2]},{box[3]})?"


# -- parsing -----------------------------------------------------------------------------------
@dataclass
class _Block:
    start: int
    end: int
    box: GridBox | None = None
    no_object: bool = False
    points: list[GridPoint] | None = None
    labels: list[int] | None = None
    notes: list[str] | None = None
    surplus: int = 0

    def note(self, text: str) -> None:
        self.notes = [*(self.notes or []), text]

    def freeze(self) -> TextPrompt:
        if self.surplus:
            self.note(f"dropped {self.surplus} points beyond the first {MAX_POINTS}")
        return TextPrompt(
            box=self.box,
            points=tuple(self.points or ()),
            labels=tuple(self.labels or ()),
            no_object=self.no_object,
            notes=tuple(self.notes or ()),
            span=(self.start, self.end),
        )


def _numbers(body: str) -> tuple[list[int], bool]:
    """Integers of an item's body, and whether all lie on the grid."""
    found = _NUMBER.findall(body)
    in_range = all(len(s.lstrip("+-")) <= _MAX_DIGITS for s in found)
    values = [int(s) if len(s.lstrip("+-")) <= _MAX_DIGITS else GRID for s in found]
    return values, in_range and all(0 <= v < GRID for v in values)


def _shorten(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_prompts(text: str) -> list[TextPrompt]:
    """Every prompt block of `text`, in reading order; never raises.

    A block starts at each `box(...)` and at each "No object found."; `in(...)`/`out(...)`
    points that follow a box (separated only by spaces, commas or semicolons) belong to it.
    Out-of-range or missing numbers drop the item; swapped corners are put in order; points
    written away from any box form a box-less block that explains why they were dropped.
    Missing brackets are tolerated. Blocks without a usable box yield no mask.
    """
    if not isinstance(text, str):
        return []
    events: list[tuple[int, int, str, re.Match[str] | None]] = []
    for match in _ITEM.finditer(text):
        events.append((match.start(), match.end(), match["kind"].lower(), match))
    for match in _NO_OBJECT.finditer(text):
        events.append((match.start(), match.end(), "none", None))
    events.sort(key=lambda e: e[0])
    blocks: list[_Block] = []
    current: _Block | None = None
    last_end = -1
    for start, end, kind, match in events:
        if start < last_end:  # overlapping matches ("in" inside "No object found")
            continue
        if kind == "none":
            current = _Block(start, end, no_object=True)
            blocks.append(current)
            last_end = end
            continue
        assert match is not None
        values, in_range = _numbers(match["body"])
        opened = match["open"] is not None
        item = _shorten(match.group(0))
        if kind == "box":
            if not opened and len(values) < 3:
                continue  # the English word "box"
            current = _Block(start, end)
            blocks.append(current)
            last_end = end
            if len(values) < 4:
                current.note(f"dropped {item!r}: a box needs 4 numbers (truncated?)")
            elif not in_range:
                current.note(f"dropped {item!r}: coordinates outside 0-{GRID - 1}")
            else:
                if len(values) > 4:
                    current.note(f"ignored extra numbers in {item!r}")
                x0, y0, x1, y1 = values[:4]
                if x0 > x1 or y0 > y1:
                    current.note(f"reordered the corners of {item!r}")
                current.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            continue
        if not opened and len(values) < 2:
            continue  # English "in"/"out"
        last_end = end
        attached = current is not None and _GAP.fullmatch(text, current.end, start) is not None
        if not attached or current is None:
            orphan = _Block(start, end)
            orphan.note(f"dropped {item!r}: a point needs a box before it")
            blocks.append(orphan)
            current = orphan
            continue
        current.end = end
        if current.no_object or current.box is None:
            current.note(f"dropped {item!r}: its box is missing or unusable")
        elif len(values) < 2:
            current.note(f"dropped {item!r}: a point needs 2 numbers (truncated?)")
        elif not in_range:
            current.note(f"dropped {item!r}: coordinates outside 0-{GRID - 1}")
        elif len(current.points or ()) >= MAX_POINTS:
            current.surplus += 1
        else:
            if len(values) > 2:
                current.note(f"ignored extra numbers in {item!r}")
            current.points = [*(current.points or []), (values[0], values[1])]
            current.labels = [*(current.labels or []), 1 if kind == "in" else 0]
    return [block.freeze() for block in blocks]


def parse_prompt(text: str) -> TextPrompt:
    """The one prompt of a single-target text: the first block with a box (or "No object
    found."), with notes on everything else that was written; never raises."""
    blocks = parse_prompts(text)
    chosen = next((b for b in blocks if b.has_box), None)
    if chosen is None:
        chosen = next((b for b in blocks if b.no_object), None)
    if chosen is None:
        notes = [n for b in blocks for n in b.notes]
        if not blocks:
            shown = _shorten(text) if isinstance(text, str) else type(text).__name__
            notes.append(f"no prompt found in {shown!r}")
        return TextPrompt(notes=tuple(notes))
    notes = list(chosen.notes)
    for block in blocks:
        if block is chosen:
            continue
        notes.extend(block.notes)
        if block.has_box or block.no_object:
            notes.append(f"dropped a further prompt {block.to_text()!r}")
    return TextPrompt(
        box=chosen.box,
        points=chosen.points,
        labels=chosen.labels,
        no_object=chosen.no_object,
        notes=tuple(notes),
        span=chosen.span,
    )


def replace_prompts(text: str, replacement: str) -> str:
    """`text` with every block that yields a mask (a usable box) replaced by `replacement`."""
    pieces, cursor = [], 0
    for block in parse_prompts(text):
        if block.has_box:
            start, end = block.span
            pieces += [text[cursor:start], replacement]
            cursor = end
    return "".join([*pieces, text[cursor:]])


# -- grid <-> pixels ---------------------------------------------------------------------------
def _cell(value: float, extent: int) -> int:
    return min(max(math.floor(value * GRID / extent), 0), GRID - 1)


def box_to_grid(box: Sequence[float], size: tuple[int, int]) -> GridBox:
    """Pixel box (x0, y0, x1, y1) with exclusive far edges, image size (H, W) -> the grid
    cells of its corners, so that `grid_box_to_pixels` covers the whole box."""
    height, width = size
    x0, y0, x1, y1 = box
    gx0, gy0 = _cell(x0, width), _cell(y0, height)
    gx1 = max(min(math.ceil(x1 * GRID / width) - 1, GRID - 1), gx0)
    gy1 = max(min(math.ceil(y1 * GRID / height) - 1, GRID - 1), gy0)
    return gx0, gy0, gx1, gy1


def grid_box_to_pixels(box: Sequence[int], size: tuple[int, int]) -> tuple[float, ...]:
    """Grid box -> pixel box (x0, y0, x1, y1), continuous, far edges exclusive."""
    height, width = size
    x0, y0, x1, y1 = box
    return (
        x0 * width / GRID,
        y0 * height / GRID,
        (x1 + 1) * width / GRID,
        (y1 + 1) * height / GRID,
    )


def point_to_grid(point: Sequence[float], size: tuple[int, int]) -> GridPoint:
    """Continuous pixel point (x, y) (pixel i spans [i, i+1)) -> its grid cell."""
    height, width = size
    return _cell(point[0], width), _cell(point[1], height)


def grid_point_to_pixels(point: Sequence[int], size: tuple[int, int]) -> tuple[float, float]:
    """Grid cell -> its centre in continuous pixel coordinates. For images up to 1000 px a side
    the centre lies in the pixel the cell came from."""
    height, width = size
    return (point[0] + 0.5) * width / GRID, (point[1] + 0.5) * height / GRID


def grid_points(box: Sequence[int], count: int) -> list[GridPoint]:
    """A count x count grid of cell centres inside a grid box, row by row (PQPP's queries)."""
    x0, y0, x1, y1 = box
    xs = [min(x0 + math.floor((i + 0.5) * (x1 - x0 + 1) / count), x1) for i in range(count)]
    ys = [min(y0 + math.floor((j + 0.5) * (y1 - y0 + 1) / count), y1) for j in range(count)]
    return [(x, y) for y in ys for x in xs]
