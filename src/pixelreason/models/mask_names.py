"""Mask names: the words of an answer describe what each of its final masks holds.

The colour check (`pixelreason.models.presence`) asks whether the image shows the colour an
answer writes on some object of that category. It cannot tell *which* object: "the red apple
<SEG> and the red apple <SEG>" passes where a red and a green apple are both there, and a
target added by the instance question ("and the apple <SEG>") has no colour at all. Once the
masks are final, this step reads the colour probe's cell probabilities inside each target's
mask (each cell weighted by the share of it the mask covers, on the backbone's grid over the
whole image) and, for every category that comes in several colours named right before a
target, writes the colour of it that the probe finds most there. A colour word is replaced
(also one the category does not come in: "the blue cat"); a target named with an article and
no colour ("the apple <SEG>") gets one ("the green apple <SEG>"); one named with other words
before the category ("the striped apple <SEG>") keeps them as they are. This step changes
only the words: the masks stay, and the answer now describes what it segmented.

A target the answer names by no class at all ("Sure, it is <SEG>.", the form of LISA's
semantic-segmentation answers) is named first, by the class the category probe reads most
inside its mask ("Sure, it is the star <SEG>."), and with `ModelConfig.instance_spare` its
mask's separate regions become targets of their own, each named by its own reading ("... the
star <SEG> and the star <SEG>"), as the instance question makes spare instances targets; then
the colours are named. The masks' union stays (but for specks below a tenth of the mask's
largest region, which the split drops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from pixelreason.models.presence import colour_patterns
from pixelreason.models.probe import VisionProbe

#: Words after which a colour may be added before a category name ("the apple").
ARTICLES = frozenset({"the", "a", "an"})


@dataclass(frozen=True)
class ColourName:
    """Where an answer names target `target` (its index among the answer's targets) as a
    category with colours: `position` of its colour token in the answer's ids, or with
    `colour` None, where one would go (the category's first token); `colours` maps each colour
    token id of the category to its colour probe label (an index into the labels)."""

    target: int
    position: int
    colour: int | None
    colours: dict[int, int]


def colour_names(
    token_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[str],
    target_id: int,
) -> list[ColourName]:
    """Each target of the answer `token_ids` named right before its marker (`target_id`; blank
    tokens between are skipped) as a CATEGORY of `labels` that comes in several colours, after
    a colour word (one of the category's, or of another: "blue cat") or an article, in order."""
    patterns = colour_patterns(tokenizer, tuple(labels))
    ids = list(token_ids)
    blank = {i for i in set(ids) if i != target_id and not tokenizer.decode([i]).strip()}
    any_colour = {token for colours in patterns.values() for token in colours}
    names = []
    targets = [position for position, token in enumerate(ids) if token == target_id]
    for target, marker in enumerate(targets):
        end = marker
        while end > 0 and ids[end - 1] in blank:
            end -= 1
        # the longest category name that ends there ("orange tree", not "tree")
        found = [c for c in patterns if len(c) <= end and tuple(ids[end - len(c) : end]) == c]
        if not found:
            continue
        category = max(found, key=len)
        start = end - len(category)
        colours = patterns[category]
        if len(colours) < 2:
            continue  # one colour ("orange orange"): nothing to tell its instances apart
        before = ids[start - 1] if start > 0 else None
        if before in any_colour:  # its own colours or one it does not come in ("blue cat")
            names.append(ColourName(target, start - 1, before, colours))
        elif before is None or tokenizer.decode([before]).strip().lower() in ARTICLES:
            names.append(ColourName(target, start, None, colours))
    return names


def cell_probabilities(probe: VisionProbe, features: torch.Tensor) -> torch.Tensor:
    """(B, C, g, g): a probe's class probabilities in each cell of the backbone's g x g grid
    over the LLM's image features (B, N, D) (a leading class token is skipped)."""
    grid = int(round(features.shape[1] ** 0.5))
    probs = probe.backbone(features[:, -grid * grid :].float()).softmax(-1)
    return probs.transpose(1, 2).reshape(len(features), -1, grid, grid)


def read_masks(cells: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(n, C): what a probe reads inside each mask, each class's probability summed over the
    cells (C, g, g) of one image (`cell_probabilities`), each cell weighted by the share of it
    that the mask (n, H, W over the whole image, > 0 inside) covers; 0 for an empty mask."""
    shares = F.adaptive_avg_pool2d((masks > 0).float()[:, None], cells.shape[-2:])[:, 0]
    return torch.einsum("nyx,cyx->nc", shares, cells.float())


def mask_colours(read: torch.Tensor, names: Sequence[ColourName]) -> list[int | None]:
    """For each name, the colour token its category's colours would have inside the target's
    mask: `read` (n, C) the colour probe's reading of the answer's masks (`read_masks`). A
    name whose mask is empty keeps its colour (None where it has none)."""
    chosen = []
    for name in names:
        if name.target >= len(read) or read[name.target].sum() <= 0:
            chosen.append(name.colour)
            continue
        # label i is the probe's class i + 1 (class 0 is the background)
        colours = {
            token: float(read[name.target, label + 1]) for token, label in name.colours.items()
        }
        chosen.append(max(colours, key=colours.__getitem__))
    return chosen


def mask_class(read: torch.Tensor) -> int | None:
    """The class (an index into the probe's labels, background excluded) that the category
    probe reads most inside a mask, from its reading (C,) (`read_masks`); None where empty."""
    if read.sum() <= 0:
        return None
    return int(read[1:].argmax())


def names_nothing(text: str, colours: Sequence[str]) -> bool:
    """Whether a target, shown by the text before its marker, can be given a name there: the
    answer names no class right before it (the caller checks) and its last word is no article
    or colour ("Sure, it is" can become "Sure, it is the star"; "the red" cannot)."""
    words = text.lower().split()
    return bool(words) and words[-1].strip(",:;") not in ARTICLES | set(colours)
