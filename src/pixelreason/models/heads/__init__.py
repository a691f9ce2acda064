"""Mask heads, by name. Each head class builds itself from the model config."""

from __future__ import annotations

from typing import Any

from pixelreason.models.heads.base import HeadInputs, MaskHead, MaskPrediction
from pixelreason.models.heads.lisa import LisaHead
from pixelreason.models.heads.pixelllm import PixelLLMHead
from pixelreason.models.heads.pixellm import PixelLMHead
from pixelreason.models.heads.sam4mllm import Sam4MLLMHead
from pixelreason.models.sam import SamDecoder

#: Registered heads by name; a new paper's head is one more entry here.
HEADS: dict[str, type[MaskHead]] = {
    LisaHead.name: LisaHead,
    PixelLMHead.name: PixelLMHead,
    PixelLLMHead.name: PixelLLMHead,
    Sam4MLLMHead.name: Sam4MLLMHead,
}

__all__ = [
    "HEADS",
    "HeadInputs",
    "LisaHead",
    "MaskHead",
    "MaskPrediction",
    "PixelLLMHead",
    "PixelLMHead",
    "Sam4MLLMHead",
    "build_head",
    "head_class",
]


def head_class(name: str) -> type[MaskHead]:
    if name not in HEADS:
        raise ValueError(f"unknown mask head {name!r}; choose from {', '.join(HEADS)}")
    return HEADS[name]


def build_head(
    name: str,
    backbone: Any,
    sam_config: dict[str, Any] | None,
    args: dict[str, Any],
    *,
    sam: SamDecoder | None = None,
) -> MaskHead:
    """Build head `name`; `sam` passes pretrained SAM weights in place of `sam_config`."""
    return head_class(name).build(backbone, sam_config, args, sam=sam)
