"""PixelLLM's head: every answer word gets a point in the image; a target's points prompt SAM.

A small MLP beside the LM's vocabulary head reads the last-layer state that predicted each
token and regresses a location for it: a point (x, y) and a box (x0, y0, x1, y1), normalised
to the image's width and height. The locations are never fed back into decoding, so the text
is exactly what the LM alone generates. Each target is written as in the data, its name
followed by one `<SEG>` ("the red mug <SEG>"); the mean location of its words and marker
(see `pixelreason.grounding`) prompts SAM's mask decoder with one point and one box, and SAM
returns the target's mask. A location prompt (a box or points; by default the whole image)
enters the LLM through placeholder tokens right after the image (`LocationEncoder`).

Training: L1 on the locations of tokens that name a target (`LossWeights.point`), and SAM's
BCE + DICE with prompts made from the ground-truth masks (jittered), so SAM learns to follow
point and box prompts while the LM learns to give them.

Departure from the paper: PixelLLM uses a pretrained SAM; none can be downloaded here, so the
presets build this head's SAM (image encoder included) from scratch and train it jointly.
`PixelReasonModel.from_components(..., head="pixelllm")` accepts a pretrained SAM instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from pixelreason.grounding import mask_location, name_owners, token_texts
from pixelreason.models.heads.base import HeadInputs, MaskPrediction, SamHead, unit_scores
from pixelreason.models.location import WHOLE_IMAGE, LocationEncoder, check_location
from pixelreason.models.sam import SamDecoder
from pixelreason.processing import IGNORE_INDEX, ImageInputs
from pixelreason.tokens import LOCATION_TOKEN, SEG_TOKEN
from pixelreason.train.losses import location_l1

#: Numbers the location MLP gives per token: a point (x, y) then a box (x0, y0, x1, y1).
LOCATION_SIZE = 6


@dataclass(frozen=True)
class PixelLLMSettings:
    """Head options (`head_args`)."""

    #: Width of the location prompt encoder.
    channels: int = 64
    #: Placeholder tokens (LLM inputs) a location prompt becomes.
    location_tokens: int = 2
    #: Training jitter of the ground-truth SAM prompts, as a fraction of the target's box side
    #: (points move by up to this much, box edges by half of it), so SAM learns to tolerate
    #: the error of predicted prompts.
    jitter: float = 0.1

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> PixelLLMSettings:
        unknown = sorted(set(args) - {"channels", "location_tokens", "jitter"})
        if unknown:
            raise ValueError(f"unknown PixelLLM head options {unknown}")
        settings = cls(**args)
        if settings.channels < 4 or settings.location_tokens < 1 or settings.jitter < 0:
            raise ValueError(f"invalid PixelLLM head options {args}")
        return settings


class PixelLLMHead(SamHead):
    """Per-token locations (MLP) + location prompt encoder + SAM prompted by point and box."""

    name: ClassVar[str] = "pixelllm"
    special_tokens: ClassVar[tuple[str, ...]] = (SEG_TOKEN, LOCATION_TOKEN)

    def __init__(self, hidden_size: int, sam: SamDecoder, settings: PixelLLMSettings) -> None:
        super().__init__()
        self.settings = settings
        self.sam = sam
        # Beside the vocabulary head: the same state that predicts a token locates it.
        self.locator = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, LOCATION_SIZE),
        )
        heads = 4 if settings.channels % 4 == 0 else 1
        self.prompt_encoder = LocationEncoder(
            hidden_size, settings.channels, settings.location_tokens, heads=heads
        )
        self.tokenizer: PreTrainedTokenizerBase | None = None

    @classmethod
    def build(
        cls,
        backbone: Any,
        sam_config: dict[str, Any] | None,
        args: dict[str, Any],
        *,
        sam: SamDecoder | None = None,
    ) -> PixelLLMHead:
        settings = PixelLLMSettings.from_args(args)
        sam = cls.sam_for(sam, sam_config, prompted=True)
        return cls(backbone.hidden_size, sam, settings)

    def bind_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        super().bind_tokenizer(tokenizer)
        # Word texts decide which tokens name a target, in training data and in answers.
        self.tokenizer = tokenizer

    @property
    def prompt_tokens(self) -> tuple[str, ...]:
        return (LOCATION_TOKEN,) * self.settings.location_tokens

    # -- per-token locations ------------------------------------------------------------------
    def locate(self, states: torch.Tensor) -> torch.Tensor:
        """states (..., D) -> locations (..., 6) in [0, 1]: point x, y then box x0, y0, x1, y1."""
        return torch.sigmoid(self.locator(states).float())

    def owners(self, token_ids: Sequence[int], in_answer: Sequence[bool]) -> list[int]:
        """Per token, the rank of the target whose name it is part of, or -1."""
        ids = list(token_ids)
        texts = [""] * len(ids)
        start = None
        for t in range(len(ids) + 1):
            inside = t < len(ids) and in_answer[t]
            if inside and start is None:
                start = t
            elif not inside and start is not None:
                texts[start:t] = token_texts(self._tokenizer(), ids[start:t])
                start = None
        seg = self.token_ids[SEG_TOKEN]
        return name_owners(texts, [i == seg for i in ids], in_answer)

    def token_targets(
        self, labels: torch.Tensor, masks: Sequence[np.ndarray]
    ) -> dict[str, torch.Tensor]:
        """points (T, 2), boxes (T, 4) and located (T,): the target location of each answer
        token that names a target (its words and its `<SEG>`)."""
        ids = labels.tolist()
        owners = self.owners(ids, [i != IGNORE_INDEX for i in ids])
        geometry = [mask_location(mask) for mask in masks]
        points = torch.zeros((len(ids), 2))
        boxes = torch.zeros((len(ids), 4))
        located = torch.zeros(len(ids), dtype=torch.bool)
        for t, owner in enumerate(owners):
            if owner < 0 or geometry[owner] is None:  # an empty mask has no point
                continue
            point, box = geometry[owner]
            points[t], boxes[t], located[t] = torch.from_numpy(point), torch.from_numpy(box), True
        return {"points": points, "boxes": boxes, "located": located}

    # -- location prompt ----------------------------------------------------------------------
    def embed_prompt(
        self,
        input_ids: torch.Tensor,
        embeds: torch.Tensor,
        image_features: torch.Tensor,
        locations: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        """Put each row's encoded location prompt (default: the whole image) at its
        placeholders, found by id and counted."""
        is_location = input_ids == self.token_ids[LOCATION_TOKEN]
        counts = is_location.sum(dim=1)
        expected = self.settings.location_tokens
        if not bool((counts == expected).all()):
            raise ValueError(f"location placeholders per row {counts.tolist()} != {expected}")
        if len(locations) != input_ids.shape[0]:
            raise ValueError(f"{len(locations)} locations for {input_ids.shape[0]} rows")
        whole = torch.tensor(WHOLE_IMAGE, device=embeds.device)
        encoded = torch.stack(
            [
                self.prompt_encoder(
                    check_location(whole if location is None else location.to(embeds.device)),
                    features,
                )
                for location, features in zip(locations, image_features, strict=True)
            ]
        )
        return embeds.masked_scatter(
            is_location[..., None], encoded.to(embeds.dtype).reshape(-1, embeds.shape[-1])
        )

    # -- masks --------------------------------------------------------------------------------
    def count_targets(self, token_ids: torch.Tensor) -> torch.Tensor:
        return (token_ids == self.token_ids[SEG_TOKEN]).sum(dim=-1)

    def forward(self, inputs: HeadInputs) -> MaskPrediction:
        """One mask per `<SEG>`: SAM prompted by the target's point and box. With targets
        (training) the prompts come from the ground truth and the location L1 is returned as
        `losses["point"]`; without (answers), from the locations predicted at the target's
        tokens, and `extras` hold each row's `word_points`."""
        is_seg = (inputs.token_ids == self.token_ids[SEG_TOKEN]) & inputs.valid
        rows, positions = is_seg.nonzero(as_tuple=True)
        locations = self.locate(inputs.states)  # (B, L, 6)
        losses: dict[str, torch.Tensor] = {}
        extras = None
        if inputs.targets:
            targets = inputs.targets
            wanted = torch.cat([targets["points"], targets["boxes"]], dim=-1)
            losses["point"] = location_l1(locations, wanted, targets["located"] & inputs.valid)
            points = targets["points"][rows, positions].float()
            boxes = targets["boxes"][rows, positions].float()
            if self.training and self.settings.jitter:
                points, boxes = self._jitter(points, boxes)
        else:
            points, boxes = self._predicted_prompts(inputs, locations, rows, positions)
            extras = self._word_points(inputs, locations)
        logits, iou = self._decode(inputs, rows, points, boxes)
        counts = is_seg.sum(dim=1).tolist()
        return MaskPrediction(
            logits=list(logits.split(counts)),
            scores=list(unit_scores(iou).split(counts)),
            extras=extras,
            losses=losses,
        )

    def _predicted_prompts(
        self,
        inputs: HeadInputs,
        locations: torch.Tensor,
        rows: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per target, the mean location over its name's tokens and its marker: (N, 2), (N, 4)."""
        points, boxes = [], []
        owners_by_row: dict[int, list[int]] = {}
        for row, position in zip(rows.tolist(), positions.tolist(), strict=True):
            if row not in owners_by_row:
                owners_by_row[row] = self.owners(
                    inputs.token_ids[row].tolist(), inputs.valid[row].tolist()
                )
            owners = torch.tensor(owners_by_row[row], device=locations.device)
            mine = owners == owners[position]
            mean = locations[row][mine].mean(dim=0)
            points.append(mean[:2])
            boxes.append(mean[2:])
        if not points:
            return locations.new_zeros((0, 2)), locations.new_zeros((0, 4))
        return torch.stack(points), _ordered(torch.stack(boxes))

    def _jitter(
        self, points: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sides = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)  # (N, 2) width, height
        scale = self.settings.jitter
        points = points + (torch.rand_like(points) * 2 - 1) * scale * sides
        edges = (torch.rand_like(boxes) * 2 - 1) * (scale / 2) * sides.repeat(1, 2)
        return points.clamp(0, 1), _ordered((boxes + edges).clamp(0, 1))

    def _decode(
        self,
        inputs: HeadInputs,
        rows: torch.Tensor,
        points: torch.Tensor,
        boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM masks (N, h, w) and IoU (N,) for normalised points (N, 2) and boxes (N, 4)."""
        embeddings = inputs.context[rows]
        if len(rows) == 0:
            return self.sam.decode(embeddings, embeddings.new_zeros((0, 3, self.sam.prompt_dim)))
        # Normalised image coordinates -> pixels of the resized image inside SAM's padded input
        # (SAM's prompt encoder adds half a pixel to address pixel centres).
        images = _images(inputs)
        scale = torch.tensor(
            [_resized_wh(images[row]) for row in rows.tolist()],
            device=points.device,
            dtype=torch.float32,
        )
        frame_points = points * scale - 0.5
        frame_boxes = boxes * scale.repeat(1, 2) - 0.5
        labels = torch.ones((len(rows), 1), dtype=torch.long, device=points.device)
        sparse = self.sam.prompt(frame_points[:, None], labels, frame_boxes)
        return self.sam.decode(embeddings, sparse)

    # -- answers ------------------------------------------------------------------------------
    def _word_points(self, inputs: HeadInputs, locations: torch.Tensor) -> list[dict[str, Any]]:
        """Per row, `word_points`: each token's text (end of sequence left out) and predicted
        point, (word, x, y) in pixels of the original image."""
        locations = locations.detach().cpu()
        tokenizer = self._tokenizer()
        skip = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        images = _images(inputs)
        extras = []
        for row in range(inputs.token_ids.shape[0]):
            height, width = images[row].original_size
            ids = inputs.token_ids[row].tolist()
            texts = token_texts(tokenizer, ids)
            words = [
                (text.strip(), round(float(x) * width, 1), round(float(y) * height, 1))
                for token, text, valid, (x, y) in zip(
                    ids,
                    texts,
                    inputs.valid[row].tolist(),
                    locations[row, :, :2].tolist(),
                    strict=True,
                )
                if valid and token not in skip and text.strip()
            ]
            extras.append({"word_points": words})
        return extras

    def _tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise RuntimeError("the PixelLLM head has no tokenizer bound (bind_tokenizer)")
        return self.tokenizer


def _ordered(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes (N, 4) with each axis's two ends sorted, so x0 <= x1 and y0 <= y1."""
    xs, ys = boxes[:, 0::2], boxes[:, 1::2]
    return torch.stack(
        [xs.min(1).values, ys.min(1).values, xs.max(1).values, ys.max(1).values], dim=1
    )


def _images(inputs: HeadInputs) -> Sequence[ImageInputs]:
    if inputs.images is None or len(inputs.images) != inputs.token_ids.shape[0]:
        raise ValueError("the PixelLLM head needs each row's image geometry (inputs.images)")
    return inputs.images


def _resized_wh(image: ImageInputs) -> tuple[float, float]:
    if image.head_resized_size is None:
        raise ValueError("the PixelLLM head needs the SAM-resized image size")
    height, width = image.head_resized_size
    return float(width), float(height)
