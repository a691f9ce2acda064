"""Which answer words name which target, and where a target is: PixelLLM's point targets.

PixelLLM aligns every word of an answer with a point of the image. Our data marks each target
with one `<SEG>` right after the words that name it ("the striped red mug <SEG>"), so those
words and the marker get the target's point and box; every other word has no target. The
same rule finds a target's words in a generated answer, where their predicted points become
the target's prompt for SAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

#: Words that end a target's name when reading back from its marker ("It is the red mug").
STOP_WORDS = frozenset(
    "a an the this that these those it its they them he she i you we is are was were be "
    "would will and or but of in on at to for with here there sure found choose see".split()
)
#: Longest name, in words ("spotted blue tennis ball").
MAX_NAME_WORDS = 5


def token_texts(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded string, leading space included.

    Decoding one token alone loses its leading space with SentencePiece tokenizers, so each
    token's text is the difference between decoding the prefix with and without it.
    """
    texts: list[str] = []
    previous = ""
    for end in range(1, len(ids) + 1):
        current = tokenizer.decode(list(ids[:end]), skip_special_tokens=False)
        if current.startswith(previous):
            texts.append(current[len(previous) :])
        else:  # a multi-byte character split across tokens: fall back to the token alone
            texts.append(tokenizer.decode([ids[end - 1]], skip_special_tokens=False))
        previous = current
    return texts


def name_owners(
    texts: Sequence[str], is_marker: Sequence[bool], in_answer: Sequence[bool]
) -> list[int]:
    """Per token, the index of the target it names (its marker's rank), or -1.

    A marker owns itself and the words right before it, read backwards up to MAX_NAME_WORDS,
    stopping at a stop word ("the", "is", "and"), punctuation, another marker or the start of
    the answer. texts: per token, as `token_texts` gives them; a token starting with
    whitespace starts a word, a whitespace-only token separates words.
    """
    owners = [-1] * len(texts)
    rank = -1
    for marker, marked in enumerate(is_marker):
        if not marked or not in_answer[marker]:
            continue
        rank += 1
        owners[marker] = rank
        for word in _words_before(texts, is_marker, in_answer, marker)[:MAX_NAME_WORDS]:
            text = "".join(texts[t] for t in word).strip()
            if not text.replace("-", "").isalnum() or text.lower() in STOP_WORDS:
                break
            for token in word:
                owners[token] = rank
    return owners


def _words_before(
    texts: Sequence[str], is_marker: Sequence[bool], in_answer: Sequence[bool], marker: int
) -> list[list[int]]:
    """Token indices of the words before `marker` in the same answer, nearest word first."""
    words: list[list[int]] = []
    current: list[int] = []
    for t in range(marker - 1, -1, -1):
        if not in_answer[t] or is_marker[t]:
            break
        text = texts[t]
        if not text.strip():
            if current:
                words.append(current)
                current = []
            continue
        current.insert(0, t)
        starts_word = text[0].isspace() or t == 0 or not in_answer[t - 1] or is_marker[t - 1]
        if starts_word:
            words.append(current)
            current = []
    if current:
        words.append(current)
    return words


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """A deterministic point well inside a mask (H, W) bool: (x, y) in pixels (centres at +0.5).

    The pixel deepest inside the mask (most 3x3 erosions survived; the one nearest the
    centroid among ties), which, unlike the centroid, always lies on the object, even for a
    ring or an L shape. Large masks are eroded at a reduced scale. None for an empty mask.
    """
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1].astype(bool)
    # Subsample long crops so erosion takes at most ~48 steps; the result is snapped back.
    step = max(1, int(np.ceil(max(crop.shape) / 96)))
    small = crop[step // 2 :: step, step // 2 :: step]
    if not small.any():
        small, step = crop, 1
    deepest = small
    current = small
    while current.any():
        deepest = current
        current = _erode(current)
    cy, cx = np.nonzero(deepest)
    centre_y, centre_x = ys.mean() - y0, xs.mean() - x0
    py = cy * step + step // 2
    px = cx * step + step // 2
    best = int(np.argmin((py - centre_y) ** 2 + (px - centre_x) ** 2))
    y, x = int(py[best]), int(px[best])
    if not crop[y, x]:  # subsampling picked a pixel off the mask: take the nearest on it
        iy, ix = np.nonzero(crop)
        nearest = int(np.argmin((iy - y) ** 2 + (ix - x) ** 2))
        y, x = int(iy[nearest]), int(ix[nearest])
    return x0 + x + 0.5, y0 + y + 0.5


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    out = mask.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


def mask_location(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A target's point (2,) x, y and box (4,) x0, y0, x1, y1 (exclusive ends), both in
    normalised image coordinates ([0, 1] of the width and height); None if the mask is empty.

    mask: (H, W) with 1 on the target (other values, e.g. 255 "ignore", are not target).
    """
    target = np.asarray(mask) == 1
    point = interior_point(target)
    if point is None:
        return None
    height, width = target.shape
    ys, xs = np.nonzero(target)
    scale = np.array([width, height], dtype=np.float32)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    return np.array(point, dtype=np.float32) / scale, box / np.tile(scale, 2)
