"""LoRA (peft) on the language model, and LISA's choice of trainable parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from pixelreason.models.adapter import has_lora, merge_lora
from pixelreason.models.segmenter import PixelReasonModel

__all__ = ["LoraSettings", "apply_lora", "has_lora", "language_model", "merge_lora"]


@dataclass(frozen=True)
class LoraSettings:
    """LISA's defaults: r 8, alpha 16, dropout 0.05 on the LLM's q_proj and v_proj."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = field(default=("q_proj", "v_proj"))


def language_model(model: PixelReasonModel) -> nn.Module:
    return model.backbone.model.model.language_model


def apply_lora(model: PixelReasonModel, settings: LoraSettings) -> None:
    """Inject LoRA adapters into the language model (in place) and set LISA's trainable set:
    adapters, token embeddings and lm_head, the head's projector and SAM's mask decoder.
    The vision tower, projector and SAM image encoder stay frozen."""
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
    )
    inject_adapter_in_model(config, language_model(model))
    model.requires_grad_(False)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(True)
    model.backbone.model.get_input_embeddings().requires_grad_(True)
    model.backbone.model.get_output_embeddings().requires_grad_(True)
    for name, module in model.head.named_children():
        # Everything of the head but an image encoder it may carry (SAM's ViT) is trained.
        if name != "sam":
            module.requires_grad_(True)
    sam = getattr(model.head, "sam", None)
    if sam is not None:
        sam.sam.mask_decoder.requires_grad_(True)
