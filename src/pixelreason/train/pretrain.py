"""Encoder pretraining on ReasonWorld scenes: our stand-in for CLIP's and SAM's pretraining.

The papers start from a CLIP vision tower and a SAM trained on hundreds of millions of images;
trained from scratch jointly with the LLM, our two encoders learn to see slowly, because most
of each step's work (and gradient) goes to the language model. This stage trains the encoders
alone on generated scenes, which costs a fraction of a full step per image:

- the vision tower and projector, through the linear category probe on the projected image
  features the LLM will read (`VisionProbe`, the class share of each grid cell), as LLaVA's
  features come from a tower pretrained for recognition;
- SAM's image encoder and mask decoder (SAM heads), by segmenting each category present from a
  learned *concept prompt*: one sparse prompt token per category, decoded over the image's
  SAM embedding into the union of that category's pixels (BCE + DICE). This is the form in
  which LISA's `<SEG>` later prompts SAM (one vector from the LLM), so the decoder learns to
  follow a single prompt token before the LLM learns to write one.

With `fit="probe"` (`task: probe`), the wrapper fits the category probe alone, backbone and
mask-head parts, on the frozen features of a trained model: its cell loss (`probe`) and its
presence loss (`presence`), which trains what the presence check reads.

The same wrapper, with `colour=True`, fits the *colour probe* (`task: colour-probe`): a per-cell
classifier over "COLOUR CATEGORY" pairs (`Scene.colour_map`) on the image features of a trained
model whose every other weight stays frozen (and, with `colour_mask_head`, on SAM's image
embedding too), with the same two losses; the colour check reads it at inference
(`pixelreason.models.presence`).

`ScenePretraining` wraps a `PixelReasonModel` in the trainer's interface (`collate`, a
forward returning `LossOutput`, `save_pretrained` of the wrapped model), so a recipe with
`task: pretrain` trains, checkpoints and resumes like any other; the saved model is the
wrapped one (the concept prompts are dropped), ready for a later stage's `init`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelreason.data.schema import SegSample
from pixelreason.data.world import generate_scene
from pixelreason.errors import InputError
from pixelreason.models.heads.base import SamHead
from pixelreason.models.probe import VisionProbe
from pixelreason.models.segmenter import LossOutput, PixelReasonModel
from pixelreason.processing import ImageInputs
from pixelreason.train.losses import LossWeights, mask_bce, mask_dice, mask_iou


@dataclass
class SceneBatch:
    """Preprocessed scenes: backbone pixels (B, 3, S, S), SAM pixels (B, 3, P, P) or None,
    per-item geometry and (H, W) class maps."""

    backbone_pixels: torch.Tensor
    head_pixels: torch.Tensor | None
    images: list[ImageInputs]
    semantic: list[torch.Tensor]

    def to(self, device: torch.device | str) -> SceneBatch:
        return SceneBatch(
            backbone_pixels=self.backbone_pixels.to(device),
            head_pixels=None if self.head_pixels is None else self.head_pixels.to(device),
            images=self.images,
            semantic=[s.to(device) for s in self.semantic],
        )


class SceneStream:
    """index -> a fresh ReasonWorld scene with its class map (deterministic in the index): the
    category map, or with `colour` the colour-and-category map."""

    def __init__(self, seed: int = 0, image_size: int = 128, colour: bool = False) -> None:
        self.seed, self.image_size, self.colour = seed, image_size, colour

    def __call__(self, index: int) -> SegSample:
        rng = np.random.default_rng([self.seed, 23, index])
        scene = generate_scene(rng, size=self.image_size)
        semantic = scene.colour_map() if self.colour else scene.semantic_map()
        return SegSample(scene.image, [], semantic=semantic)


class ScenePretraining(nn.Module):
    """The encoders of `model` with the probe and (SAM heads) one concept prompt per class;
    with `colour`, the colour probe alone (no concept prompts)."""

    def __init__(
        self,
        model: PixelReasonModel,
        prompts_per_image: int = 3,
        colour: bool = False,
        probe_alone: bool = False,
    ) -> None:
        super().__init__()
        self.prompts_per_image = prompts_per_image
        #: A probe fitted alone (`task: probe`, `task: colour-probe`): its mask-head part, if it
        #: has one, reads SAM's embedding.
        self.probe_alone = probe_alone or colour
        probe = model.colour_probe if colour else model.probe
        if probe is None:
            raise InputError(
                "fitting the colour probe needs one: set colour_probe: true (ReasonWorld's "
                "colours) in the recipe's model section"
                if colour
                else "encoder pretraining needs the category probe: set probe_classes (e.g. 56 "
                "for ReasonWorld) in the recipe's model section"
            )
        self.model = model
        self.probe_name = "colour_probe" if colour else "probe"
        self.classes = probe.classes
        # SAM's encoder runs for the concept prompts and for probes with a mask-head part.
        needs_sam = not colour or probe.head is not None
        self.sam = model.head.sam if isinstance(model.head, SamHead) and needs_sam else None
        self.concepts = (
            nn.Embedding(self.classes, self.sam.prompt_dim)
            if self.sam is not None and not self.probe_alone
            else None
        )

    @property
    def probe(self) -> VisionProbe:
        """The probe being trained (a submodule of the model, not registered here again)."""
        return getattr(self.model, self.probe_name)

    def collate(self, samples: Sequence[SegSample]) -> SceneBatch:
        images, maps = [], []
        for index, sample in enumerate(samples):
            if sample.semantic is None:
                raise InputError(f"sample {index} has no class map to pretrain on")
            images.append(self.model.preprocessor.prepare_image(sample.image))
            maps.append(torch.from_numpy(sample.semantic.astype(np.int64)))
        head_pixels = None
        if images[0].head_pixels is not None:
            head_pixels = torch.stack([i.head_pixels for i in images])
        return SceneBatch(
            backbone_pixels=torch.stack([i.backbone_pixels for i in images]),
            head_pixels=head_pixels,
            images=images,
            semantic=maps,
        )

    def _encode(
        self, batch: SceneBatch, tower: bool = True, sam: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The LLM's image features and SAM's image embedding (None when not asked for)."""
        features = self.model.backbone.encode_image(batch.backbone_pixels) if tower else None
        embeddings = None
        if sam and self.sam is not None:
            embeddings = self.sam.encode_image(batch.head_pixels)
        return features, embeddings

    def concept_masks(
        self, embeddings: torch.Tensor, batch: SceneBatch, limit: int = 0
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per item: (logits (K, H, W) at image size, targets (K, H, W) bool) for the K
        categories present in its class map (at most `limit` drawn at random, if > 0), each
        prompted by its concept token."""
        present = []
        for semantic in batch.semantic:
            classes = torch.unique(semantic)
            classes = classes[(classes > 0) & (classes < self.classes)]
            if limit and len(classes) > limit:
                # A random few per image: the decoder's cost grows with the prompts.
                classes = classes[torch.randperm(len(classes))[:limit].to(classes.device)]
            present.append(classes)
        counts = [len(p) for p in present]
        items = torch.repeat_interleave(
            torch.arange(len(present), device=embeddings.device),
            torch.tensor(counts, device=embeddings.device),
        )
        # One decoder pass for every prompt of the batch, then back to each image's frame.
        logits, _ = self.sam.decode(embeddings[items], self.concepts(torch.cat(present))[:, None])
        out = []
        for item_logits, classes, semantic, image in zip(
            logits.split(counts), present, batch.semantic, batch.images, strict=True
        ):
            full = self.model.preprocessor.masks_to_image(item_logits, image)
            out.append((full, semantic[None] == classes[:, None, None]))
        return out

    def forward(self, batch: SceneBatch, weights: LossWeights | None = None) -> LossOutput:
        """probe * probe CE + mask * (bce * BCE + dice * DICE) over the concept masks."""
        weights = weights or LossWeights(probe=1.0)
        # A part whose loss weight is 0 is not run at all (pretrain one encoder alone).
        probing = weights.probe > 0 or weights.presence > 0
        features, embeddings = self._encode(
            batch, probing, weights.mask > 0 or (self.probe_alone and probing)
        )
        losses, loss = {}, batch.backbone_pixels.new_zeros(())
        # Only a probe fitted alone reads SAM's embedding: in pretraining, the probe's gradient
        # would reach SAM's encoder.
        context = embeddings if self.probe_alone else None
        head_size = self.model.config.sam_image_size or self.model.config.backbone_image_size
        if features is not None and weights.probe > 0:
            losses["probe"] = self.probe.loss(
                features, context, batch.semantic, batch.images, head_size
            )
            loss = loss + weights.probe * losses["probe"]
        if features is not None and weights.presence > 0:
            losses["presence"] = self.probe.presence_loss(features, context, batch.semantic)
            loss = loss + weights.presence * losses["presence"]
        bce = dice = batch.backbone_pixels.new_zeros(0)
        if embeddings is not None and weights.mask > 0:
            pairs = self.concept_masks(embeddings, batch, self.prompts_per_image)
            full = torch.cat([p[0] for p in pairs])
            truth = torch.cat([p[1] for p in pairs])
            valid = torch.ones_like(truth)
            bce, dice = mask_bce(full, truth, valid), mask_dice(full, truth, valid)
            if bce.numel():
                loss = loss + weights.mask * (weights.bce * bce.mean() + weights.dice * dice.mean())
        return LossOutput(
            loss=loss,
            text=0.0,
            bce=float(bce.detach().mean()) if bce.numel() else 0.0,
            dice=float(dice.detach().mean()) if dice.numel() else 0.0,
            num_masks=int(bce.numel()),
            head={k: float(v.detach()) for k, v in losses.items()},
        )

    @torch.no_grad()
    def measure(self, samples: Sequence[SegSample], batch_size: int = 16) -> dict[str, float]:
        """Validation: the probe's accuracy on cells an object covers most of (the dominant
        class of each cell whose largest object share is >= 0.5), the AUC of its class presence
        (`VisionProbe.presence`, over every image and class: shown or not) and the concept
        masks' mean IoU (0 without concept prompts)."""
        was_training = self.training
        self.eval()
        hits = cells = 0
        ious: list[float] = []
        found, shown = [], []
        for start in range(0, len(samples), batch_size):
            batch = self.collate(samples[start : start + batch_size])
            features, embeddings = self._encode(batch)
            logits, target = self.probe.cell_logits(features, batch.semantic)
            share, dominant = target[:, 1:].max(1)
            covered = share >= 0.5
            hits += int((logits.argmax(1) == dominant + 1)[covered].sum())
            cells += int(covered.sum())
            found.append(self.probe.presence(features, embeddings if self.probe_alone else None))
            shown.append(target[:, 1:].flatten(2).amax(2) > 0)
            if embeddings is not None and self.concepts is not None:
                for full, truth in self.concept_masks(embeddings, batch):
                    ious.extend(mask_iou(full, truth, torch.ones_like(truth)).tolist())
        self.train(was_training)
        return {
            "probe_acc": hits / max(cells, 1),
            "presence_auc": rank_auc(torch.cat(found), torch.cat(shown)),
            "concept_iou": float(np.mean(ious)) if ious else 0.0,
        }

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)


def rank_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of scores against boolean labels (any shapes, flattened): the
    chance that a positive outscores a negative, ties counted half; 0.5 without both kinds."""
    scores, labels = scores.flatten().double(), labels.flatten().bool()
    positives, negatives = scores[labels], scores[~labels]
    if not len(positives) or not len(negatives):
        return 0.5
    ordered = torch.sort(negatives).values
    below = torch.searchsorted(ordered, positives, right=False).double()
    ties = torch.searchsorted(ordered, positives, right=True).double() - below
    return float(((below + ties / 2).sum()) / (len(positives) * len(negatives)))


def pretraining_val(
    seed: int, count: int, image_size: int, colour: bool = False
) -> list[SegSample]:
    """`count` scenes for validating a pretraining run, apart from the training stream."""
    stream = SceneStream(seed + 1_000_003, image_size, colour)
    return [stream(index) for index in range(count)]
