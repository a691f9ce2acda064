"""Group members: the other classes a several-target answer leaves out.

Asked "Where are the kitchen items?" of an image with a bottle and a cup, or "everything that is
made from milk" of one with cheese and ice cream, our small LLMs mostly name one class and
repeat it: "The bottle <SEG> and the bottle <SEG>.". The instance question then finds every
bottle, and the cup is never grounded. Yet the LLM knows the cup belongs: scored as the first
words of the answer, "The cup" and "The bottle" are about equally likely after the question
(the training answers list the targets left to right, so any member may come first), and the
classes that do not belong are several nats less likely.

So for each answer that grounds two or more targets, to a query that asks for no class by name
(`requested_class`: "all the cherries" asks for cherries only, whatever else the LLM likes;
"everything that grows on trees" only names trees in passing), the LLM scores "The {class}" as
the answer's start for every class the vision probe finds (`ModelConfig.presence_threshold`), in
one teacher-forced pass (`first_slot_texts`). The members are the likeliest class and those that
follow it in a run of steps of at most `GAP` nats, none more than `SPAN` nats below it
(`likeliest_run`). A member the answer does not name, and that the probe finds with at least
`MIN_PRESENCE`, is asked the instance question ("Where are the cups?"), and each region of that
answer that is not already a target becomes one more target, " and the cup <SEG>".

Chosen on a development stream (700 test-stream samples of seed 21, not the test split): of its
78 several-target samples the answer names exactly the target classes in 44 before and 53
after, and none that was right goes wrong. A looser `MIN_PRESENCE` adds classes the probe
imagines; a wider `GAP` adds real objects that are not members.

The other way round, an answer may ground objects that are no members: asked "Which objects
here grow on trees?", "The cherry <SEG> and the cherry <SEG> and the donut <SEG>.". Where the
query states its fact (`knowledge.asked_fact`), each class the answer names is scored as the
subject of the fact's statement after its text question, as the knowledge check's ranking part
scores classes ("A donut grows on trees." after "What grows on trees?"), and the targets of a
class more than `FACT_SPAN` nats below the likeliest class the probe finds go
(`PixelReasonModel._drop_non_members`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pixelreason.models.instances import MIN_SHARE, OUTSIDE_LOGIT, regions_of

#: Largest step, in nats, between consecutive members' first-slot log-probabilities.
GAP = 1.5
#: Largest distance, in nats, of a member's first-slot log-probability below the likeliest's.
SPAN = 3.0
#: Least presence (the vision probe's) of a class added as a member.
MIN_PRESENCE = 0.5
#: The answer's first word, before each class's name, when the LLM scores the classes.
START = "The"
#: Largest share of a new target's pixels that may lie inside the answer's other targets.
MAX_OVERLAP = 0.5
#: Nats below the likeliest class's statement of an asked fact (`knowledge.asked_fact`) within
#: which the statement of each class of a several-target answer must be for its targets to stay
#: (`PixelReasonModel._drop_non_members`). Chosen on 169 several-target queries of a fresh
#: stream (seed 23) that ask for holders of a fact: with the statements after the text question,
#: the answers' classes are exactly the targets' in 132 before and 141 after, at any span from
#: 2 to 6 nats (9 fixed, none broken; at 8, 7 fixed).
FACT_SPAN = 4.0


def likeliest_run(scores: dict[int, float], gap: float = GAP, span: float = SPAN) -> list[int]:
    """The classes of `scores` (class -> log-probability) in the likeliest's run: sorted by
    score, each next one while it is at most `gap` below the one before and `span` below the
    first; likeliest first."""
    ranked = sorted(scores, key=lambda c: -scores[c])
    if not ranked:
        return []
    run = [ranked[0]]
    for before, after in zip(ranked, ranked[1:], strict=False):
        if scores[before] - scores[after] > gap or scores[ranked[0]] - scores[after] > span:
            break
        run.append(after)
    return run


def new_targets(
    found: torch.Tensor, taken: torch.Tensor, min_share: float = MIN_SHARE
) -> torch.Tensor:
    """(k, H, W) logits of one target per region of `found` (H, W logits of a class's
    instances): regions of at least `min_share` of the largest, each at most `MAX_OVERLAP`
    inside `taken` (H, W bool, the answer's targets so far); `found` inside the region, at most
    `OUTSIDE_LOGIT` outside it."""
    regions = regions_of((found > 0).cpu().numpy())
    if not regions:
        return found.new_zeros((0, *found.shape))
    largest = int(regions[0].sum())
    taken_np = taken.cpu().numpy()
    kept = [
        region
        for region in regions
        if region.sum() >= min_share * largest
        and (region & taken_np).sum() <= MAX_OVERLAP * region.sum()
    ]
    if not kept:
        return found.new_zeros((0, *found.shape))
    inside = torch.as_tensor(np.stack(kept), device=found.device)
    return torch.where(inside, found, found.clamp(max=OUTSIDE_LOGIT))


def first_slot_texts(labels: Sequence[Sequence[str]], classes: Sequence[int]) -> list[str]:
    """The answer starts the LLM scores: "The {name}" for each class."""
    return [f"{START} {labels[c][0]}" for c in classes]
