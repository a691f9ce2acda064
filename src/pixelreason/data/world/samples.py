"""Generated ReasonWorld samples, the splits, and the zero-shot fact hold-out.

A sample is fully determined by (seed, split, index): the generator is seeded with all three,
so splits draw from disjoint random streams and any sample can be regenerated on its own.

Zero-shot protocol: the facts are split deterministically into "seen" and "held-out". The
train/val/test splits ask segmentation questions only about seen facts; the `zeroshot` split
asks only about held-out facts. Held-out facts reach training only through the text-only
question answering stream (`text_qa_samples`), so the zeroshot split measures whether a model
can combine knowledge learned from text with segmentation learned from other facts.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pixelreason.data.world.categories import CATEGORIES, FACTS, Category, categories_with_fact
from pixelreason.data.world.queries import KINDS, SEG, Query, generate_query
from pixelreason.data.world.scene import Scene, generate_scene

__all__ = [
    "SPLITS",
    "SPLIT_KINDS",
    "TextQA",
    "WorldSample",
    "generate_sample",
    "held_out_facts",
    "seen_facts",
    "stream",
    "fact_statement",
    "holder_statement",
    "text_qa_samples",
]

SPLITS = ("train", "val", "test", "zeroshot")
_SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
# Relative frequency of each query kind; the zero-shot split only asks about knowledge.
_KIND_WEIGHTS = {
    "explicit": 1.0,
    "spatial": 1.0,
    "comparative": 0.8,
    "knowledge": 1.2,
    "long": 1.2,
    "multi": 1.0,
    "absent": 0.5,
    "explanatory": 0.8,
    "multiturn": 0.8,
}
SPLIT_KINDS: dict[str, dict[str, float]] = {
    "train": _KIND_WEIGHTS,
    "val": _KIND_WEIGHTS,
    "test": _KIND_WEIGHTS,
    "zeroshot": {"knowledge": 1.0, "long": 1.0, "explanatory": 0.5},
}
# Every fourth fact (by a stable hash of its id) is held out.
_HOLD_OUT_MODULUS = 4


def held_out_facts() -> frozenset[str]:
    """Fact ids reserved for the zero-shot split (stable across runs and Python versions)."""
    return frozenset(f for f in FACTS if zlib.crc32(f.encode()) % _HOLD_OUT_MODULUS == 0)


def seen_facts() -> frozenset[str]:
    """Fact ids that training segmentation queries may use."""
    return frozenset(FACTS) - held_out_facts()


def split_facts(split: str) -> frozenset[str]:
    """Fact ids a split's segmentation queries may use."""
    _check_split(split)
    return held_out_facts() if split == "zeroshot" else seen_facts()


@dataclass
class WorldSample:
    """One generated image-conversation pair.

    Attributes:
        image: size x size RGB.
        conversation: (user, assistant) turns; the last answer has one SEG per target.
        target_masks: HxW bool masks in the order of SEG in the last answer.
        texts: 1-3 self-contained phrasings of the request (texts[0] is canonical).
        history_masks: per earlier turn, HxW bool masks of that turn's SEGs.
        ignore_mask: HxW bool pixels to leave out of evaluation, or None.
        scene: the generated scene itself (objects with category, colour, pattern, mask),
            for training aids and analyses that need more than the masks.
    """

    id: str
    image: Image.Image
    conversation: list[tuple[str, str]]
    target_masks: list[np.ndarray]
    target_names: list[str]
    kind: str
    is_sentence: bool
    texts: list[str]
    fact_ids: list[str] = field(default_factory=list)
    history_masks: list[list[np.ndarray]] = field(default_factory=list)
    ignore_mask: np.ndarray | None = None
    scene: Scene | None = field(default=None, repr=False, compare=False)

    @property
    def semantic(self) -> np.ndarray | None:
        """HxW int16 class map of the scene (`Scene.semantic_map`), for training."""
        return None if self.scene is None else self.scene.semantic_map()

    @property
    def question(self) -> str:
        return self.conversation[-1][0]

    @property
    def answer(self) -> str:
        return self.conversation[-1][1]


def _check_split(split: str) -> None:
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _to_sample(sample_id: str, scene: Scene, query: Query) -> WorldSample:
    masks = [scene.objects[i].mask.copy() for i in query.targets]
    history = [[scene.objects[i].mask.copy() for i in turn] for turn in query.history_targets]
    return WorldSample(
        id=sample_id,
        image=scene.image,
        conversation=list(query.conversation),
        target_masks=masks,
        target_names=list(query.target_names),
        kind=query.kind,
        is_sentence=query.is_sentence,
        texts=list(query.texts),
        fact_ids=list(query.fact_ids),
        history_masks=history,
        scene=scene,
    )


def generate_sample(
    seed: int, split: str, index: int, size: int = 128, kind: str | None = None
) -> WorldSample:
    """Sample `index` of `split` for `seed`; identical arguments give an identical sample.

    Args:
        kind: force a query kind (one of KINDS); by default drawn with the split's weights.
    """
    _check_split(split)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown query kind {kind!r}")
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    weights = SPLIT_KINDS[split]
    facts = split_facts(split)
    fact_list = sorted(facts)
    names = list(weights)
    probs = np.array([weights[k] for k in names]) / sum(weights.values())
    wanted = kind or names[int(rng.choice(len(names), p=probs))]
    sample_id = f"{split}_{seed}_{index:06d}"
    for attempt in range(200):
        # Knowledge-style queries need an object carrying an allowed fact; planting one makes
        # them cheap even for the small held-out fact set.
        must = ()
        if wanted in ("knowledge", "long", "explanatory", "multiturn"):
            fact = fact_list[int(rng.integers(len(fact_list)))]
            options = categories_with_fact(fact)
            must = (options[int(rng.integers(len(options)))],)
        scene = generate_scene(rng, size=size, must_include=must)
        query = generate_query(scene, rng, wanted, facts)
        if query is not None:
            return _to_sample(sample_id, scene, query)
        if kind is None and attempt >= 20:
            wanted = names[int(rng.choice(len(names), p=probs))]
    raise RuntimeError(f"could not generate a {wanted!r} query for {sample_id}")


def stream(
    seed: int, split: str = "train", size: int = 128, start: int = 0
) -> Iterator[WorldSample]:
    """Endless samples `start`, `start + 1`, ... of a split (training data without limit)."""
    index = start
    while True:
        yield generate_sample(seed, split, index, size=size)
        index += 1


@dataclass(frozen=True)
class TextQA:
    """A text-only question and answer about a fact (no image, no mask)."""

    question: str
    answer: str
    fact_id: str


def _with_article(category_name: str) -> str:
    category = next(c for c in CATEGORIES if c.name == category_name)
    return f"{category.article} {category.name}"


def _list_plurals(fact_id: str) -> str:
    plurals = [c.plural for c in categories_with_fact(fact_id)]
    return plurals[0] if len(plurals) == 1 else ", ".join(plurals[:-1]) + " and " + plurals[-1]


def _phrased(fact_id: str) -> list[tuple[Category, str, str]]:
    """Each holder of a fact with its article and the fact's verb form for it: (lemon, "a
    lemon", "tastes very sour")."""
    fact = FACTS[fact_id]
    return [
        (holder, _with_article(holder.name), fact.plural if holder.plural_noun else fact.singular)
        for holder in categories_with_fact(fact_id)
    ]


def holder_statement(fact_id: str, target_name: str) -> str | None:
    """The fact stated of the holder that `target_name` names, as singular text QA answers
    state it ("the orange cat" -> "A cat chases mice."); None where it names no holder."""
    named = [p for p in _phrased(fact_id) if p[0].name in target_name.lower()]
    if not named:
        return None
    _, subject, form = max(named, key=lambda p: len(p[0].name))  # "watermelon slice"
    return f"{subject[:1].upper()}{subject[1:]} {form}."


def _text_qa_for_fact(fact_id: str, singular: bool = False) -> list[TextQA]:
    """The text QA about one fact. `singular`: a fact of several categories is also asked as
    a fact of one is ("What folds up when it is not in use?"), answered once by each holder
    ("An umbrella folds up when it is not in use.", "Glasses fold up ...")."""
    fact = FACTS[fact_id]
    holders = categories_with_fact(fact_id)
    items = []
    if len(holders) > 1:
        listed = _list_plurals(fact_id)
        answer = f"{listed[:1].upper()}{listed[1:]} {fact.plural}."
        items.append(TextQA(f"Which things {fact.plural}?", answer, fact_id))
    phrased = _phrased(fact_id)
    if len(holders) == 1 or singular:
        for _, subject, form in phrased:
            answer = f"{subject[:1].upper()}{subject[1:]} {form}."
            items.append(TextQA(f"What {fact.singular}?", answer, fact_id))
    for holder, subject, form in phrased:
        items.append(
            TextQA(
                f"Is it true that {subject} {form}?",
                f"Yes, {subject} {form}.",
                fact_id,
            )
        )
        items.append(
            TextQA(
                f"Tell me something about {holder.plural}.",
                f"{holder.plural[:1].upper()}{holder.plural[1:]} {fact.plural}.",
                fact_id,
            )
        )
    return items


def fact_statement(fact_id: str) -> str:
    """The fact as the text QA stream states it when asked what has it: "A lemon tastes very
    sour.", "Knives and pencils have to be sharpened now and then."."""
    return _text_qa_for_fact(fact_id)[0].answer


def text_qa_samples(seed: int, epochs: int | None = 1, singular: bool = False) -> Iterator[TextQA]:
    """Text-only QA covering every fact (held-out ones included), shuffled per epoch.

    Args:
        epochs: passes over all facts; None repeats forever.
        singular: facts of several categories are also asked as facts of one are ("What folds
            up when it is not in use?"), answered once by each holder.
    """
    pool = [item for fact_id in sorted(FACTS) for item in _text_qa_for_fact(fact_id, singular)]
    rng = np.random.default_rng([seed, 99])
    epoch = 0
    while epochs is None or epoch < epochs:
        for i in rng.permutation(len(pool)):
            yield pool[int(i)]
        epoch += 1


def count_segs(text: str) -> int:
    """Number of SEG tokens in a text."""
    return text.count(SEG)
