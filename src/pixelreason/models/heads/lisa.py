"""LISA's head: "embedding as mask" — the `<SEG>` state, through an MLP, prompts SAM."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from pixelreason.models.heads.base import HeadInputs, MaskPrediction, SamHead, unit_scores
from pixelreason.models.sam import SamDecoder
from pixelreason.tokens import SEG_TOKEN


class LisaHead(SamHead):
    """γ: hidden -> hidden -> prompt_dim MLP (LISA's [4096, 4096, 256]) into SAM's decoder.

    Each `<SEG>` in the text yields one mask: its predicting state h_seg becomes the single
    sparse prompt token of SAM's mask decoder over the image's SAM embedding.
    """

    name: ClassVar[str] = "lisa"
    special_tokens: ClassVar[tuple[str, ...]] = (SEG_TOKEN,)

    def __init__(self, hidden_size: int, sam: SamDecoder) -> None:
        super().__init__()
        self.sam = sam
        self.projector = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, sam.prompt_dim),
        )

    @classmethod
    def build(
        cls,
        backbone: Any,
        sam_config: dict[str, Any] | None,
        args: dict[str, Any],
        *,
        sam: SamDecoder | None = None,
    ) -> LisaHead:
        if args:
            raise ValueError(f"the LISA head takes no options, got {sorted(args)}")
        return cls(backbone.hidden_size, cls.sam_for(sam, sam_config, prompted=False))

    def count_targets(self, token_ids: torch.Tensor) -> torch.Tensor:
        return (token_ids == self.token_ids[SEG_TOKEN]).sum(dim=-1)

    def forward(self, inputs: HeadInputs) -> MaskPrediction:
        is_seg = (inputs.token_ids == self.token_ids[SEG_TOKEN]) & inputs.valid
        batch_index, position = is_seg.nonzero(as_tuple=True)
        prompts = self.projector(inputs.states[batch_index, position])  # (N, C)
        embeddings = inputs.context[batch_index]  # (N, C, h, w)
        logits, iou = self.sam.decode(embeddings, prompts[:, None])
        counts = is_seg.sum(dim=1).tolist()
        return MaskPrediction(
            logits=list(logits.split(counts)), scores=list(unit_scores(iou).split(counts))
        )
