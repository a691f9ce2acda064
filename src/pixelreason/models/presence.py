"""The presence check: an answer may ground only what the image shows.

Our small LLMs, trained from scratch, learn the facts better than they learn to look: asked
"what would you use to cut paper?", they often name a category that has the fact but is not in
the image (in the default's test answers, most wrong-category names are of absent categories).
The backbone's vision probe (`pixelreason.models.probe`), trained on the class maps of
semantic-segmentation data, tells which classes the image shows: a class is *present* when its
probability in some grid cell reaches `ModelConfig.presence_threshold`. After greedy decoding,
each answer that grounds an absent class (a `probe_labels` name right before a target) is
decoded once more with those names banned (`BannedSequences`), so the LLM picks its next best
object; answers that ground nothing ("There is no teapot here.") are left as they are.

The colour check does the same for colours, which the LLM reads off the image even less well
(in the default's test answers, most single-target answers with the right category name a
colour that no object in the scene has). A second probe, the colour probe, classifies each
cell into "COLOUR CATEGORY" pairs (`ModelConfig.colour_probe_labels`). Where an answer grounds
"red mug", the probe finds no red mug (every cell below `ModelConfig.colour_threshold`) but
finds a mug of another colour, the colour word becomes the mug colour the probe finds most, and
one teacher-forced pass recomputes the states after it, so the mask follows the new words.

The request check turns both probes on the query. Where its last sentence asks for one class by
an explicit description ("Segment the red mug.", `requested_class`), an answer that grounds it
where the probes find no such mug (or no red one) becomes "There is no red mug in this image."
(`refusal`), a refusal where they do find it is decoded again with the refusal words banned
(`refusal_bans`), and a mug of another colour gets the asked colour where the probe finds it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from pixelreason.models.probe import VisionProbe
from pixelreason.tokens import SEG_TOKEN


class BannedSequences(LogitsProcessor):
    """Per batch row, token sequences `generate` may not complete: a sequence's last token is
    forbidden wherever the row's newest tokens equal the rest of it (a one-token sequence is
    forbidden everywhere). Unlike transformers' `bad_words_ids`, each row has its own list.
    `written`: per row, the answer's tokens before those `generate` sees (a forced prefix)."""

    def __init__(
        self,
        banned: Sequence[Sequence[Sequence[int]]],
        written: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.banned = [[list(seq) for seq in row if seq] for row in banned]
        self.written = [list(ids) for ids in written] if written else [[] for _ in banned]
        # one-token sequences are banned at every step: their tokens, per row, once
        self._always = [
            torch.tensor(sorted({seq[0] for seq in row if len(seq) == 1}), dtype=torch.long)
            for row in self.banned
        ]
        self._longer = [[seq for seq in row if len(seq) > 1] for row in self.banned]
        self._reach = max((len(seq) - 1 for row in self._longer for seq in row), default=0)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if len(self.banned) != scores.shape[0]:
            raise ValueError(f"{len(self.banned)} ban lists for {scores.shape[0]} rows")
        for row, sequences in enumerate(self._longer):
            if len(self._always[row]):
                scores[row, self._always[row].to(scores.device)] = -float("inf")
            if not sequences:
                continue
            # only the newest tokens can start a banned sequence's completion
            recent = self.written[row] + input_ids[row, -self._reach :].tolist()
            for seq in sequences:
                if _ends_with(recent, seq[:-1]):
                    scores[row, seq[-1]] = -float("inf")
        return scores


def written_before(ids: Sequence[int], banned: Sequence[Sequence[int]]) -> list[int]:
    """An answer's tokens before the first that completes a `banned` sequence (none where
    none does): greedy decoding with those sequences banned (`BannedSequences`) writes the
    same tokens up to there, so a second decoding can start from them."""
    ids = list(ids)
    for position in range(len(ids)):
        if any(seq and _ends_with(ids[: position + 1], seq) for seq in banned):
            return ids[:position]
    return []


def _ends_with(tokens: Sequence[int], tail: Sequence[int]) -> bool:
    return len(tokens) >= len(tail) and list(tokens[len(tokens) - len(tail) :]) == list(tail)


def class_presence(
    probe: VisionProbe, features: torch.Tensor, context: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, C - 1): each non-background class's highest probability over the backbone probe's
    grid cells, from the LLM's image features (B, N, D); with the mask head's image embedding
    `context`, averaged with the mask-head probe's (`VisionProbe.presence`)."""
    return probe.presence(features, context)


def named_classes(text: str, labels: Sequence[Sequence[str]]) -> list[int]:
    """Indices into `labels` of the classes an answer grounds: those with a name right before a
    target marker ("the striped orange cat <SEG>" grounds a cat, not the fruit orange; `text`
    as `Answer.text` shows it, each target as `<SEG>`), in any case."""
    lower = text.lower()
    marker = re.escape(SEG_TOKEN.lower())
    return [
        index
        for index, names in enumerate(labels)
        if any(
            name.lower() in lower  # cheap first: most names are not in the text at all
            and re.search(rf"\b{re.escape(name.lower())}\s*{marker}", lower)
            for name in names
        )
    ]


@functools.lru_cache(maxsize=4096)
def _spellings(tokenizer: PreTrainedTokenizerBase, name: str) -> tuple[tuple[int, ...], ...]:
    """The token ids of `name` in running text and at a sentence's start, cached: every
    re-decoded answer needs those of all the labels."""
    spellings = sorted({" " + name, name[:1].upper() + name[1:]})
    return tuple(tuple(tokenizer.encode(s, add_special_tokens=False)) for s in spellings)


def ban_list(
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[Sequence[str]],
    absent: Iterable[int],
    present: Iterable[int],
) -> list[list[int]]:
    """Token sequences that keep an answer from naming the `absent` classes, in running text
    (" scissors") and at a sentence's start ("Scissors"). Where a name's first word is one
    token that starts no present class's name, that token alone is banned, so the LLM cannot
    begin the name and then finish it as another ("trash" of "trash can"); otherwise the
    whole name."""

    def forms(name: str) -> list[list[int]]:
        return [list(seq) for seq in _spellings(tokenizer, name)]

    keep = {seq[0] for index in present for name in labels[index] for seq in forms(name) if seq}
    banned: list[list[int]] = []
    for index in absent:
        for name in labels[index]:
            first = name.split()[0]
            for seq, head in zip(forms(name), forms(first), strict=True):
                if not seq:
                    continue
                alone = len(head) == 1 and head[0] == seq[0] and head[0] not in keep
                candidate = seq[:1] if alone else seq
                if candidate not in banned:
                    banned.append(candidate)
    return banned


@dataclass(frozen=True)
class ColourSlot:
    """Where an answer grounds "COLOUR CATEGORY": `position` of the colour token in the
    answer's ids, the colour probe class of what it wrote (`label`) and those of the
    category's other colours, by colour token id (`others`)."""

    position: int
    label: int
    others: dict[int, int]


@functools.lru_cache(maxsize=16)
def colour_patterns(
    tokenizer: PreTrainedTokenizerBase, labels: tuple[str, ...]
) -> dict[tuple[int, ...], dict[int, int]]:
    """Category token ids in running text -> {colour token id: label index}, for the labels
    whose colour word is one token (" red"); others cannot be re-chosen in one slot."""
    patterns: dict[tuple[int, ...], dict[int, int]] = {}
    for index, label in enumerate(labels):
        colour, _, category = label.partition(" ")
        colour_ids = tokenizer.encode(" " + colour, add_special_tokens=False)
        category_ids = tuple(tokenizer.encode(" " + category, add_special_tokens=False))
        if len(colour_ids) == 1 and category and category_ids:
            patterns.setdefault(category_ids, {})[colour_ids[0]] = index
    return patterns


def _grounded_colours(
    token_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[str],
    target_id: int,
) -> Iterator[tuple[int, int, dict[int, int]]]:
    """(position, colour token, the category's colours {colour token id: label index}) for
    each colour word of `labels` (any category's) that the answer `token_ids` writes right
    before a category name and a target token (`target_id`, e.g. `<SEG>`'s; blank tokens
    between them are skipped), in order; the colour need not be one of that category's."""
    patterns = colour_patterns(tokenizer, tuple(labels))
    words = {token for colours in patterns.values() for token in colours}
    ids = list(token_ids)
    blank = {i for i in set(ids) if i != target_id and not tokenizer.decode([i]).strip()}
    for position, token in enumerate(ids[:-2]):
        if token not in words:
            continue
        for category, colours in patterns.items():
            end = position + 1 + len(category)
            if tuple(ids[position + 1 : end]) != category:
                continue
            while end < len(ids) and ids[end] in blank:
                end += 1
            if end < len(ids) and ids[end] == target_id:
                yield position, token, colours


def colour_slots(
    token_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[str],
    target_id: int,
) -> list[ColourSlot]:
    """Each "COLOUR CATEGORY" of `labels` that the answer `token_ids` writes right before a
    target token (`target_id`, e.g. `<SEG>`'s; blank tokens between them are skipped), in
    order."""
    return [
        ColourSlot(position, colours[token], {c: i for c, i in colours.items() if c != token})
        for position, token, colours in _grounded_colours(token_ids, tokenizer, labels, target_id)
        if token in colours
    ]


def foreign_colour(
    token_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[str],
    target_id: int,
) -> tuple[int, dict[int, int]] | None:
    """The first colour word that the answer `token_ids` writes right before a category and a
    target token where that category never comes in that colour ("the red lemon <SEG>", "the
    blue watermelon slice <SEG>"; a colour word is any that `labels` give some category): its
    position and the category's own colours ({colour token id: label index}); None where
    every grounded colour is one of its category's."""
    grounded = _grounded_colours(token_ids, tokenizer, labels, target_id)
    return next(
        (
            (position, dict(colours))
            for position, token, colours in grounded
            if token not in colours
        ),
        None,
    )


def recolour(
    slots: Sequence[ColourSlot], presence: Sequence[float], threshold: float
) -> tuple[ColourSlot, list[int]] | None:
    """The first slot whose pair the colour probe does not find (`presence`, per label, below
    `threshold`) while it finds the category in other colours, with those colours' token ids;
    None when every grounded colour is found or nothing else is."""
    for slot in slots:
        if presence[slot.label] >= threshold:
            continue
        found = [token for token, label in slot.others.items() if presence[label] >= threshold]
        if found:
            return slot, found
    return None


@dataclass(frozen=True)
class Request:
    """What a request asks for by name: the one probe class (`label`, an index into the probe
    labels) of an explicit description ("the striped red mug", "all the mugs"), and the colour
    probe label of the description's "COLOUR CATEGORY" where it has one (`colour`)."""

    label: int
    colour: int | None = None
    #: The description as the query words it ("spotted red mug", "mugs"), for a refusal.
    description: str = field(default="", compare=False)


def _mentions(lower: str, labels: Sequence[Sequence[str]]) -> list[tuple[int, int, int]]:
    """(start, end, class) of each class name in lower-case text, whole words, as a noun: a
    name inside a longer one ("slice" in "pizza slice") or right before another ("the orange
    star": a colour word here) does not count."""
    found = [
        (match.start(), match.end(), index)
        for index, names in enumerate(labels)
        for name in names
        if name.lower() in lower  # cheap first: most names are not in the text at all
        for match in re.finditer(rf"\b{re.escape(name.lower())}\b", lower)
    ]
    inside = {a for a in found for b in found if a != b and b[0] <= a[0] and a[1] <= b[1]}
    nouns = [m for m in found if m not in inside]
    starts = {start for start, _, _ in nouns}
    return sorted(m for m in nouns if not (m[1] + 1 in starts and lower[m[1] : m[1] + 1] == " "))


def mentioned_classes(text: str, labels: Sequence[Sequence[str]]) -> list[int]:
    """Indices into `labels` of the classes a text names as nouns, in order, each once."""
    return list(dict.fromkeys(index for _, _, index in _mentions(text.lower(), labels)))


#: An explicit description ends a request's text before the class name: "the", then at most two
#: words (pattern and colour, "the striped red").
_DESCRIPTION = re.compile(r"\bthe((?:\s+[a-z-]+){0,2})\s+$")


def requested_class(
    query: str, labels: Sequence[Sequence[str]], colour_labels: Sequence[str] = ()
) -> Request | None:
    """The class a request asks for by an explicit description ("Segment the striped red mug.",
    "Where are the mugs?"), or None when it names no class, several ("the cup left of the
    plant") or one only in passing ("the thing that drinks nectar from flowers"). Only the last
    sentence counts."""
    # The request is the last sentence: "Where is the book? What is closest to it?" asks for
    # no book.
    lower = re.split(r"(?<=[.?!])\s+(?=\S)", query.strip().lower())[-1]
    mentions = _mentions(lower, labels)
    if len({index for _, _, index in mentions}) != 1:
        return None
    for start, end, index in mentions:
        described = _DESCRIPTION.search(lower[:start])
        if described is None:
            continue
        colour = None
        words = described.group(1).split()
        for size in (1, 2):  # "red mug", "light blue mug"
            pair = " ".join([*words[len(words) - size :], labels[index][0].lower()])
            if len(words) >= size and pair in colour_labels:
                colour = list(colour_labels).index(pair)
        return Request(index, colour, " ".join([*words, lower[start:end]]))
    return None


#: The presence check's answer where, without the absent class, the LLM grounds nothing: its
#: own words then trail off ("The blue blue blue ..."), so it is given this to write.
NOTHING_FOUND = "There is no such object in this image."

#: The request check's answer for a class the probe does not find, with the request's
#: description, given to the LLM (teacher-forced; it may go on, the target token banned).
REFUSAL = "There {} no {} in this image."


def refusal(request: Request, labels: Sequence[Sequence[str]]) -> str:
    """`REFUSAL` for a request, in its own words: "There is no spotted red mug in this image.",
    "There are no mugs in this image." ("are" for a plural, or a noun that is its own plural
    and ends in s: "scissors", "glasses"; not "fish")."""
    label = [name.lower() for name in labels[request.label]]
    noun = request.description.split(" ")[-1] if request.description else label[0]
    plural = noun != label[0] or (len(set(label)) == 1 and noun.endswith("s"))
    description = request.description or label[0]
    return REFUSAL.format("are" if plural else "is", description)


def refusal_bans(tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Token sequences that start our answers' refusals ("There is no ...", "I cannot find
    ...", "Nothing in this image ..."), banned where the probes overrule one."""
    words = ("There", " There", " no", " No", "No", " cannot", "Nothing", " nothing")
    return [tokenizer.encode(word, add_special_tokens=False) for word in words]
