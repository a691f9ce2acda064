"""Instance split: masks of one answer that repeat each other become one instance each.

Asked for "all the oranges", a model often answers "the orange <SEG> and the orange <SEG>"
and, the two `<SEG>` states being nearly the same, decodes the same mask twice: both oranges
in each, or the same orange in both. Where such a group's union falls apart into separate
regions, each mask of the group takes its own region (connected component, 8-neighbour), so
the answer's targets are its instances. A group whose union is one region is left alone.

Instance question: where both masks landed on one of the oranges, their union has one region
and the split cannot help. Semantic-segmentation training (LISA's "Where are the oranges?",
answered with one mask over every instance) taught the model what a class's instances are, so
the model is asked that question about the class (`instance_question`), and the targets take
the regions of its mask instead (`take_regions`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from pixelreason.models.objects import needed_regions
from pixelreason.tokens import SEG_TOKEN

#: Logit given to a split mask outside its own region (sigmoid(-8) ~ 3e-4).
OUTSIDE_LOGIT = -8.0
#: Logit given to a mask moved onto a region, at least, inside it.
INSIDE_LOGIT = 8.0
#: Regions of a mask smaller than this share of its largest are specks, not instances.
MIN_SHARE = 0.1


@dataclass(frozen=True)
class Split:
    """One split group: the masks it held and the regions (pixel counts) it found."""

    masks: tuple[int, ...]
    regions: tuple[int, ...]


def duplicate_groups(masks: np.ndarray, overlap: float) -> list[list[int]]:
    """Groups (of two or more) of the (n, H, W) bool masks linked by IoU >= `overlap`."""
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(axis=1)
    union = area[:, None] + area[None, :] - inter
    linked = (inter >= overlap * np.maximum(union, 1)) & (union > 0)
    parent = list(range(len(masks)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(linked, k=1)), strict=True):
        parent[root(int(j))] = root(int(i))
    groups: dict[int, list[int]] = {}
    for i in range(len(masks)):
        groups.setdefault(root(i), []).append(i)
    return [group for group in groups.values() if len(group) > 1]


def regions_of(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's connected components (8-neighbour), largest first."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return [labels == k + 1 for k in np.argsort(-areas, kind="stable")]


def split_duplicates(
    logits: torch.Tensor, overlap: float, min_share: float = 0.1, cuts: np.ndarray | None = None
) -> tuple[torch.Tensor, list[Split]]:
    """Split each group of repeated masks (IoU >= `overlap`) into the regions of its union.

    Each mask of a group is matched one to one to the union's regions no smaller than
    `min_share` of its largest (the largest total of its mean logits over them); any other
    region goes to the mask whose logits are highest there, and a mask left over (more masks
    than regions) keeps the group's union. Inside its regions a mask takes the group's highest
    logit, outside them at most `OUTSIDE_LOGIT`; the union of the masks stays as it was.

    Args:
        logits: (n, H, W) mask logits of one answer.
        overlap: IoU at which two masks count as repeats; 0 turns the split off.
        min_share: regions smaller than this share of the union's largest are not matched.
        cuts: (H, W) bool object cuts (`pixelreason.models.objects`): a union of one region
            is cut into its objects.

    Returns:
        the new logits (a copy where anything was split) and the groups split.
    """
    if overlap <= 0 or len(logits) < 2:
        return logits, []
    masks = (logits > 0).cpu().numpy()
    out, splits = logits, []
    for group in duplicate_groups(masks, overlap):
        regions = needed_regions(masks[group].any(axis=0), cuts, 2, min_share)
        sizes = [int(region.sum()) for region in regions]
        major = sum(size >= min_share * sizes[0] for size in sizes)  # largest first
        if major < 2:
            continue
        stacked = torch.as_tensor(np.stack(regions), device=logits.device)  # (R, H, W)
        top = logits[group].max(dim=0).values
        out = logits.clone() if out is logits else out
        _give_regions(out, logits, group, stacked, major, top)  # a mask left over keeps the union
        splits.append(Split(masks=tuple(group), regions=tuple(sizes)))
    return out, splits


def target_classes(text: str, labels: Sequence[Sequence[str]]) -> list[int | None]:
    """For each target marker of an answer, in order, the index into `labels` of the class
    named right before it ("the striped orange cat <SEG>": the cat; the longest name that ends
    there), or None ("Sure, it is <SEG>."). `text` as `Answer.text` shows it."""
    names = sorted(
        ((name.lower(), index) for index, spellings in enumerate(labels) for name in spellings),
        key=lambda pair: -len(pair[0]),
    )
    found: list[int | None] = []
    for before in text.lower().split(SEG_TOKEN.lower())[:-1]:
        before = before.rstrip()
        found.append(
            next((i for name, i in names if re.search(rf"\b{re.escape(name)}$", before)), None)
        )
    return found


def repeated_classes(text: str, labels: Sequence[Sequence[str]]) -> dict[int, list[int]]:
    """Classes an answer grounds with two or more targets ("the orange <SEG> and the orange
    <SEG>"), each with its targets' positions, in order."""
    groups: dict[int, list[int]] = {}
    for position, index in enumerate(target_classes(text, labels)):
        if index is not None:
            groups.setdefault(index, []).append(position)
    return {index: group for index, group in groups.items() if len(group) > 1}


def instance_question(template: str, names: Sequence[str]) -> str:
    """The question about a class's instances: `template` with `{plural}` (the class's last
    name, its plural) and `{name}` (its first) filled in."""
    return template.format(name=names[0], plural=names[-1])


def take_regions(
    logits: torch.Tensor,
    group: Sequence[int],
    found: torch.Tensor,
    min_share: float = MIN_SHARE,
    spare: bool = False,
    cuts: np.ndarray | None = None,
) -> tuple[torch.Tensor, tuple[int, ...], torch.Tensor]:
    """Give the masks of `group` the regions of another mask of the same class's instances.

    `found` (H, W) holds the logits of that mask (the answer to the instance question). Its
    regions of at least `min_share` of its largest are matched one to one to the group's
    masks (the largest total of the masks' mean logits over them); any other such region goes
    to the mask whose logits are highest there, or with `spare` becomes a mask of its own, and
    a mask left over (more masks than regions) keeps its own. Inside its regions a mask takes
    `found`'s logits, outside them at most `OUTSIDE_LOGIT`.

    Args:
        logits: (n, H, W) mask logits of one answer.
        group: the masks (indices into `logits`) that ground the class.
        found: (H, W) logits of the class's instances, at the same size.
        min_share: smaller regions are specks and are dropped.
        spare: regions beyond the group's masks become masks of their own, not parts of one.
        cuts: (H, W) bool object cuts (`pixelreason.models.objects`): where `found` has fewer
            regions than the group has masks, it is cut into its objects.

    Returns:
        the new logits (a copy where anything changed), the kept regions' pixel counts,
        largest first (empty where `found` has no pixel and nothing changed), and (k, H, W)
        logits of the spare regions' masks (k = 0 without `spare`).
    """
    none = logits.new_zeros((0, *logits.shape[1:]))
    regions = needed_regions((found > 0).cpu().numpy(), cuts, len(group), min_share)
    if not regions:
        return logits, (), none
    sizes = [int(region.sum()) for region in regions]
    kept = [r for r, size in enumerate(sizes) if size >= min_share * sizes[0]]
    stacked = torch.as_tensor(np.stack([regions[r] for r in kept]), device=logits.device)
    out = logits.clone()
    found = found.to(device=logits.device, dtype=logits.dtype)
    # a mask left over keeps its own
    left = _give_regions(out, logits, list(group), stacked, len(kept), found, spare)
    outside = found.clamp(max=OUTSIDE_LOGIT)
    extra = [torch.where(stacked[r], found, outside) for r in left]
    return out, tuple(sizes[r] for r in kept), torch.stack(extra) if extra else none


def _give_regions(
    out: torch.Tensor,
    logits: torch.Tensor,
    group: list[int],
    regions: torch.Tensor,
    matched: int,
    inside: torch.Tensor,
    spare: bool = False,
) -> list[int]:
    """Share (R, H, W) bool `regions` out among the masks of `group`, in place in `out`: the
    first `matched` one to one (the largest total of the masks' mean `logits` over them), any
    other to the mask whose logits are highest there, or with `spare` to none. A mask takes
    `inside` in its regions and at most `OUTSIDE_LOGIT` outside them; a mask given none is
    left as `out` holds it. Returns the regions given to no mask, in order."""
    own = logits[group].float()  # (k, H, W)
    mass = (own[:, None] * regions[None]).sum(dim=(2, 3)) / regions.sum(dim=(1, 2))
    pairs = linear_sum_assignment(mass[:, :matched].cpu().numpy(), maximize=True)
    owner = {int(r): group[int(m)] for m, r in zip(*pairs, strict=True)}
    left = [r for r in range(len(regions)) if r not in owner]
    for r in left if not spare else []:  # to the mask most sure of it
        owner[r] = group[int(mass[:, r].argmax())]
    for index in group:
        mine = [r for r, m in owner.items() if m == index]
        if mine:
            outside = torch.clamp(logits[index], max=OUTSIDE_LOGIT)
            out[index] = torch.where(regions[mine].any(dim=0), inside, outside)
    return left if spare else []
