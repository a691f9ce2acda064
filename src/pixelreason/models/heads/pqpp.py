"""PQPP (SAM4MLLM's proactive query of prompt points), at inference.

Round 1 is the ordinary answer: one box per target. Round 2 asks, for each point of a
`grid` x `grid` lattice inside each box, "is this point on the target?", every question
appended to the same conversation (the image's cached features, the question, the round-1
answer). All questions of all targets go through the backbone in ONE batched forward pass (not
one generation each): the answer's first token (the first that tells "yes" from "no") is read
at the last prompt position, and P(yes) = softmax(logit_yes, logit_no)[0]. Points answered
with confidence max(P, 1 - P) >= `threshold` join the box as SAM prompts, labelled inside for
yes and outside for no.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from pixelreason.models.heads.ppg import PromptFrame
from pixelreason.models.heads.text_prompts import (
    GridPoint,
    TextPrompt,
    grid_points,
    parse_prompts,
    point_question,
)
from pixelreason.prompting import Turn

if TYPE_CHECKING:
    from pixelreason.models.segmenter import Answer, ImageCache, PixelReasonModel


@dataclass(frozen=True)
class PointVotes:
    """Round 2 for one target: the queried grid points and the model's P(yes) for each."""

    box: tuple[int, int, int, int]
    points: list[GridPoint]
    p_yes: list[float]

    def prompt(
        self, threshold: float, max_inside: int | None = None, max_outside: int | None = None
    ) -> TextPrompt:
        """The box and the points answered with confidence >= threshold; with limits, only
        the most confident `max_inside` yes and `max_outside` no points (in grid order)."""
        confident = [
            (max(p, 1.0 - p), index, point, int(p >= 0.5))
            for index, (point, p) in enumerate(zip(self.points, self.p_yes, strict=True))
            if max(p, 1.0 - p) >= threshold
        ]
        limits = {1: max_inside, 0: max_outside}
        chosen = []
        for label, limit in limits.items():
            ranked = sorted((c for c in confident if c[3] == label), key=lambda c: (-c[0], c[1]))
            chosen += ranked if limit is None else ranked[:limit]
        kept = [(point, label) for _, _, point, label in sorted(chosen, key=lambda c: c[1])]
        return TextPrompt(
            box=self.box,
            points=tuple(point for point, _ in kept),
            labels=tuple(label for _, label in kept),
        )

    def to_dict(self, prompt: TextPrompt) -> dict[str, Any]:
        """JSON-ready: the queried points, P(yes), and the points `prompt` kept."""
        return {
            "box": list(self.box),
            "points": [list(p) for p in self.points],
            "p_yes": [round(p, 4) for p in self.p_yes],
            "kept": [list(p) for p in prompt.points],
            "labels": list(prompt.labels),
        }


@torch.no_grad()
def yes_probabilities(
    model: PixelReasonModel,
    cache: ImageCache,
    history: Sequence[Turn],
    questions: Sequence[str],
) -> torch.Tensor:
    """P(yes) (Q,) for Q yes/no questions, each asked after the same answered `history`
    about the cached image, in one batched forward pass of the backbone."""
    if not questions:
        return torch.zeros(0)
    preprocessor = model.preprocessor
    prefix = torch.tensor(model.head.answer_prefix, dtype=torch.long)
    rows = [
        torch.cat([preprocessor.encode([*history, Turn(q)], image=True).input_ids, prefix])
        for q in questions
    ]
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), preprocessor.tokenizer.pad_token_id)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row
    features = cache.features.expand(len(rows), -1, -1)
    embeds = model.backbone.embed(input_ids.to(model.device), features)
    # Right padding: plain causal attention is exact for every real position.
    logits = model.backbone(embeds, None).logits
    last = torch.tensor([len(row) - 1 for row in rows], device=logits.device)
    yes, no = model.head.answer_ids
    pair = logits[torch.arange(len(rows), device=logits.device), last][:, [yes, no]]
    return pair.float().softmax(dim=-1)[:, 0].cpu()


@torch.no_grad()
def pqpp_answer(
    model: PixelReasonModel,
    cache: ImageCache,
    turns: Sequence[Turn],
    answer: Answer,
    *,
    grid: int = 5,
    threshold: float = 0.75,
    max_inside: int | None = None,
    max_outside: int | None = None,
) -> Answer:
    """`answer` (round 1, to the last of `turns`) with its masks redone by PQPP: the same
    targets, each prompted with its box and the confidently answered grid points (at most
    `max_inside` yes and `max_outside` no points, the most confident, if given). Adds
    `extras["pqpp"]`, one entry per target (points, P(yes), kept points and labels)."""
    raw = answer.extras.get("raw_text", answer.text)
    boxes = [block.box for block in parse_prompts(raw) if block.box is not None]
    if not boxes:
        return answer
    history = [*turns[:-1], Turn(turns[-1].user, raw)]
    lattices = [grid_points(box, grid) for box in boxes]
    questions = [
        point_question(point, box)
        for box, points in zip(boxes, lattices, strict=True)
        for point in points
    ]
    p_yes = yes_probabilities(model, cache, history, questions).tolist()
    votes = [
        PointVotes(box, points, p_yes[k * grid * grid : (k + 1) * grid * grid])
        for k, (box, points) in enumerate(zip(boxes, lattices, strict=True))
    ]
    prompts = [v.prompt(threshold, max_inside, max_outside) for v in votes]
    frame = PromptFrame.of(cache.image)
    embeddings = cache.context.expand(len(prompts), -1, -1, -1)
    logits, iou = model.head.decode_prompts(prompts, embeddings, [frame] * len(prompts))
    masks = model.preprocessor.masks_to_image(logits, cache.image)
    return replace(
        answer,
        mask_logits=masks.float().cpu(),
        scores=iou.clamp(0, 1).float().cpu(),
        extras={
            **answer.extras,
            "pqpp": [v.to_dict(p) for v, p in zip(votes, prompts, strict=True)],
        },
    )
