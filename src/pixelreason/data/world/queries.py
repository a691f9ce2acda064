"""Queries about a ReasonWorld scene, with answers and the referred object indices.

Every generator returns None when the scene cannot support an unambiguous query of its kind:
a query is only produced when its referent set is exactly determined (one striped mug, a
biggest fruit clearly bigger than the next, a single object clearly left of the landmark).
Answers carry one literal `<SEG>` right after each target's name, in target order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pixelreason.data.world.categories import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    FACTS,
    PATTERN_WORDS,
    SUPERCATEGORIES,
    Category,
)
from pixelreason.data.world.scene import Scene, SceneObject

__all__ = [
    "ABSENT_ANSWER",
    "KINDS",
    "SEG",
    "SENTENCE_KINDS",
    "Query",
    "generate_query",
]

SEG = "<SEG>"
ABSENT_ANSWER = "There is no such object in this image."
KINDS = (
    "explicit",
    "spatial",
    "comparative",
    "knowledge",
    "long",
    "multi",
    "absent",
    "explanatory",
    "multiturn",
)
# Kinds whose request is a full sentence (ReasonSeg's `is_sentence`) rather than a phrase.
SENTENCE_KINDS = frozenset({"long", "explanatory", "multiturn"})
# A comparative answer must be clearly bigger/smaller than the runner-up.
SIZE_RATIO = 1.3
# "The leftmost mug" needs a gap of this fraction of the image side to the runner-up.
EXTREME_GAP = 0.08


@dataclass
class Query:
    """A question (possibly multi-turn) about a scene.

    Attributes:
        conversation: (user, assistant) turns; the last answer holds one SEG per target.
        targets: scene object indices, in the order of SEG in the last answer.
        history_targets: per earlier turn, the object indices of that answer's SEGs.
        texts: 1-3 self-contained phrasings of the request (texts[0] is the canonical one).
    """

    kind: str
    conversation: list[tuple[str, str]]
    targets: list[int]
    target_names: list[str]
    texts: list[str]
    is_sentence: bool
    fact_ids: list[str] = field(default_factory=list)
    history_targets: list[list[int]] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return self.conversation[-1][1]


# --- naming -------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _texts(rng: np.random.Generator, templates: Sequence[str], **values: str) -> list[str]:
    """1-3 distinct renderings of randomly chosen templates."""
    rendered = list(dict.fromkeys(t.format(**values) for t in templates))
    order = rng.permutation(len(rendered))
    count = int(rng.integers(1, min(3, len(rendered)) + 1))
    return [rendered[i] for i in order[:count]]


def _colour_word(obj: SceneObject) -> str | None:
    # A colour implied by the name ("orange", "lemon") is never said ("the orange orange").
    return obj.colour if len(obj.category.colours) > 1 else None


def short_name(obj: SceneObject) -> str:
    """Name used in answers: colour + name when the category comes in several colours."""
    colour = _colour_word(obj)
    return f"{colour} {obj.name}" if colour else obj.name


def _matches(obj: SceneObject, category: Category, colour: str | None, pattern: str | None) -> bool:
    return (
        obj.category is category
        and (colour is None or obj.colour == colour)
        and (pattern is None or obj.pattern == pattern)
    )


def _unique_descriptions(scene: Scene, index: int) -> list[str]:
    """Noun phrases (without article) that pick out exactly object `index` in the scene."""
    obj = scene.objects[index]
    colour_options: list[str | None] = [None]
    if _colour_word(obj):
        colour_options.append(obj.colour)
    pattern_options: list[str | None] = [None]
    if len(obj.category.patterns) > 1:
        pattern_options.append(obj.pattern)
    found = []
    for colour in colour_options:
        for pattern in pattern_options:
            count = sum(_matches(o, obj.category, colour, pattern) for o in scene.objects)
            if count == 1:
                words = [PATTERN_WORDS[pattern] if pattern else None, colour, obj.name]
                found.append(" ".join(w for w in words if w))
    return found


def english_list(parts: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _join(names: Sequence[str]) -> str:
    """'the a <SEG>, the b <SEG> and the c <SEG>'."""
    return english_list([f"the {n} {SEG}" for n in names])


def _be(category: Category | None) -> str:
    """'is', or 'are' for nouns that are grammatically plural ('the scissors are')."""
    return "are" if category is not None and category.plural_noun else "is"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _subject(obj: SceneObject) -> tuple[str, str]:
    """(pronoun, predicate form) for an explanation: 'it' + singular or 'they' + plural."""
    return ("they", "plural") if obj.category.plural_noun else ("it", "singular")


def _fact_text(fact_id: str, form: str) -> str:
    return getattr(FACTS[fact_id], form)


def _use_question(fact_id: str) -> str | None:
    """'is used to cut paper' -> 'What would you use to cut paper?'."""
    singular = FACTS[fact_id].singular
    for prefix, joiner in (("is used to ", "to"), ("is used for ", "for")):
        if singular.startswith(prefix):
            return f"What would you use {joiner} {singular[len(prefix) :]}?"
    return None


SINGLE_ANSWERS = (
    "The {n} " + SEG + ".",
    "It is the {n} " + SEG + ".",
    "Sure, the {n} " + SEG + ".",
    "That would be the {n} " + SEG + ".",
)


def _single(rng: np.random.Generator, name: str) -> str:
    return _pick(rng, SINGLE_ANSWERS).format(n=name)


# --- geometry -------------------------------------------------------------------------------

RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of", "on the left side of"),
    "right": ("to the right of", "right of", "on the right side of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}


def _relation(a: SceneObject, b: SceneObject, relation: str) -> bool | None:
    """True if `a` clearly stands in `relation` to `b`, False if clearly not, None if unclear.

    Clearly left: a's centre is left of b's left edge. Clearly not left: a's centre is at or
    right of b's centre. In between is ambiguous, and an ambiguous object makes the query
    unusable rather than guessed.
    """
    ax, ay = a.centre
    bx, by = b.centre
    x0, y0, x1, y1 = b.bbox
    if relation == "left":
        yes, no = ax < x0, ax >= bx
    elif relation == "right":
        yes, no = ax > x1 - 1, ax <= bx
    elif relation == "above":
        yes, no = ay < y0, ay >= by
    elif relation == "below":
        yes, no = ay > y1 - 1, ay <= by
    else:
        raise ValueError(f"unknown relation {relation!r}")
    if yes:
        return True
    return False if no else None


def _related_unique(
    scene: Scene,
    anchor: int,
    relation: str,
    candidates: Sequence[int],
) -> int | None:
    """The single candidate clearly in `relation` to `anchor`, if all others clearly are not."""
    hits = []
    for i in candidates:
        if i == anchor:
            continue
        verdict = _relation(scene.objects[i], scene.objects[anchor], relation)
        if verdict is None:
            return None
        if verdict:
            hits.append(i)
    return hits[0] if len(hits) == 1 else None


# --- generators -----------------------------------------------------------------------------

Generator = Callable[[Scene, np.random.Generator, frozenset[str]], Query | None]

EXPLICIT_QUESTIONS = (
    "the {d}",
    "Segment the {d}.",
    "Where {v} the {d}?",
    "Can you find the {d} in this picture?",
    "Please highlight the {d}.",
    "Show me the {d}.",
)


def _pick_unique(scene: Scene, rng: np.random.Generator) -> tuple[int, str] | None:
    for index in rng.permutation(len(scene.objects)):
        descriptions = _unique_descriptions(scene, int(index))
        if descriptions:
            return int(index), _pick(rng, descriptions)
    return None


def _query(
    kind: str,
    texts: list[str],
    answer: str,
    scene: Scene,
    targets: list[int],
    names: list[str],
    fact_ids: Sequence[str] = (),
) -> Query:
    return Query(
        kind=kind,
        conversation=[(texts[0], answer)],
        targets=targets,
        target_names=names,
        texts=texts,
        is_sentence=kind in SENTENCE_KINDS,
        fact_ids=list(fact_ids),
    )


def explicit_query(scene: Scene, rng: np.random.Generator, facts: frozenset[str]) -> Query | None:
    """'the striped mug': a description that matches exactly one object."""
    picked = _pick_unique(scene, rng)
    if picked is None:
        return None
    index, description = picked
    texts = _texts(rng, EXPLICIT_QUESTIONS, d=description, v=_be(scene.objects[index].category))
    answer = _single(rng, description)
    return _query("explicit", texts, answer, scene, [index], [description])


RELATIVE_QUESTIONS = (
    "the {a} {r} the {b}",
    "Segment the {a} {r} the {b}.",
    "Which {a} {v} {r} the {b}?",
    "Find the {a} that {v} {r} the {b}.",
)
OBJECT_RELATIVE_QUESTIONS = (
    "the object {r} the {b}",
    "What is {r} the {b}?",
    "Segment the thing {r} the {b}.",
    "Which object is {r} the {b}?",
)
EXTREME_QUESTIONS = (
    "the {x} {a}",
    "Segment the {x} {a}.",
    "Which {a} {v} the {x} one?",
    "Show me the {x} {a} in the picture.",
)
EXTREMES = {
    "left": ("leftmost", 0, -1.0),
    "right": ("rightmost", 0, 1.0),
    "above": ("topmost", 1, -1.0),
    "below": ("lowest", 1, 1.0),
}
CORNER_QUESTIONS = (
    "the object in the {c} corner",
    "What is in the {c} corner of the image?",
    "Segment the thing nearest the {c} corner.",
    "Find the object at the {c} of the picture.",
)
CORNERS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}


def _relative_spatial(scene: Scene, rng: np.random.Generator) -> Query | None:
    n = len(scene.objects)
    for anchor in rng.permutation(n):
        anchor = int(anchor)
        anchor_descriptions = _unique_descriptions(scene, anchor)
        if not anchor_descriptions:
            continue
        b = _pick(rng, anchor_descriptions)
        relation = _pick(rng, list(RELATIONS))
        r = _pick(rng, RELATIONS[relation])
        # Either "the <category> left of B" (other instances of the category must clearly
        # fail the relation) or "the object left of B" (every other object must).
        if rng.random() < 0.5:
            target = _related_unique(scene, anchor, relation, range(n))
            if target is not None:
                texts = _texts(rng, OBJECT_RELATIVE_QUESTIONS, r=r, b=b)
                name = short_name(scene.objects[target])
                return _query("spatial", texts, _single(rng, name), scene, [target], [name])
            continue
        for category_index in rng.permutation(n):
            category = scene.objects[int(category_index)].category
            same = [i for i, o in enumerate(scene.objects) if o.category is category]
            target = _related_unique(scene, anchor, relation, same)
            if target is None or scene.objects[anchor].category is category:
                continue
            a = category.name
            texts = _texts(rng, RELATIVE_QUESTIONS, a=a, r=r, b=b, v=_be(category))
            name = short_name(scene.objects[target])
            return _query("spatial", texts, _single(rng, name), scene, [target], [name])
    return None


def _extreme_spatial(scene: Scene, rng: np.random.Generator) -> Query | None:
    direction = _pick(rng, list(EXTREMES))
    word, axis, sign = EXTREMES[direction]
    margin = EXTREME_GAP * scene.size
    groups: dict[str, list[int]] = {}
    for i, obj in enumerate(scene.objects):
        groups.setdefault(obj.name, []).append(i)
    options = [(name, ids) for name, ids in groups.items() if len(ids) >= 2]
    if len(scene.objects) >= 2:
        options.append(("object", list(range(len(scene.objects)))))
    for k in rng.permutation(len(options)):
        name, ids = options[int(k)]
        ranked = sorted(ids, key=lambda i: -sign * scene.objects[i].centre[axis])
        gap = abs(scene.objects[ranked[0]].centre[axis] - scene.objects[ranked[1]].centre[axis])
        if gap < margin:
            continue
        category = scene.objects[ids[0]].category if name != "object" else None
        texts = _texts(rng, EXTREME_QUESTIONS, x=word, a=name, v=_be(category))
        target_name = short_name(scene.objects[ranked[0]])
        answer = _single(rng, target_name)
        return _query("spatial", texts, answer, scene, [ranked[0]], [target_name])
    return None


def _corner_spatial(scene: Scene, rng: np.random.Generator) -> Query | None:
    corner = _pick(rng, list(CORNERS))
    cx, cy = (v * scene.size for v in CORNERS[corner])
    dist = [np.hypot(o.centre[0] - cx, o.centre[1] - cy) for o in scene.objects]
    order = np.argsort(dist)
    nearest = int(order[0])
    # Nearest must sit in that quadrant and be clearly nearer than any other object.
    in_quadrant = (
        max(abs(scene.objects[nearest].centre[0] - cx), abs(scene.objects[nearest].centre[1] - cy))
        < scene.size / 2
    )
    if not in_quadrant or dist[int(order[1])] < SIZE_RATIO * dist[nearest]:
        return None
    texts = _texts(rng, CORNER_QUESTIONS, c=corner)
    name = short_name(scene.objects[nearest])
    return _query("spatial", texts, _single(rng, name), scene, [nearest], [name])


def spatial_query(scene: Scene, rng: np.random.Generator, facts: frozenset[str]) -> Query | None:
    """'the cup left of the plant', 'the leftmost mug', 'the object in the top right corner'."""
    makers = [_relative_spatial, _extreme_spatial, _corner_spatial]
    for k in rng.permutation(len(makers)):
        query = makers[int(k)](scene, rng)
        if query is not None:
            return query
    return None


COMPARATIVE_QUESTIONS = (
    "the {x} {g}",
    "Which {g} {v} the {x}?",
    "Segment the {x} {g} in the image.",
    "Show me the {x} {g}.",
    "Find the {x} of the {gp}.",
)
COMPARATIVES = {"big": ("biggest", "largest"), "small": ("smallest", "tiniest")}


def _clearly_extreme(objects: Sequence[SceneObject], ids: Sequence[int], big: bool) -> int | None:
    """The biggest (or smallest) of `ids` if it beats the runner-up by SIZE_RATIO, else None."""
    if len(ids) < 2:
        return None
    winners = set()
    for attribute in ("area", "full_area"):
        values = sorted(((getattr(objects[i], attribute), i) for i in ids), reverse=big)
        (first, winner), (second, _) = values[0], values[1]
        ratio = first / max(second, 1) if big else second / max(first, 1)
        if ratio < SIZE_RATIO:
            return None
        winners.add(winner)
    # Visible and drawn areas must agree on the winner (occlusion could make them differ).
    return winners.pop() if len(winners) == 1 else None


def _group_indices(scene: Scene) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Object indices grouped by category name and by super-category, in scene order."""
    by_category: dict[str, list[int]] = {}
    by_super: dict[str, list[int]] = {}
    for i, obj in enumerate(scene.objects):
        by_category.setdefault(obj.name, []).append(i)
        by_super.setdefault(obj.category.supercategory, []).append(i)
    return by_category, by_super


def comparative_query(
    scene: Scene, rng: np.random.Generator, facts: frozenset[str]
) -> Query | None:
    """'the biggest fruit', 'the smallest mug', 'the largest object'."""
    groups: list[tuple[str, str, list[int]]] = []
    by_category, by_super = _group_indices(scene)
    for name, ids in by_category.items():
        groups.append((name, scene.objects[ids[0]].category.plural, ids))
    for key, ids in by_super.items():
        groups.append((*SUPERCATEGORIES[key], ids))
    groups.append(("object", "objects", list(range(len(scene.objects)))))
    big = bool(rng.random() < 0.5)
    for k in rng.permutation(len(groups)):
        g, gp, ids = groups[int(k)]
        target = _clearly_extreme(scene.objects, ids, big)
        if target is None:
            continue
        x = _pick(rng, COMPARATIVES["big" if big else "small"])
        plural_noun = g in CATEGORY_BY_NAME and CATEGORY_BY_NAME[g].plural_noun
        texts = _texts(
            rng, COMPARATIVE_QUESTIONS, x=x, g=g, gp=gp, v="are" if plural_noun else "is"
        )
        name = short_name(scene.objects[target])
        return _query("comparative", texts, _single(rng, name), scene, [target], [name])
    return None


def _fact_holders(scene: Scene, facts: frozenset[str]) -> dict[str, list[int]]:
    holders: dict[str, list[int]] = {}
    for i, obj in enumerate(scene.objects):
        for fact_id in obj.category.facts:
            if fact_id in facts:
                holders.setdefault(fact_id, []).append(i)
    return holders


def _single_fact(
    scene: Scene, rng: np.random.Generator, facts: frozenset[str]
) -> tuple[str, int] | None:
    holders = _fact_holders(scene, facts)
    usable = sorted(f for f, ids in holders.items() if len(ids) == 1)
    if not usable:
        return None
    fact_id = _pick(rng, usable)
    return fact_id, holders[fact_id][0]


KNOWLEDGE_QUESTIONS = (
    "the thing that {s}",
    "What here {s}?",
    "Which object in the picture {s}?",
    "Find the thing that {s}.",
    "Segment the object that {s}.",
    "Can you show me what {s}?",
)


def _knowledge_texts(rng: np.random.Generator, fact_id: str) -> list[str]:
    templates = list(KNOWLEDGE_QUESTIONS)
    use = _use_question(fact_id)
    if use:
        templates.append(use.replace("{", "{{").replace("}", "}}"))
    return _texts(rng, templates, s=FACTS[fact_id].singular)


def knowledge_query(scene: Scene, rng: np.random.Generator, facts: frozenset[str]) -> Query | None:
    """'What would you use to cut paper?': exactly one object carries the fact."""
    found = _single_fact(scene, rng, facts)
    if found is None:
        return None
    fact_id, target = found
    name = short_name(scene.objects[target])
    texts = _knowledge_texts(rng, fact_id)
    return _query("knowledge", texts, _single(rng, name), scene, [target], [name], [fact_id])


SCENARIOS: dict[str, tuple[str, ...]] = {
    "vitamin_c": (
        "I just got home after a long run and feel a cold coming on.",
        "I have been sneezing all week and my doctor told me to get more vitamin C.",
    ),
    "cut_paper": ("I am making paper snowflakes for a school project.",),
    "cut_bread": ("I just bought a fresh loaf and want thin slices for breakfast.",),
    "cutting": ("The parcel is tied with a string that I cannot untie.",),
    "nails": ("I want to hang a picture and I have a box of nails ready.",),
    "screws": ("The handle of my cupboard is loose because a screw came undone.",),
    "time": ("I have a train to catch and I forgot my watch.",),
    "rain": ("Dark clouds are gathering and I have to walk to the bus stop.",),
    "light": ("The power just went out and the room is completely dark.",),
    "leftovers": ("We have finished cooking and eating, and there are scraps on every plate.",),
    "rubbish": ("I have a crumpled paper bag that I no longer need.",),
    "lives_in_water": ("I have just set up a new aquarium and it still looks empty.",),
    "feet": ("I am getting ready for a walk but my feet are still bare.",),
    "see": ("I cannot read the small print on this menu because everything looks blurry.",),
    "calls": ("I need to tell my mum that I will be late for dinner.",),
    "hot_drinks": ("The kettle has just boiled and I would like a hot drink.",),
    "tea": ("Some guests are coming over this afternoon and they love tea.",),
    "unlock": ("I am standing in front of my locked front door.",),
    "writing": ("Someone is telling me a phone number and I must note it down.",),
    "read": ("It is a rainy afternoon and I feel like enjoying a good story.",),
    "party": ("We are decorating the living room for my son's birthday party.",),
    "birthday": ("The birthday cake is ready but something is still missing on top.",),
    "football": ("The kids want to play a match in the park this afternoon.",),
    "shade": ("It is a very hot, sunny afternoon and I want to sit out of the sun.",),
    "sour": ("My salad dressing tastes flat and needs something really sour.",),
    "lemonade": ("It is hot outside and I want to make a jug of a cold drink.",),
    "monkeys": ("We are visiting the zoo and want to bring a treat for the monkeys.",),
    "rabbits": ("My pet rabbit looks hungry.",),
    "pet": ("I live alone and would like an animal to keep me company.",),
    "warm": ("Winter is here and it is freezing outside.",),
    "freezer": ("I just came back from the shop and something must go into the freezer.",),
    "remote": ("The TV remote control has suddenly stopped working.",),
    "wine": ("We are having dinner with friends and I just opened a bottle of wine.",),
    "transport": ("I need to get to the other side of town quickly.",),
    "can_fly": ("My little sister wants to know what could go up into the sky.",),
    "stores_power": ("My torch is dead and needs a fresh source of power.",),
    "from_milk": ("My friend cannot drink milk and wants to avoid food made from it.",),
}
SCENARIO_QUESTIONS = (
    "{scene} Which object in this picture would help me?",
    "{scene} What here should I pick?",
    "{scene} Can you point out the right thing in this image?",
    "{scene} Please show me which thing I need. It should be somewhere in the picture.",
)
RIDDLE_QUESTIONS = (
    "I am thinking of something that {s}. It should be somewhere in this picture. Which one is it?",
    "My friend told me that one of the things in this photo {s}. I would like to know which "
    "one. Can you point it out?",
    "I am playing a guessing game with my little brother. The clue is that the answer {s}. "
    "Which object in the image fits the clue?",
    "Look carefully at everything in this image. Only one of these things {s}. Please segment it.",
)


def long_query(scene: Scene, rng: np.random.Generator, facts: frozenset[str]) -> Query | None:
    """A 2-3 sentence scenario built around a fact, ReasonSeg style."""
    found = _single_fact(scene, rng, facts)
    if found is None:
        return None
    fact_id, target = found
    templates = [t.replace("{s}", FACTS[fact_id].singular) for t in RIDDLE_QUESTIONS]
    for situation in SCENARIOS.get(fact_id, ()):
        templates += [t.replace("{scene}", situation) for t in SCENARIO_QUESTIONS]
    texts = _texts(rng, [t.replace("{", "{{").replace("}", "}}") for t in templates])
    name = short_name(scene.objects[target])
    return _query("long", texts, _single(rng, name), scene, [target], [name], [fact_id])


MULTI_GROUP_QUESTIONS = (
    "all the {gp}",
    "Segment all the {gp}.",
    "Where are the {gp}?",
    "Find every {g} in this picture.",
    "Highlight each of the {gp}.",
)
MULTI_FACT_QUESTIONS = (
    "everything that {s}",
    "Segment all the things that {p}.",
    "Which objects here {p}?",
    "Find every object that {s}.",
    "Show me everything in this image that {s}.",
)
MULTI_ANSWERS = ("{j}.", "They are {j}.", "Here they are: {j}.", "I found {j}.")


def multi_query(scene: Scene, rng: np.random.Generator, facts: frozenset[str]) -> Query | None:
    """'all the fruits', 'everything made of glass': two or more targets."""
    options: list[tuple[str, tuple[str, str], list[int]]] = []
    by_category, by_super = _group_indices(scene)
    for name, ids in by_category.items():
        options.append(("group", (name, scene.objects[ids[0]].category.plural), ids))
    for key, ids in by_super.items():
        options.append(("group", SUPERCATEGORIES[key], ids))
    for fact_id, ids in _fact_holders(scene, facts).items():
        options.append(("fact", (fact_id, ""), ids))
    options = [o for o in options if len(o[2]) >= 2]
    if not options:
        return None
    source, (a, b), ids = options[int(rng.integers(len(options)))]
    ids = left_to_right(scene, ids)
    if source == "group":
        texts = _texts(rng, MULTI_GROUP_QUESTIONS, g=a, gp=b)
        fact_ids: list[str] = []
    else:
        texts = _texts(rng, MULTI_FACT_QUESTIONS, p=FACTS[a].plural, s=FACTS[a].singular)
        fact_ids = [a]
    names = [short_name(scene.objects[i]) for i in ids]
    answer = instances_answer(rng, scene, ids)
    return _query("multi", texts, answer, scene, ids, names, fact_ids)


def left_to_right(scene: Scene, ids: Sequence[int]) -> list[int]:
    """Targets in the order answers list them: left to right, as a reader scans the image."""
    return sorted(ids, key=lambda i: scene.objects[i].centre[0])


def instances_answer(rng: np.random.Generator, scene: Scene, ids: Sequence[int]) -> str:
    """A several-target answer naming each object with its own SEG, in `ids`' order: "They
    are the red apple <SEG> and the green apple <SEG>." """
    names = [short_name(scene.objects[i]) for i in ids]
    return _cap(_pick(rng, MULTI_ANSWERS).format(j=_join(names)))


ABSENT_ANSWERS = (ABSENT_ANSWER, "There {v} no {n} in this image.", "I cannot find any {n} here.")
ABSENT_FACT_ANSWERS = (ABSENT_ANSWER, "Nothing in this image {s}.")


def absent_query(scene: Scene, rng: np.random.Generator, facts: frozenset[str]) -> Query | None:
    """Asks for something that is not there; the answer has no SEG."""
    present = {o.name for o in scene.objects}
    holders = _fact_holders(scene, facts)
    choice = rng.random()
    if choice < 0.4:
        missing = [c for c in CATEGORIES if c.name not in present]
        category = missing[int(rng.integers(len(missing)))]
        v = _be(category)
        texts = _texts(rng, EXPLICIT_QUESTIONS, d=category.name, v=v)
        answer = _pick(rng, ABSENT_ANSWERS).format(n=category.name, v=v)
        return _query("absent", texts, answer, scene, [], [])
    if choice < 0.7:
        # A present category in a colour nobody has: a hard negative for colour grounding.
        for index in rng.permutation(len(scene.objects)):
            category = scene.objects[int(index)].category
            used = {o.colour for o in scene.objects if o.category is category}
            free = [c for c in category.colours if c not in used]
            if len(category.colours) > 1 and free:
                description = f"{_pick(rng, free)} {category.name}"
                v = _be(category)
                texts = _texts(rng, EXPLICIT_QUESTIONS, d=description, v=v)
                answer = _pick(rng, ABSENT_ANSWERS).format(n=description, v=v)
                return _query("absent", texts, answer, scene, [], [])
    missing_facts = sorted(f for f in facts if f not in holders)
    if not missing_facts:
        return None
    fact_id = _pick(rng, missing_facts)
    texts = _knowledge_texts(rng, fact_id)
    answer = _pick(rng, ABSENT_FACT_ANSWERS).format(s=FACTS[fact_id].singular)
    return _query("absent", texts, answer, scene, [], [], [fact_id])


EXPLANATORY_QUESTIONS = (
    "Which object here {s}? Please explain why.",
    "What in this picture {s}? Explain your answer.",
    "Find the thing that {s} and tell me why you chose it.",
    "Segment the object that {s}, and give a reason.",
)
EXPLANATORY_ANSWERS = (
    "The {n} " + SEG + ", because {it} {s}.",
    "It is the {n} " + SEG + ", since {it} {s}.",
    "I would choose the {n} " + SEG + ": {it} {s}.",
    "The {n} " + SEG + " is the answer, because {it} {s}.",
)


def explanatory_query(
    scene: Scene, rng: np.random.Generator, facts: frozenset[str]
) -> Query | None:
    """A knowledge question whose answer gives the reason: 'The scissors <SEG>, because ...'."""
    found = _single_fact(scene, rng, facts)
    if found is None:
        return None
    fact_id, target = found
    obj = scene.objects[target]
    templates = list(EXPLANATORY_QUESTIONS)
    use = _use_question(fact_id)
    if use:
        templates.append(use + " Please explain why.")
    texts = _texts(rng, templates, s=FACTS[fact_id].singular)
    pronoun, form = _subject(obj)
    name = short_name(obj)
    answer = _pick(rng, EXPLANATORY_ANSWERS).format(n=name, it=pronoun, s=_fact_text(fact_id, form))
    return _query("explanatory", texts, answer, scene, [target], [name], [fact_id])


FOLLOW_RELATION = {
    "left": ("What is to the left of it?", "Which object is left of it?"),
    "right": ("What is to the right of it?", "Segment the thing right of it."),
    "above": ("What is above it?", "Segment the object above it."),
    "below": ("What is below it?", "Which object is under it?"),
}
FOLLOW_OTHER = ("Is there another one like it? Please segment it.", "Where is the other {a}?")
FOLLOW_NEAREST = ("What is closest to it?", "Which object is nearest to it?")
FOLLOW_COLOUR = ("What else has the same colour as it?", "Segment the other {c} thing.")


def _follow_up(scene: Scene, rng: np.random.Generator, first: int) -> tuple[str, int] | None:
    """A second question about the first answer's object and its unique answer."""
    n = len(scene.objects)
    obj = scene.objects[first]
    options = ["relation", "other", "nearest", "colour"]
    for k in rng.permutation(len(options)):
        option = options[int(k)]
        if option == "relation":
            relation = _pick(rng, list(FOLLOW_RELATION))
            target = _related_unique(scene, first, relation, range(n))
            if target is not None:
                return _pick(rng, FOLLOW_RELATION[relation]), target
        elif option == "other":
            same = [i for i, o in enumerate(scene.objects) if o.category is obj.category]
            if len(same) == 2:
                other = same[0] if same[1] == first else same[1]
                return _pick(rng, FOLLOW_OTHER).format(a=obj.name), other
        elif option == "nearest":
            dist = sorted(
                (float(np.hypot(o.centre[0] - obj.centre[0], o.centre[1] - obj.centre[1])), i)
                for i, o in enumerate(scene.objects)
                if i != first
            )
            if len(dist) == 1 or dist[1][0] >= SIZE_RATIO * dist[0][0]:
                return _pick(rng, FOLLOW_NEAREST), dist[0][1]
        elif _colour_word(obj):
            same_colour = [
                i
                for i, o in enumerate(scene.objects)
                if i != first and _colour_word(o) and o.colour == obj.colour
            ]
            if len(same_colour) == 1:
                return _pick(rng, FOLLOW_COLOUR).format(c=obj.colour), same_colour[0]
    return None


def multiturn_query(scene: Scene, rng: np.random.Generator, facts: frozenset[str]) -> Query | None:
    """Turn 1 finds an object; turn 2 refers to it ('what is to the left of it?')."""
    first_query = knowledge_query(scene, rng, facts) if rng.random() < 0.6 else None
    if first_query is None:
        first_query = explicit_query(scene, rng, facts)
    if first_query is None:
        return None
    first = first_query.targets[0]
    follow = _follow_up(scene, rng, first)
    if follow is None:
        return None
    question, target = follow
    name = short_name(scene.objects[target])
    first_turn = first_query.conversation[0]
    # ReasonSeg tools read only text[0]; the two questions together are self-contained.
    texts = [f"{_cap(first_turn[0])} {question}"]
    if not first_turn[0][:1].isupper():
        texts = [f"{_cap(first_turn[0])}. {question}"]
    return Query(
        kind="multiturn",
        conversation=[first_turn, (question, _single(rng, name))],
        targets=[target],
        target_names=[name],
        texts=texts,
        is_sentence=True,
        fact_ids=list(first_query.fact_ids),
        history_targets=[[first]],
    )


GENERATORS: dict[str, Generator] = {
    "explicit": explicit_query,
    "spatial": spatial_query,
    "comparative": comparative_query,
    "knowledge": knowledge_query,
    "long": long_query,
    "multi": multi_query,
    "absent": absent_query,
    "explanatory": explanatory_query,
    "multiturn": multiturn_query,
}


def generate_query(
    scene: Scene, rng: np.random.Generator, kind: str, facts: frozenset[str]
) -> Query | None:
    """A query of `kind` about `scene` that uses only the fact ids in `facts`, or None."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown query kind {kind!r}; expected one of {KINDS}")
    return GENERATORS[kind](scene, rng, facts)
