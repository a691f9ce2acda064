"""The mask-head interface: how any paper's head plugs into the shared backbone.

A head sees the backbone only through `HeadInputs`: the token ids of a conversation (teacher
forced in training, generated at inference), the last-layer state that predicted each of them,
and the image context the head computed once per image. It returns one mask per target. LISA
reads states at `<SEG>`; other heads (PixelLM's codebook, SAM4MLLM's text prompts, PixelLLM's
per-word points) read what they need from the same inputs, so the backbone never changes.

Optional hooks, all no-ops here, let a head do more without the model knowing what it is:
`prepare_sample`, `follow_up` and `display_text` (SAM4MLLM's text prompts and PQPP),
`prompt_tokens` + `embed_prompt` (placeholders in the prompt whose embeddings the head sets,
e.g. PixelLLM's location prompt) and `token_targets` (per-token training targets made at
collate time; the head turns them into `MaskPrediction.losses`). Head-specific results of a
generated answer travel in `MaskPrediction.extras` (e.g. PixelLLM's per-word points).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from pixelreason.data.schema import SegSample
from pixelreason.models.sam import SamDecoder
from pixelreason.processing import ImageInputs
from pixelreason.tokens import SEG_TOKEN


@dataclass
class HeadInputs:
    """token_ids (B, L) and states (B, L, D): states[b, t] predicted token_ids[b, t].

    `valid` (B, L) marks real (non-padding) positions; `context` is what `encode_image`
    returned for the B images of the batch; `images` their geometry (original size, size in
    the head's input), for heads whose prompts are image coordinates (SAM4MLLM, PixelLLM).
    `targets` are the head's own `token_targets` aligned with token_ids ((B, L, ...) each),
    given only when training (teacher forcing).
    """

    token_ids: torch.Tensor
    states: torch.Tensor
    valid: torch.Tensor
    context: Any
    images: Sequence[ImageInputs] | None = None
    targets: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class MaskPrediction:
    """Per batch item: mask logits (n_i, h, w) in the head's input frame and scores (n_i,);
    `extras`, if given, a JSON-ready dict per item that answers carry (e.g. parsed prompts,
    PixelLLM's per-word points). `losses` are the head's own training terms (scalars) computed
    from `HeadInputs.targets`; each is weighted by the `LossWeights` field of the same name.
    """

    logits: list[torch.Tensor]
    scores: list[torch.Tensor]
    extras: list[dict[str, Any]] | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


def unit_scores(iou: torch.Tensor) -> torch.Tensor:
    """SAM's predicted IoUs clamped to [0, 1] in value, with the gradient of the raw prediction
    (a plain clamp would stop the `score` loss wherever an untrained head strays outside)."""
    return iou + (iou.clamp(0, 1) - iou).detach()


class MaskHead(nn.Module, ABC):
    """Base class of mask heads. Subclasses set `name` and `special_tokens`."""

    name: ClassVar[str]
    #: Tokens the head adds to the vocabulary (e.g. `<SEG>`).
    special_tokens: ClassVar[tuple[str, ...]] = ()
    #: Whether the head has its own image encoder (and so its own image processor).
    uses_head_image: ClassVar[bool] = False
    #: Whether `MaskPrediction.scores` come from a trainable predictor (SAM's IoU head) that
    #: the `score` loss may train; else they are a function of the masks and left alone.
    learned_scores: ClassVar[bool] = False

    #: Vision-tower layers (hidden-state indices) whose patch features `encode_image` needs.
    vision_layers: tuple[int, ...] = ()

    @classmethod
    @abstractmethod
    def build(
        cls,
        backbone: Any,
        sam_config: dict[str, Any] | None,
        args: dict[str, Any],
        *,
        sam: Any = None,
    ) -> MaskHead:
        """Build for `backbone` (a `Backbone`: hidden and vision sizes), the model config's SAM
        config and head options; `sam` is an already loaded `SamDecoder` if given."""

    @classmethod
    def special_tokens_for(cls, args: dict[str, Any]) -> tuple[str, ...]:
        """The tokens a head built with options `args` adds to the vocabulary."""
        return cls.special_tokens

    @property
    def target_text(self) -> str:
        """What stands for one target in answer text: the data's `<SEG>` marker is replaced by
        this before tokenizing, and this by `<SEG>` when decoding."""
        return SEG_TOKEN

    def bind_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Look up the ids of this head's special tokens (already added to `tokenizer`)."""
        vocab = tokenizer.get_vocab()
        self.token_ids = {token: int(vocab[token]) for token in self.tokens}

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.special_tokens

    def prepare_sample(self, sample: SegSample, image: ImageInputs) -> SegSample:
        """Rewrite a training sample before its text is encoded; `image` is the sample's
        preprocessed image. Default: unchanged. SAM4MLLM writes each `<SEG>` as the text of
        its target's SAM prompt here (so the answers, not a fixed token, name the targets)."""
        return sample

    def follow_up(
        self, model: Any, caches: Sequence[Any], turns_list: Sequence[Any], answers: list[Any]
    ) -> list[Any]:
        """Revise generated answers (`Answer`s, one per conversation of `turns_list` about the
        image of the same `ImageCache`), asking `model` more if the head's method does so
        (SAM4MLLM's PQPP). Default: unchanged."""
        return answers

    def display_text(self, text: str) -> str:
        """The text shown for a decoded answer. Default: unchanged (fixed target texts are
        already shown as `<SEG>`); heads whose target text varies show `<SEG>` here."""
        return text

    @abstractmethod
    def encode_image(
        self,
        head_pixels: torch.Tensor | None,
        image_features: torch.Tensor,
        vision_states: list[torch.Tensor],
    ) -> Any:
        """Per-image context, computed once per image and cached by the API.

        head_pixels: (B, 3, P, P) or None; image_features: (B, N, D), the projected features
        the LLM sees; vision_states: per layer in `vision_layers`, patch features (B, g*g, Dv).
        """

    @abstractmethod
    def forward(self, inputs: HeadInputs) -> MaskPrediction:
        """Masks for every target named in `inputs.token_ids`, in order of appearance."""

    def count_targets(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Number of masks this head will produce for each row of token_ids (B, L) -> (B,)."""
        raise NotImplementedError

    # -- optional hooks (no-ops by default) ---------------------------------------------------
    @property
    def prompt_tokens(self) -> tuple[str, ...]:
        """Placeholder tokens written right after the image features in every prompt; their
        embeddings are replaced by `embed_prompt`. None by default."""
        return ()

    def embed_prompt(
        self,
        input_ids: torch.Tensor,
        embeds: torch.Tensor,
        image_features: torch.Tensor,
        locations: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        """Set the embeddings of this head's `prompt_tokens` before the LLM reads them.

        input_ids (B, T), embeds (B, T, D) (image features already in place), image_features
        (B, N, D); locations: per row a location prompt in normalised image coordinates (a box
        (4,) or points (k, 2)) or None. Returns embeds (B, T, D); by default unchanged.
        """
        return embeds

    def token_targets(
        self, labels: torch.Tensor, masks: Sequence[np.ndarray]
    ) -> dict[str, torch.Tensor]:
        """Per-token training targets for one sample, made when a batch is collated.

        labels (T,): the sample's token ids on answers, IGNORE_INDEX elsewhere; masks: its
        uint8 (H, W) target masks in order. Each returned tensor has T rows; the batch pads
        them with zeros (so a boolean "has a target" entry reads False on padding) and hands
        them to `forward` as `HeadInputs.targets`, shifted like the token ids. None by default.
        """
        return {}


class SamHead(MaskHead):
    """A head whose masks come from its own SAM (LISA, SAM4MLLM, PixelLLM): the SAM encoder
    gives the per-image context, and `sam_for` builds the SAM when none is loaded."""

    uses_head_image: ClassVar[bool] = True
    learned_scores: ClassVar[bool] = True
    sam: SamDecoder

    @classmethod
    def sam_for(
        cls, sam: SamDecoder | None, sam_config: dict[str, Any] | None, *, prompted: bool
    ) -> SamDecoder:
        """`sam` if given, else a from-scratch SAM of `sam_config`; `prompted` heads feed it
        points and boxes, so they redraw its position features (see `SamDecoder`)."""
        if sam is not None:
            return sam
        if sam_config is None:
            raise ValueError(f"the {cls.name} head needs a SAM config")
        sam = SamDecoder.from_config(sam_config)
        if prompted:
            sam.redraw_position_features()
        return sam

    def encode_image(
        self,
        head_pixels: torch.Tensor | None,
        image_features: torch.Tensor,
        vision_states: list[torch.Tensor],
    ) -> torch.Tensor:
        if head_pixels is None:
            raise ValueError(f"the {self.name} head needs SAM pixels")
        return self.sam.encode_image(head_pixels)
