"""Training data by LISA's recipe, drawn from ReasonWorld: semantic-segmentation QA, referring
QA, text-only QA and reasoning samples mixed at configurable rates (LISA: 9 : 3 : 3 : 1), and
optionally visual QA answered in words ("vqa": the colours and names of what is in the image,
LISA's VQA slot) and PixelLLM's location-conditioned captions ("caption"), each at rate 0
unless a recipe sets it.

`WorldMixture(config)(index)` is deterministic in `index`, which is what the trainer needs for
exact resumption and for giving each process of a multi-GPU run its own samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from pixelreason.data.schema import IGNORE_VALUE, SegSample
from pixelreason.data.templates import (
    ABSENT_ANSWERS,
    SEGMENT_ANSWERS,
    SEMANTIC_QUESTIONS,
    SEMANTIC_QUESTIONS_PLURAL,
    pick,
)
from pixelreason.data.world import (
    CATEGORIES,
    KINDS,
    WorldSample,
    caption_sample,
    fact_statement,
    generate_sample,
    generate_scene,
    holder_statement,
    instances_answer,
    left_to_right,
    text_qa_samples,
    vqa_sample,
)
from pixelreason.prompting import Turn

#: Query kinds that count as "referring" (no reasoning); the rest are "reasoning".
REFERRING_KINDS = ("explicit", "spatial")
REASONING_KINDS = tuple(k for k in KINDS if k not in REFERRING_KINDS)
SOURCES = ("sem_seg", "refer", "text_qa", "reason", "vqa", "caption")


@dataclass
class MixConfig:
    """Rates of each source (relative weights) and world settings."""

    rates: dict[str, float] = field(
        default_factory=lambda: {"sem_seg": 9.0, "refer": 3.0, "text_qa": 3.0, "reason": 1.0}
    )
    seed: int = 0
    image_size: int = 128
    #: Probability that a semantic-segmentation question asks for an absent category.
    absent_rate: float = 0.1
    #: Share of multi-turn reasoning samples given as one turn instead: both questions joined
    #: as the ReasonSeg export writes them (`texts[0]`, what `pixelreason eval` asks), with the
    #: last answer and its masks. 0 keeps every multi-turn sample a conversation.
    multiturn_joined: float = 0.0
    #: Share of one-turn reasoning samples about one fact (knowledge, long, explanatory,
    #: multi) whose answer first states the fact as the text QA stream does, then grounds:
    #: "A lemon tastes very sour. It is the lemon <SEG>." A chain of thought that lets what
    #: the LLM learnt as text (the zero-shot facts too) lead to the target. 0: answers as
    #: generated.
    reason_first: float = 0.0
    #: Share of one-turn reasoning samples about one fact and one target answered with the
    #: fact stated of the target's category, as singular text QA answers state it, and no
    #: mask ("Only one of these things chases mice." -> "A cat chases mice."): the form in
    #: which the knowledge check asks the LLM (`ModelConfig.knowledge_start`), for training a
    #: knowledge adapter (`pixelreason.models.adapter`). 0: answers as generated.
    statement_answers: float = 0.0
    #: Share of semantic-segmentation questions about a category with several instances
    #: answered with one `<SEG>` per instance, left to right as several-target reasoning
    #: answers list them ("They are the red apple <SEG> and the green apple <SEG>."), instead
    #: of one `<SEG>` for their union (LISA's semantic QA). 0: one union mask.
    semantic_instances: float = 0.0
    #: Text QA also asks each fact of several categories as a fact of one is, answered once by
    #: each holder ("What folds up when it is not in use?" -> "An umbrella folds up when it is
    #: not in use."), not only as "Which things fold up when they are not in use?". A query
    #: about such a fact asks for one object in that singular form; without it the LLM meets
    #: the form only with facts of one category.
    singular_questions: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rates) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown data sources {unknown}; choose from {list(SOURCES)}")
        if sum(self.rates.values()) <= 0:
            raise ValueError("data rates must have a positive sum")
        for name in ("multiturn_joined", "reason_first", "statement_answers", "semantic_instances"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def world_to_seg(sample: WorldSample, joined: bool = False) -> SegSample:
    """A ReasonWorld sample as a training sample: every turn, one mask per `<SEG>` in order.
    `joined` asks a multi-turn sample the way benchmark files do: the questions in one turn
    (`texts[0]`), answered by the last answer with its masks only."""
    if joined:
        turns, masks = [Turn(sample.texts[0], sample.answer)], list(sample.target_masks)
    else:
        turns = [Turn(user, assistant) for user, assistant in sample.conversation]
        masks = [m for turn in sample.history_masks for m in turn] + list(sample.target_masks)
    return SegSample(
        image=sample.image,
        turns=turns,
        masks=[_uint8(m, sample.ignore_mask) for m in masks],
        semantic=sample.semantic,
    )


def _uint8(mask: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    out = mask.astype(np.uint8)
    if ignore is not None:
        out[ignore] = IGNORE_VALUE
    return out


class WorldMixture:
    """index -> SegSample, drawing each index's source by the configured rates."""

    def __init__(self, config: MixConfig) -> None:
        self.config = config
        self.sources = [s for s in SOURCES if config.rates.get(s, 0) > 0]
        weights = np.array([config.rates[s] for s in self.sources], dtype=np.float64)
        self.probs = weights / weights.sum()
        self.text_pool = list(
            text_qa_samples(config.seed, epochs=1, singular=config.singular_questions)
        )

    def source_of(self, index: int) -> str:
        rng = np.random.default_rng([self.config.seed, 7, index])
        return self.sources[int(rng.choice(len(self.sources), p=self.probs))]

    def __call__(self, index: int) -> SegSample:
        source = self.source_of(index)
        rng = np.random.default_rng([self.config.seed, 11, index])
        if source == "sem_seg":
            return self._semantic(rng)
        if source == "text_qa":
            return self._text_qa(rng, index)
        if source == "caption":
            return caption_sample(rng, size=self.config.image_size)
        if source == "vqa":
            return vqa_sample(rng, size=self.config.image_size)
        kinds = REFERRING_KINDS if source == "refer" else REASONING_KINDS
        kind = kinds[int(rng.integers(len(kinds)))]
        sample = generate_sample(
            self.config.seed, "train", index, size=self.config.image_size, kind=kind
        )
        # The extra draws happen only when asked for, so existing recipes keep their samples.
        rate = self.config.multiturn_joined
        seg = world_to_seg(
            sample, joined=bool(sample.history_masks) and rate > 0 and rng.random() < rate
        )
        rate = self.config.reason_first
        if rate > 0 and len(seg.turns) == 1 and len(sample.fact_ids) == 1 and rng.random() < rate:
            turn = seg.turns[0]
            reasoned = f"{fact_statement(sample.fact_ids[0])} {turn.assistant}"
            seg = dataclasses.replace(seg, turns=[Turn(turn.user, reasoned)])
        rate = self.config.statement_answers
        one = len(seg.turns) == 1 and len(sample.fact_ids) == 1 and len(sample.target_names) == 1
        if rate > 0 and one and rng.random() < rate:
            statement = holder_statement(sample.fact_ids[0], sample.target_names[0])
            if statement is not None:
                seg = dataclasses.replace(seg, turns=[Turn(seg.turns[0].user, statement)], masks=[])
        return seg

    def _semantic(self, rng: np.random.Generator) -> SegSample:
        """ "Segment the {class}": one binary mask, the union of the class's instances, or with
        `semantic_instances` one mask per instance."""
        scene = generate_scene(rng, size=self.config.image_size)
        semantic = scene.semantic_map()
        present = sorted({o.category.name for o in scene.objects})
        if rng.random() < self.config.absent_rate:
            absent = [c for c in CATEGORIES if c.name not in present]
            category = absent[int(rng.integers(len(absent)))]
            question = pick(rng, SEMANTIC_QUESTIONS).format(name=category.name)
            answer = pick(rng, ABSENT_ANSWERS).format(name=category.name)
            return SegSample(scene.image, [Turn(question, answer)], [], semantic=semantic)
        name = present[int(rng.integers(len(present)))]
        ids = [i for i, o in enumerate(scene.objects) if o.category.name == name]
        instances = [scene.objects[i] for i in ids]
        # The extra draw happens only when asked for, so existing recipes keep their samples.
        rate = self.config.semantic_instances
        if len(ids) > 1 and rate > 0 and rng.random() < rate:
            ids = left_to_right(scene, ids)
            question = pick(rng, SEMANTIC_QUESTIONS_PLURAL).format(
                plural=instances[0].category.plural
            )
            return SegSample(
                scene.image,
                [Turn(question, instances_answer(rng, scene, ids))],
                [_uint8(scene.objects[i].mask, None) for i in ids],
                semantic=semantic,
            )
        mask = np.logical_or.reduce([o.mask for o in instances])
        if len(instances) > 1:
            template = pick(rng, SEMANTIC_QUESTIONS_PLURAL)
            question = template.format(plural=instances[0].category.plural)
        else:
            question = pick(rng, SEMANTIC_QUESTIONS).format(name=name)
        return SegSample(
            scene.image,
            [Turn(question, pick(rng, SEGMENT_ANSWERS))],
            [_uint8(mask, None)],
            semantic=semantic,
        )

    def _text_qa(self, rng: np.random.Generator, index: int) -> SegSample:
        """Knowledge as text (LISA's VQA slot): the image is a scene the question ignores."""
        item = self.text_pool[index % len(self.text_pool)]
        scene = generate_scene(rng, size=self.config.image_size)
        return SegSample(
            scene.image, [Turn(item.question, item.answer)], [], semantic=scene.semantic_map()
        )
