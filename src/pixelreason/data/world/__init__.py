"""ReasonWorld: a procedural, seeded world of reasoning-segmentation samples.

Scenes of drawn objects (categories.py, scene.py), unambiguous queries with answers
(queries.py), samples and splits with a zero-shot fact hold-out (samples.py), location-
conditioned captions for PixelLLM (captions.py), export to the ReasonSeg format (export.py)
and previews (preview.py).
"""

from pixelreason.data.world.captions import caption_sample
from pixelreason.data.world.categories import CATEGORIES, FACTS, Category, Fact
from pixelreason.data.world.queries import (
    KINDS,
    SEG,
    Query,
    generate_query,
    instances_answer,
    left_to_right,
)
from pixelreason.data.world.samples import (
    SPLITS,
    TextQA,
    WorldSample,
    fact_statement,
    generate_sample,
    held_out_facts,
    holder_statement,
    seen_facts,
    stream,
    text_qa_samples,
)
from pixelreason.data.world.scene import Scene, SceneObject, generate_scene
from pixelreason.data.world.vqa import vqa_sample

__all__ = [
    "CATEGORIES",
    "FACTS",
    "KINDS",
    "SEG",
    "SPLITS",
    "Category",
    "Fact",
    "Query",
    "Scene",
    "SceneObject",
    "TextQA",
    "WorldSample",
    "caption_sample",
    "fact_statement",
    "holder_statement",
    "generate_query",
    "generate_sample",
    "generate_scene",
    "held_out_facts",
    "instances_answer",
    "left_to_right",
    "seen_facts",
    "stream",
    "text_qa_samples",
    "vqa_sample",
]
