"""Location-conditioned captions (PixelLLM): a box or points on one object -> its name.

"What is in this box?" with the box of one object as the location prompt, answered with the
object's full description ("The striped red mug <SEG>."), so the words that name it also
get its point and the marker its mask. A quarter of the prompts are 1-3 points inside the
object instead of its box.
"""

from __future__ import annotations

import numpy as np

from pixelreason.data.schema import SegSample
from pixelreason.data.world.categories import PATTERN_WORDS
from pixelreason.data.world.queries import SEG
from pixelreason.data.world.scene import SceneObject, generate_scene
from pixelreason.prompting import Turn

BOX_QUESTIONS = (
    "What is in this box?",
    "What is the object in this region?",
    "Describe the object in the box.",
    "Name the thing inside the box.",
)
POINT_QUESTIONS = (
    "What is at this point?",
    "What object is here?",
    "Name the thing at these points.",
    "What is at the marked location?",
)
CAPTION_ANSWERS = (
    "The {d} " + SEG + ".",
    "It is the {d} " + SEG + ".",
    "That is the {d} " + SEG + ".",
    "I see the {d} " + SEG + ".",
)
#: Share of prompts given as points rather than a box.
POINT_RATE = 0.25


def describe(obj: SceneObject) -> str:
    """Every visible attribute: pattern (if the category has several), colour (if several),
    name, e.g. "striped red mug"."""
    words = []
    if len(obj.category.patterns) > 1:
        words.append(PATTERN_WORDS[obj.pattern])
    if len(obj.category.colours) > 1:
        words.append(obj.colour)
    words.append(obj.name)
    return " ".join(words)


def caption_sample(rng: np.random.Generator, size: int = 128) -> SegSample:
    """One region-caption sample: a new scene, one of its objects as the location prompt
    (normalised box x0, y0, x1, y1, or points (k, 2)), the description as the answer."""
    scene = generate_scene(rng, size=size)
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    if rng.random() < POINT_RATE:
        ys, xs = np.nonzero(obj.mask)
        chosen = rng.choice(len(xs), size=int(rng.integers(1, 4)), replace=False)
        location = np.stack([xs[chosen] + 0.5, ys[chosen] + 0.5], axis=1) / size
        questions = POINT_QUESTIONS
    else:
        location = np.array(obj.bbox, dtype=np.float64) / size
        questions = BOX_QUESTIONS
    question = questions[int(rng.integers(len(questions)))]
    answer = CAPTION_ANSWERS[int(rng.integers(len(CAPTION_ANSWERS)))].format(d=describe(obj))
    return SegSample(
        image=scene.image,
        turns=[Turn(question, answer)],
        masks=[obj.mask.astype(np.uint8)],
        location=location.astype(np.float32),
        semantic=scene.semantic_map(),
    )
