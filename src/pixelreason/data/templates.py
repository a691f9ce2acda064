"""Question and answer templates (many phrasings per kind), LISA-style."""

from __future__ import annotations

import numpy as np

SEMANTIC_QUESTIONS = (
    "Can you segment the {name} in this image?",
    "Please segment the {name} in this image.",
    "What is {name} in this image? Please respond with segmentation mask.",
    "What is {name} in this image? Please output segmentation mask.",
    "Show me the {name}.",
    "Where is the {name}?",
)
SEMANTIC_QUESTIONS_PLURAL = (
    "Can you segment the {plural} in this image?",
    "Please segment all the {plural}.",
    "Where are the {plural}?",
    "Show me the {plural}.",
)
SEGMENT_ANSWERS = (
    "It is <SEG>.",
    "Sure, <SEG>.",
    "Sure, it is <SEG>.",
    "Sure, the segmentation result is <SEG>.",
    "<SEG>.",
)
ABSENT_ANSWERS = (
    "There is no {name} in this image.",
    "I cannot find any {name} here.",
)


def pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]
