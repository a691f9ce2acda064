"""Visual questions about a scene, answered in words (LISA's VQA slot; LLaVA-Instruct there).

Reasoning answers name their targets the way `short_name` does ("the green teapot"), so a
model has to read each object's colour off the image, not only its category off the facts.
These samples teach exactly that, with no mask: what colour the objects of a category are
(left to right when there are several; only categories that come in several colours),
everything in the scene (left to right), and whether a category is there at all (half the
time one that is not).
"""

from __future__ import annotations

import numpy as np

from pixelreason.data.schema import SegSample
from pixelreason.data.templates import pick
from pixelreason.data.world.categories import CATEGORIES, Category
from pixelreason.data.world.queries import english_list, short_name
from pixelreason.data.world.scene import SceneObject, generate_scene
from pixelreason.prompting import Turn

LOOK_QUESTIONS = (
    "What colour is the {name}?",
    "Describe the {name} in this image.",
    "Which {name} is in this picture?",
)
LOOK_QUESTIONS_PLURAL = (
    "What colours are the {plural}, from left to right?",
    "Describe the {plural} from left to right.",
    "Which {plural} are in this picture, left to right?",
)
INVENTORY_QUESTIONS = (
    "What objects are in this image?",
    "List everything you can see, from left to right.",
    "What is in this picture?",
    "Describe this scene.",
)
PRESENCE_QUESTIONS = (
    "Is there {a_name} in this image?",
    "Can you see any {plural} here?",
    "Does this picture contain {a_name}?",
)
#: Question types and their shares.
TYPES = {"look": 0.45, "inventory": 0.3, "presence": 0.25}


def _listed(objects: list[SceneObject]) -> str:
    """'the a, the b and the c', left to right."""
    ordered = sorted(objects, key=lambda o: o.centre[0])
    return english_list([f"the {short_name(o)}" for o in ordered])


def _ask_presence(rng: np.random.Generator, category: Category) -> str:
    a_name = f"{category.article} {category.name}"
    return pick(rng, PRESENCE_QUESTIONS).format(a_name=a_name, plural=category.plural)


def vqa_sample(rng: np.random.Generator, size: int = 128) -> SegSample:
    """One visual question about a new scene, answered in text only (no `<SEG>`, no mask)."""
    scene = generate_scene(rng, size=size)
    kind = list(TYPES)[int(rng.choice(len(TYPES), p=list(TYPES.values())))]
    present = sorted({o.category.name for o in scene.objects})
    coloured = sorted({o.category.name for o in scene.objects if len(o.category.colours) > 1})
    if kind == "look" and not coloured:
        kind = "inventory"
    if kind == "inventory":
        question = pick(rng, INVENTORY_QUESTIONS)
        answer = f"I see {_listed(scene.objects)}."
    elif kind == "presence" and rng.random() < 0.5:
        absent = [c for c in CATEGORIES if c.name not in present]
        category = absent[int(rng.integers(len(absent)))]
        question = _ask_presence(rng, category)
        answer = f"No, there is no {category.name} in this image."
    else:
        names = present if kind == "presence" else coloured
        name = names[int(rng.integers(len(names)))]
        instances = [o for o in scene.objects if o.category.name == name]
        category = instances[0].category
        if kind == "presence":
            question = _ask_presence(rng, category)
            answer = f"Yes, there {'is' if len(instances) == 1 else 'are'} {_listed(instances)}."
        else:
            several = len(instances) > 1
            templates = LOOK_QUESTIONS_PLURAL if several else LOOK_QUESTIONS
            question = pick(rng, templates).format(name=name, plural=category.plural)
            answer = f"{'They are' if several else 'It is'} {_listed(instances)}."
    return SegSample(scene.image, [Turn(question, answer)], [], semantic=scene.semantic_map())
