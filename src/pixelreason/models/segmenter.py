"""The whole model: LLaVA-family backbone + mask head, with training loss, generation and I/O."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerBase,
    SamModel,
)

from pixelreason.config import ModelConfig
from pixelreason.data.schema import IGNORE_VALUE, SegSample
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.adapter import ADAPTER_DIR, KnowledgeAdapter
from pixelreason.models.backbone import (
    Backbone,
    BackboneOutput,
    Generation,
    PrefixStates,
    build_llava,
)
from pixelreason.models.category_map import CANDIDATE_CONFIDENCE, CategoryMap, category_regions
from pixelreason.models.category_map import FILE_NAME as CATEGORY_MAP_FILE
from pixelreason.models.heads import HeadInputs, MaskHead, MaskPrediction, build_head, head_class
from pixelreason.models.heads.base import SamHead
from pixelreason.models.instances import (
    INSIDE_LOGIT,
    OUTSIDE_LOGIT,
    duplicate_groups,
    instance_question,
    repeated_classes,
    split_duplicates,
    take_regions,
    target_classes,
)
from pixelreason.models.knowledge import (
    ABSENT_MARGIN,
    FACT_MARGIN,
    MARGIN,
    RANK_MARGIN,
    REFUSAL_MARGIN,
    RESTATED,
    Statements,
    asked_fact,
    asks_by_knowledge,
    fact_subject,
    restated_share,
    stated_class,
)
from pixelreason.models.mask_names import (
    cell_probabilities,
    colour_names,
    mask_class,
    mask_colours,
    names_nothing,
    read_masks,
)
from pixelreason.models.members import (
    FACT_SPAN,
    MIN_PRESENCE,
    first_slot_texts,
    likeliest_run,
    new_targets,
)
from pixelreason.models.objects import FILE_NAME as OBJECT_CUTS_FILE
from pixelreason.models.objects import ObjectCuts, foreign_pieces
from pixelreason.models.pixel_colours import FILE_NAME as PIXEL_COLOURS_FILE
from pixelreason.models.pixel_colours import PixelColours, colour_bins
from pixelreason.models.presence import (
    NOTHING_FOUND,
    Request,
    ban_list,
    class_presence,
    colour_slots,
    foreign_colour,
    mentioned_classes,
    named_classes,
    recolour,
    refusal,
    refusal_bans,
    requested_class,
    written_before,
)
from pixelreason.models.probe import VisionProbe
from pixelreason.models.relations import (
    Relation,
    choose,
    distinct,
    object_proposals,
    parse_relation,
    set_apart,
)
from pixelreason.models.sam import SamDecoder
from pixelreason.models.snap import image_regions, snap_logits
from pixelreason.processing import (
    BACKBONE_PROCESSOR_DIR,
    HEAD_PROCESSOR_DIR,
    IGNORE_INDEX,
    ImageInputs,
    Preprocessor,
    default_backbone_processor,
    default_sam_processor,
    load_image_processor,
)
from pixelreason.prompting import Turn
from pixelreason.tokenizer import bundled_tokenizer
from pixelreason.tokens import IMAGE_TOKEN, SEG_TOKEN, add_special_tokens, token_id
from pixelreason.train.losses import (
    LossWeights,
    combine,
    mask_bce,
    mask_dice,
    mask_iou,
    score_mse,
    target_overlap,
    text_loss,
)
from pixelreason.utils.files import atomic_directory

WEIGHTS_NAME = "model.safetensors"


@dataclass
class Batch:
    """A collated training batch.

    input_ids, labels, attention_mask: (B, T); backbone_pixels (B, 3, S, S); head_pixels
    (B, 3, P, P) or None; images: per-item geometry; masks: per item (n_i, H_i, W_i) uint8.
    targets: the head's per-token training targets (`MaskHead.token_targets`), (B, T, ...)
    each, zero-padded; locations: per item its location prompt (see `SegSample`) or None.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    backbone_pixels: torch.Tensor
    head_pixels: torch.Tensor | None
    images: list[ImageInputs]
    masks: list[torch.Tensor]
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    locations: list[torch.Tensor | None] = field(default_factory=list)
    #: Per item its (H, W) class map (`SegSample.semantic`), when every sample has one.
    semantic: list[torch.Tensor] | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            input_ids=self.input_ids.to(device),
            labels=self.labels.to(device),
            attention_mask=self.attention_mask.to(device),
            backbone_pixels=self.backbone_pixels.to(device),
            head_pixels=None if self.head_pixels is None else self.head_pixels.to(device),
            images=self.images,
            masks=[m.to(device) for m in self.masks],
            targets={k: v.to(device) for k, v in self.targets.items()},
            locations=[None if v is None else v.to(device) for v in self.locations],
            semantic=None if self.semantic is None else [s.to(device) for s in self.semantic],
        )


@dataclass
class LossOutput:
    """Total loss (scalar with graph) and its parts, detached, for logging."""

    loss: torch.Tensor
    text: float
    bce: float
    dice: float
    num_masks: int
    refine: float = 0.0
    #: The head's own loss terms (`MaskPrediction.losses`), e.g. PixelLLM's "point".
    head: dict[str, float] = field(default_factory=dict)


@dataclass
class ImageCache:
    """Everything computed from one image: reused by every question about it."""

    image: ImageInputs
    features: torch.Tensor  # (1, N, D) backbone image features
    context: Any  # the head's own encoding (SAM embedding for LISA)
    #: The LLM's states of the prompt's start that depends on the image alone, by its token
    #: ids (the knowledge adapter's LLM's by `KNOWING_KEY` and those ids), filled by the first
    #: question (`PixelReasonModel.answer_batch`).
    prefix_states: dict[tuple[Any, ...], PrefixStates] = field(default_factory=dict)
    #: The image's RGB pixels for region snap (`pixelreason.models.snap.thumbnail`: at most
    #: 512 a side); None: its answers are not snapped.
    pixels: np.ndarray | None = None
    #: The image's snap regions by Felzenszwalb scale, filled by the first question that asks.
    regions: dict[float, np.ndarray] = field(default_factory=dict)
    #: The image's object cuts ((h, w) bool at `pixels`' size, `pixelreason.models.objects`),
    #: filled by the first question that needs them.
    cuts: np.ndarray | None = None
    #: The image's category map ((h, w) int at `pixels`' size, 0 background, 1 + the index in
    #: the map's names: `pixelreason.models.category_map`), filled by the first question that
    #: needs it, with the map's (h, w) confidence in each pixel's class.
    classes: np.ndarray | None = None
    confidence: np.ndarray | None = None


def _side_file(directory: Path, name: str, needed: bool, command: str) -> Path | None:
    """A file a fit writes beside the weights (`pixelreason COMMAND`): its path, or None
    where there is none; CheckpointError where the config turns on what `needed` it."""
    path = directory / name
    if path.is_file():
        return path
    if needed:
        raise CheckpointError(
            f"{directory} needs {name}, which it lacks (write it with `pixelreason {command}`)"
        )
    return None


def _resized(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A (h, w) array at (H, W) `shape`, by nearest neighbour (itself where they agree)."""
    height, width = int(shape[0]), int(shape[1])
    if array.shape == (height, width):
        return array
    rows = np.minimum((np.arange(height) * array.shape[0]) // height, array.shape[0] - 1)
    cols = np.minimum((np.arange(width) * array.shape[1]) // width, array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


#: `Answer.extras` keys of the inference checks, in the order they run.
CHECK_KEYS = (
    "request_check",
    "knowledge_check",
    "presence_check",
    "knowledge_ranking",
    "colour_check",
)
#: `answer_batch`'s settings of the inference checks, passed on to the questions they ask.
CHECK_SETTINGS = ("presence_threshold", "colour_threshold", "request_threshold", "knowledge_start")
#: The answer the instance question is given: one of the semantic-segmentation answers the model
#: was trained on (`pixelreason.data.templates.SEGMENT_ANSWERS`).
INSTANCE_ANSWER = "It is <SEG>."
#: Least presence (the probe's) of a class a relation presupposes ("the teapot above the
#: pencil": a teapot) for the model to be asked where its instances are without the request
#: check, which would answer in words that there are none where the probe reads it below the
#: presence threshold. Of the classes 150 val scenes show, 0.5% read below 0.02 (3.4% below
#: the threshold, 0.1); of those they do not show, 41% read 0.02 or more.
PRESUPPOSED_PRESENCE = 0.02
#: Least reading of a class in the probe part that reads it most (`VisionProbe.strongest`)
#: for an answer to ground it rather than say that the image does not show it, where the
#: presence check or the knowledge check's absence part would: the presence (the parts' mean)
#: of small objects is often under the threshold while one part reads them. Chosen on the
#: development stream, val and zero-shot: of 63 such refusals, 8 of a class that is there
#: read 0.06 or more, and 1 of a query whose answer is that nothing is there.
RESCUE_PRESENCE = 0.06
#: Settings that turn off the checks which may rewrite an answer (for a given answer).
UNCHECKED = {"presence_threshold": 0.0, "colour_threshold": 0.0, "request_threshold": 0.0}


@dataclass(frozen=True)
class Edit:
    """One token an inference check puts in an answer (`PixelReasonModel._rewrite`): `row`'s
    answer gets `token` at `position` (None: the token there is deleted); `extras[check]`
    records why."""

    row: int
    position: int
    token: int | None
    check: str
    extras: dict[str, Any]


#: First part of the key under which an image's cache keeps the knowledge adapter's states of
#: the image's part of the prompt, beside the LLM's own (`ImageCache.prefix_states`).
KNOWING_KEY = "knowledge adapter"
#: IoU at which two final masks of one answer, named in the same words, are one target
#: (`PixelReasonModel._drop_repeats`). At 0.5, the instance split's repeats, one development
#: answer lost a potted plant whose mask half covered another.
REPEAT_OVERLAP = 0.9
#: Least share (of all the classes' reading, background aside) that the category probe reads
#: of a target's named class inside its final mask for the target to stay, in an answer of at
#: least `UNSEEN_MIN_TARGETS` targets (`PixelReasonModel._drop_unseen`).
UNSEEN_SHARE = 0.05
#: Fewest targets of an answer that may lose unseen ones; it keeps at least this many less one.
UNSEEN_MIN_TARGETS = 3
#: A target as an answer names it: "the red apple <SEG>".
_TARGET_PHRASE = re.compile(r"\bthe [^<]*?" + re.escape(SEG_TOKEN), re.I)


@dataclass(frozen=True)
class PromptBatch:
    """A batch's prompts as the LLM reads them (`PixelReasonModel.answer_batch`): embeddings
    (B, T, D) and attention mask (B, T), left-padded after the image's part of the prompt,
    and per row the LLM's key and value states of the first `shared` positions (`past`, laid
    out as the batch is, padding included; None, with `shared` 0: every prompt is read
    whole). Before the answer is decoded they cover the image's part; after it, every
    position but the last. The checks' passes start from them."""

    embeds: torch.Tensor
    attention: torch.Tensor
    past: list[PrefixStates] | None = None
    shared: int = 0

    def unread(self, row: int) -> torch.Tensor:
        """The row's real positions (P, D) after those its prefix states cover."""
        return self.embeds[row, self.shared :][self.attention[row, self.shared :].bool()]

    def prefix(self, row: int) -> PrefixStates | None:
        """The row's prefix states at its real positions alone (None where every prompt is
        read whole), for a pass after them without a mask."""
        if self.past is None:
            return None
        real = self.attention[row, : self.shared].bool()
        if bool(real.all()):
            return self.past[row]
        index = real.nonzero()[:, 0].to(self.past[row][0][0].device)
        return tuple((keys[:, :, index], values[:, :, index]) for keys, values in self.past[row])

    def states(self, rows: Sequence[int]) -> list[PrefixStates] | None:
        """The prefix states of `rows` as the batch lays them out, for `generate_batch`."""
        return None if self.past is None else [self.past[row] for row in rows]


@dataclass
class Answer:
    """A generated answer: text, ids, and per-target mask logits (n, H, W) with scores (n,).

    `text` shows each target as `<SEG>`; when the model wrote something else there (SAM4MLLM's
    prompts), `extras["raw_text"]` is what it wrote. Heads may add more to `extras`.
    """

    text: str
    token_ids: torch.Tensor
    mask_logits: torch.Tensor
    scores: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class PixelReasonModel(nn.Module):
    """Backbone + mask head + the preprocessor that feeds them."""

    #: The most bytes of LLM states an `ImageCache` keeps for its image's part of the prompt
    #: (`answer_batch`): about 0.3 MB for the bundled default, but some 300 MB for a 7B LLaVA
    #: (576 image tokens), where a server holding many conversations may want 0 (keep none).
    kept_states_bytes: int = 64 * 2**20
    #: Reuse work between decodings (`answer_batch`): read each image's part of the prompt
    #: once (`ImageCache.prefix_states`), keep the LLM's states of the rest of each prompt
    #: from the answer's decoding for the checks' passes and decodings (`PromptBatch`), and
    #: start the checks' second decodings from the answer's words before its first banned one
    #: (`written_before`; with sampling, the first sample's words). False reads every prompt
    #: whole and decodes again from the start: the same greedy answers, for comparisons.
    reuse_states: bool = True

    def __init__(
        self,
        config: ModelConfig,
        backbone: Backbone,
        head: MaskHead,
        preprocessor: Preprocessor,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.head = head
        self.preprocessor = preprocessor
        head.bind_tokenizer(preprocessor.tokenizer)
        self.probe = None
        if config.probe_labels and len(config.probe_labels) != config.probe_classes - 1:
            raise CheckpointError(
                f"probe_labels names {len(config.probe_labels)} classes; the probe has "
                f"{max(config.probe_classes - 1, 0)} besides the background"
            )
        if config.probe_classes:
            self.probe = VisionProbe(
                config.probe_classes,
                backbone.hidden_size,
                head.sam.prompt_dim
                if isinstance(head, SamHead) and config.probe_mask_head
                else None,
            )
        if config.presence_mask_head and (self.probe is None or self.probe.head is None):
            raise CheckpointError(
                "presence_mask_head needs a category probe on the mask head's image embedding "
                "(probe_classes > 0, probe_mask_head and a SAM head)"
            )
        #: The pixel colour reader (`colour_pixels`), loaded beside the weights.
        self.pixel_colours: PixelColours | None = None
        #: The object-cut network (`object_cuts`), loaded beside the weights; kept in a list,
        #: so that it is not a submodule and not in the weights.
        self._cut_net: list[ObjectCuts] = []
        #: The category map (`category_map`), loaded beside the weights (in a list, likewise).
        self._category_net: list[CategoryMap] = []
        #: The knowledge adapter (`pixelreason.models.adapter`), loaded beside the weights, and
        #: the language model with it merged in (in a list: not a submodule, not in the weights).
        self.knowledge_adapter: KnowledgeAdapter | None = None
        self._knowledge_llm: list[nn.Module] = []
        self.colour_probe = None
        if config.colour_mask_head and not (
            config.colour_probe_labels and isinstance(head, SamHead)
        ):
            raise CheckpointError(
                "colour_mask_head needs a colour probe (colour_probe_labels) and a SAM head"
            )
        if config.colour_probe_labels:
            self.colour_probe = VisionProbe(
                len(config.colour_probe_labels) + 1,
                backbone.hidden_size,
                head.sam.prompt_dim if config.colour_mask_head else None,
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, config: ModelConfig, tokenizer: PreTrainedTokenizerBase | None = None
    ) -> PixelReasonModel:
        """Randomly initialised model (training from scratch, tests). Presets use the bundled
        tokenizer; the head's tokens are added and the vocabulary sized to fit."""
        tokenizer = tokenizer if tokenizer is not None else bundled_tokenizer()
        add_special_tokens(
            tokenizer,
            [IMAGE_TOKEN, *head_class(config.head).special_tokens_for(config.head_args)],
        )
        llava = dict(config.llava)
        llava["text_config"] = {**llava["text_config"], "vocab_size": len(tokenizer)}
        llava["image_token_id"] = token_id(tokenizer, IMAGE_TOKEN)
        config.llava = LlavaConfig.from_dict(llava).to_dict()
        backbone = _build_backbone(config)
        head = build_head(config.head, backbone, config.sam, config.head_args)
        preprocessor = _make_preprocessor(
            config,
            tokenizer,
            backbone,
            head,
            default_backbone_processor(config.backbone_image_size),
            default_sam_processor(config.sam_image_size) if head.uses_head_image else None,
        )
        return cls(config, backbone, head, preprocessor)

    @classmethod
    def from_components(
        cls,
        llava: str | Path,
        sam: str | Path | None,
        *,
        head: str = "lisa",
        head_args: dict[str, Any] | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> PixelReasonModel:
        """Build from public checkpoints: a LLaVA-family model (e.g. `llava-hf/llava-1.5-7b-hf`)
        and a SAM (e.g. `facebook/sam-vit-huge`), by hub name or local directory. The head's
        tokens are added to the LLaVA tokenizer and the embeddings resized; the head's own
        layers start from random initialisation."""
        try:
            language = LlavaForConditionalGeneration.from_pretrained(llava, dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(llava)
            backbone_processor = load_image_processor(llava)
            sam_model = SamModel.from_pretrained(sam, dtype=torch_dtype) if sam else None
            sam_processor = load_image_processor(sam) if sam else None
        except OSError as exc:
            raise CheckpointError(f"cannot load pretrained components: {exc}") from exc
        head_tokens = head_class(head).special_tokens_for(head_args or {})
        if add_special_tokens(tokenizer, list(head_tokens)):
            language.resize_token_embeddings(len(tokenizer))
        backbone = Backbone(language)
        vision = language.config.vision_config
        config = ModelConfig(
            llava=language.config.to_dict(),
            sam=None if sam_model is None else sam_model.config.to_dict(),
            head=head,
            head_args=head_args or {},
            backbone_image_size=int(vision.image_size),
            sam_image_size=int(sam_model.config.vision_config.image_size) if sam_model else 0,
            preset=None,
        )
        mask_head = build_head(
            head,
            backbone,
            config.sam,
            config.head_args,
            sam=None if sam_model is None else SamDecoder(sam_model),
        )
        preprocessor = _make_preprocessor(
            config, tokenizer, backbone, mask_head, backbone_processor, sam_processor
        )
        return cls(config, backbone, mask_head, preprocessor)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu"
    ) -> PixelReasonModel:
        """Load a directory written by `save_pretrained`, refusing weights that do not match."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"model directory not found: {directory}")
        config = ModelConfig.load(directory)
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            backbone_processor = load_image_processor(directory / BACKBONE_PROCESSOR_DIR)
            head_dir = directory / HEAD_PROCESSOR_DIR
            head_processor = load_image_processor(head_dir) if head_dir.is_dir() else None
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot load tokenizer/processors from {directory}: {exc}"
            ) from exc
        try:
            backbone = _build_backbone(config)
            head = build_head(config.head, backbone, config.sam, config.head_args)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"invalid model config in {directory}: {exc}") from exc
        if head.uses_head_image and head_processor is None:
            raise CheckpointError(
                f"{directory} lacks {HEAD_PROCESSOR_DIR}/ for the {config.head} head"
            )
        model = cls(
            config,
            backbone,
            head,
            _make_preprocessor(
                config, tokenizer, backbone, head, backbone_processor, head_processor
            ),
        )
        model._load_weights(directory / WEIGHTS_NAME)
        colours = _side_file(directory, PIXEL_COLOURS_FILE, config.colour_pixels, "fit-colours")
        if colours is not None:
            model.set_pixel_colours(PixelColours.load(colours))
        cuts = _side_file(directory, OBJECT_CUTS_FILE, config.object_cuts, "fit-object-cuts")
        if cuts is not None:
            model.set_object_cuts(ObjectCuts.load(cuts))
        categories = _side_file(
            directory, CATEGORY_MAP_FILE, config.category_map, "fit-category-map"
        )
        if categories is not None:
            model.set_category_map(CategoryMap.load(categories))
        if (directory / ADAPTER_DIR).is_dir():
            model.set_knowledge_adapter(KnowledgeAdapter.load(directory / ADAPTER_DIR))
        return model.to(device).eval()

    def set_object_cuts(self, net: ObjectCuts | None) -> None:
        """Give the model an object-cut network (None: none), run on the CPU in eval mode;
        `save_pretrained` writes it beside the weights."""
        self._cut_net = [] if net is None else [net.cpu().eval()]

    @property
    def cut_net(self) -> ObjectCuts | None:
        """The object-cut network (`set_object_cuts`), or None."""
        return self._cut_net[0] if self._cut_net else None

    def set_category_map(self, net: CategoryMap | None) -> None:
        """Give the model a category map (None: none), run on the CPU in eval mode;
        `save_pretrained` writes it beside the weights."""
        self._category_net = [] if net is None else [net.cpu().eval()]

    @property
    def category_net(self) -> CategoryMap | None:
        """The category map (`set_category_map`), or None."""
        return self._category_net[0] if self._category_net else None

    def set_pixel_colours(self, reader: PixelColours | None) -> None:
        """Give the model a pixel colour reader (None: none), refusing one whose labels are
        not the colour probe's; `save_pretrained` writes it beside the weights."""
        if reader is not None and reader.labels != list(self.config.colour_probe_labels):
            raise CheckpointError(
                f"pixel colours read {len(reader.labels)} labels, not the model's "
                f"{len(self.config.colour_probe_labels)} colour probe labels"
            )
        self.pixel_colours = reader

    def set_knowledge_adapter(self, adapter: KnowledgeAdapter | None) -> None:
        """Give the model a knowledge adapter (None: none), merged into a copy of its language
        model now (CheckpointError where it does not fit); `save_pretrained` writes it beside
        the weights. Set it before the LLM is made int8 (`quantize_language_model`)."""
        language = self.backbone.model.model.language_model
        self._knowledge_llm = [] if adapter is None else [adapter.merged(language)]
        self.knowledge_adapter = adapter

    @property
    def knowledge_language_model(self) -> nn.Module | None:
        """The language model with the knowledge adapter merged in, where the model has one."""
        return self._knowledge_llm[0] if self._knowledge_llm else None

    def _reads_adapter(self) -> bool:
        return self.config.knowledge_adapter and bool(self._knowledge_llm)

    @contextlib.contextmanager
    def _knowing(self) -> Iterator[None]:
        """Within the block, the LLM is the one with the knowledge adapter merged in (where the
        model has one and `ModelConfig.knowledge_adapter` is on); the same LLM after it."""
        if not self._reads_adapter():
            yield
            return
        language = self.backbone.model.model
        own, adapted = language.language_model, self._knowledge_llm[0]
        embeddings = adapted.get_input_embeddings().weight
        if embeddings.device != own.get_input_embeddings().weight.device:
            adapted.to(own.get_input_embeddings().weight.device)
        language.language_model = adapted
        try:
            yield
        finally:
            language.language_model = own

    def _load_weights(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"missing weights file {path}")
        expected = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        try:
            with safe_open(path, framework="pt") as handle:
                found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"corrupt weights file {path}: {exc}") from exc
        wrong = [
            f"{k} {found[k]} != {expected[k]}"
            for k in found
            if k in expected and found[k] != expected[k]
        ]
        unexpected = sorted(set(found) - set(expected))
        if wrong or unexpected:
            details = (wrong + [f"unexpected {k}" for k in unexpected])[:3]
            raise CheckpointError(
                f"weights in {path} do not match the model config: {'; '.join(details)}"
            )
        missing, _ = load_model(self, path, strict=False)
        # Tied tensors are stored once; anything else missing means a broken checkpoint.
        missing = [k for k in missing if k not in _tied_keys(self)]
        if missing:
            raise CheckpointError(
                f"weights in {path} lack {len(missing)} tensors, e.g. {', '.join(missing[:3])}"
            )

    def warm_start(
        self, source: PixelReasonModel, skip: Sequence[str] = (), only: Sequence[str] = ()
    ) -> dict[str, int]:
        """Copy every weight `source` shares with this model, e.g. a trained LISA model's
        backbone and SAM into a fresh SAM4MLLM or PixelLLM model (the papers start from
        pretrained LLaVA and SAM). Tensors match by name and shape; token embeddings and the
        vocabulary head are copied row by row for the tokens both tokenizers share, so
        head-specific tokens keep their fresh initialisation. Tensors whose names start with
        one of `skip` (e.g. "backbone.model.model.vision_tower") stay fresh too; a non-empty
        `only` copies just the tensors under those prefixes and leaves the rest as they are.
        Returns what was copied ("fresh" counts the tensors considered and not copied)."""
        own_vocab = self.preprocessor.tokenizer.get_vocab()
        their_vocab = source.preprocessor.tokenizer.get_vocab()
        shared = [(i, their_vocab[t]) for t, i in own_vocab.items() if t in their_vocab]
        rows_to = torch.tensor([i for i, _ in shared], dtype=torch.long)
        rows_from = torch.tensor([j for _, j in shared], dtype=torch.long)
        language = self.backbone.model
        # The token embeddings and the vocabulary head, recognised by storage (state_dict
        # tensors share it with the parameters), not by a shape that could coincide.
        vocab_storage = {
            language.get_input_embeddings().weight.data_ptr(),
            language.get_output_embeddings().weight.data_ptr(),
        }
        theirs = source.state_dict()
        counts = {"copied": 0, "vocab_rows": len(shared), "fresh": 0}
        with torch.no_grad():
            for name, tensor in self.state_dict().items():
                if only and not name.startswith(tuple(only)):
                    continue
                other = None if name.startswith(tuple(skip)) else theirs.get(name)
                if other is None or other.shape[1:] != tensor.shape[1:]:
                    counts["fresh"] += 1
                elif tensor.data_ptr() in vocab_storage:
                    tensor[rows_to] = other[rows_from].to(tensor.dtype)
                    counts["copied"] += 1
                elif other.shape == tensor.shape:
                    tensor.copy_(other)
                    counts["copied"] += 1
                else:
                    counts["fresh"] += 1
        return counts

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config, tokenizer, processors and safetensors weights, atomically. A model
        with int8 layers (`pixelreason.models.quantize`) is refused: they hold packed weights
        that no float32 model can load."""
        if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in self.modules()):
            raise CheckpointError("an int8 model cannot be saved: save the float32 model")
        with atomic_directory(directory) as staging:
            self.config.save(staging)
            self.preprocessor.save_pretrained(staging)
            save_model(self, str(staging / WEIGHTS_NAME))
            if self.pixel_colours is not None:
                self.pixel_colours.save(staging)
            if self._cut_net:
                self._cut_net[0].save(staging)
            if self._category_net:
                self._category_net[0].save(staging)
            if self.knowledge_adapter is not None:
                self.knowledge_adapter.save(staging / ADAPTER_DIR)

    # -- training -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def collate(self, samples: Sequence[SegSample]) -> Batch:
        """Tokenize and preprocess samples into a right-padded batch, checking mask counts."""
        encoded, images, masks, targets, locations = [], [], [], [], []
        for index, sample in enumerate(samples):
            if sample.location is not None and not self.head.prompt_tokens:
                raise InputError(
                    f"sample {index} has a location prompt, which the {self.config.head} "
                    "head cannot read"
                )
            locations.append(
                None
                if sample.location is None
                else torch.as_tensor(np.asarray(sample.location, dtype=np.float32))
            )
            image = self.preprocessor.prepare_image(sample.image)
            for mask in sample.masks:
                if mask.shape != image.original_size:
                    raise InputError(
                        f"sample {index}: mask shape {mask.shape} != image {image.original_size}"
                    )
            sample = self.head.prepare_sample(sample, image)
            text = self.preprocessor.encode(sample.turns, image=True)
            expected = int(self.head.count_targets(text.labels.clamp(min=0)[None])[0])
            if expected != len(sample.masks):
                raise InputError(
                    f"sample {index}: the answers name {expected} targets but "
                    f"{len(sample.masks)} masks are given"
                )
            encoded.append(text)
            images.append(image)
            stacked = (
                np.stack(sample.masks)
                if sample.masks
                else np.zeros((0, *image.original_size), dtype=np.uint8)
            )
            masks.append(torch.from_numpy(stacked.astype(np.uint8)))
            targets.append(self.head.token_targets(text.labels, sample.masks))
        length = max(len(e.input_ids) for e in encoded)
        pad = self.preprocessor.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, item in enumerate(encoded):
            size = len(item.input_ids)
            input_ids[row, :size] = item.input_ids
            labels[row, :size] = item.labels
            attention[row, :size] = 1
        head_pixels = None
        if images[0].head_pixels is not None:
            head_pixels = torch.stack([i.head_pixels for i in images])
        return Batch(
            input_ids=input_ids,
            labels=labels,
            attention_mask=attention,
            backbone_pixels=torch.stack([i.backbone_pixels for i in images]),
            head_pixels=head_pixels,
            images=images,
            masks=masks,
            targets={key: _pad_rows([t[key] for t in targets], length) for key in targets[0]},
            locations=locations,
            semantic=(
                [torch.from_numpy(s.semantic.astype(np.int64)) for s in samples]
                if all(s.semantic is not None for s in samples)
                else None
            ),
        )

    def teacher_forced(self, batch: Batch) -> tuple[BackboneOutput, MaskPrediction]:
        """One pass over given conversations: LM outputs and the head's masks for the
        targets the answers name (in the head's input frame)."""
        out, prediction, _ = self._teacher_forced(batch, with_probe=False)
        return out, prediction

    def _teacher_forced(
        self, batch: Batch, *, with_probe: bool
    ) -> tuple[BackboneOutput, MaskPrediction, torch.Tensor | None]:
        """`teacher_forced`, plus the vision-probe loss when asked for, the model has probes
        and the batch class maps (else None)."""
        features, layers = self.backbone.encode_image_layers(
            batch.backbone_pixels, self.head.vision_layers
        )
        embeds = self.backbone.embed(batch.input_ids, features)
        embeds = self.head.embed_prompt(
            batch.input_ids, embeds, features, batch.locations or [None] * len(batch.images)
        )
        # Batches are right-padded, so causal attention alone never lets a real token see padding.
        out = self.backbone(embeds, None)
        context = self.head.encode_image(batch.head_pixels, features, layers)
        # states[:, t] predicted token t + 1; only answer tokens (labels) may trigger masks.
        prediction = self.head(
            HeadInputs(
                token_ids=batch.labels[:, 1:].clamp(min=0),
                states=out.hidden[:, :-1],
                valid=batch.labels[:, 1:] != IGNORE_INDEX,
                context=context,
                targets={key: value[:, 1:] for key, value in batch.targets.items()},
                images=batch.images,
            )
        )
        probe = None
        if with_probe and self.probe is not None and batch.semantic is not None:
            head_size = self.config.sam_image_size or self.config.backbone_image_size
            probe = self.probe.loss(features, context, batch.semantic, batch.images, head_size)
        return out, prediction, probe

    def forward(self, batch: Batch, weights: LossWeights | None = None) -> LossOutput:
        """Teacher-forced loss on a batch: text CE on answers + BCE/DICE per target mask, plus
        the head's own terms (`MaskPrediction.losses`)."""
        weights = weights or LossWeights()
        out, prediction, probe = self._teacher_forced(batch, with_probe=weights.probe > 0)
        losses = dict(prediction.losses)
        if probe is not None:
            losses["probe"] = probe
        bces, dices, overlaps, misses = [], [], [], []
        train_scores = weights.score > 0 and self.head.learned_scores
        # Items whose images share a geometry are mapped to image size and scored together:
        # a few large kernels instead of a handful per item (per-item loops bound GPU steps).
        for members in _same_geometry(prediction.logits, batch.images):
            logits = torch.cat([prediction.logits[i] for i in members])
            target = torch.cat([batch.masks[i] for i in members])
            full = self.preprocessor.masks_to_image(logits, batch.images[members[0]])
            valid, truth = target != IGNORE_VALUE, target == 1
            bces.append(mask_bce(full, truth, valid))
            dices.append(mask_dice(full, truth, valid))
            if train_scores:
                scores = torch.cat([prediction.scores[i] for i in members])
                misses.append(score_mse(scores, mask_iou(full, truth, valid)))
            if weights.refine:
                counts = [prediction.logits[i].shape[0] for i in members]
                for item, item_valid in zip(full.split(counts), valid.split(counts), strict=True):
                    if item.shape[0] > 1:
                        overlaps.append(target_overlap(item, item_valid.all(0)))
        if misses:
            losses["score"] = torch.cat(misses).mean()
        bce = torch.cat(bces) if bces else out.logits.new_zeros(0)
        dice = torch.cat(dices) if dices else out.logits.new_zeros(0)
        refine = torch.stack(overlaps) if overlaps else out.logits.new_zeros(0)
        text = text_loss(out.logits, batch.labels)
        return LossOutput(
            loss=combine(text, bce, dice, weights, refine, losses),
            text=float(text.detach()),
            bce=float(bce.detach().mean()) if bce.numel() else 0.0,
            dice=float(dice.detach().mean()) if dice.numel() else 0.0,
            num_masks=int(bce.numel()),
            refine=float(refine.detach().mean()) if refine.numel() else 0.0,
            head={k: float(v.detach()) for k, v in losses.items()},
        )

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, image: ImageInputs, pixels: np.ndarray | None = None) -> ImageCache:
        """Run both vision encoders once; the cache answers any number of questions.
        `pixels`: the image as (h, w, 3) uint8 RGB (`snap.thumbnail`), kept for region snap."""
        device = self.device
        features, layers = self.backbone.encode_image_layers(
            image.backbone_pixels[None].to(device), self.head.vision_layers
        )
        head_pixels = None if image.head_pixels is None else image.head_pixels[None].to(device)
        context = self.head.encode_image(head_pixels, features, layers)
        return ImageCache(image, features, context, pixels=pixels)

    @torch.no_grad()
    def answer(
        self,
        cache: ImageCache,
        turns: Sequence[Turn],
        *,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        location: torch.Tensor | np.ndarray | None = None,
    ) -> Answer:
        """Generate the answer to the last turn and one mask per target it names.

        `location`: a location prompt for heads that read one (see `SegSample.location`).
        """
        return self.answer_batch(
            [cache],
            [turns],
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            locations=[location],
        )[0]

    @torch.no_grad()
    def answer_batch(
        self,
        caches: Sequence[ImageCache],
        turns_list: Sequence[Sequence[Turn]],
        *,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        locations: Sequence[torch.Tensor | np.ndarray | None] | None = None,
        presence_threshold: float | None = None,
        colour_threshold: float | None = None,
        request_threshold: float | None = None,
        knowledge_start: str | None = None,
        instance_question: str | None = None,
        snap_scale: float | None = None,
        mask_names: bool | None = None,
        relations: bool | None = None,
        starts: Sequence[str] | None = None,
    ) -> list[Answer]:
        """Answer B conversations, each about its own cached image, with one `generate` call.

        Prompts are left-padded to a common length (see `Backbone.generate_batch`), so greedy
        answers equal those of `answer` one at a time; the head then runs per row on that
        row's image context. `presence_threshold` (default: the config's) turns on the
        presence check (`pixelreason.models.presence`) for models with probe labels: answers
        that ground a class the image does not show are decoded again without its names;
        `colour_threshold` (default: the config's) the colour check for models with a colour
        probe: a grounded colour the image does not show on that category is chosen again;
        `request_threshold` (default: the config's) the request check, before both: a request
        for one class by name is answered in words where the probe does not find it, and is
        not refused where the probes find it; `knowledge_start` (default: the config's; ""
        off) the knowledge check (`pixelreason.models.knowledge`), after the request check: an
        answer grounding another class than the LLM's own statement about the query is decoded
        again for the stated class; `instance_question` (default: the config's; "" off), last:
        an answer grounding one class with several targets asks the model this question about
        the class, and its targets take the regions of that mask; `snap_scale` (default: the
        config's; 0 off) region snap (`pixelreason.models.snap`), on the final masks of images
        cached with their pixels; `mask_names` (default: the config's) then names each target
        the answer names by no class, and each target's colour, as the probes read them inside
        the target's mask (`pixelreason.models.mask_names`). `relations` (default: the
        config's; needs the instance question on) answers a question about a relation ("the
        cup left of the plant", "the biggest fruit") by asking the model where the candidates
        and the reference are and choosing by geometry (`pixelreason.models.relations`), before
        region snap. `starts`: per conversation,
        words its answer starts with, written for the model (teacher-forced) before it goes on.
        """
        if len(caches) != len(turns_list):
            raise ValueError(f"{len(caches)} images for {len(turns_list)} conversations")
        if not caches:
            return []
        locations = list(locations) if locations is not None else [None] * len(caches)
        if len(locations) != len(caches):
            raise ValueError(f"{len(locations)} locations for {len(caches)} conversations")
        if any(v is not None for v in locations) and not self.head.prompt_tokens:
            raise InputError(f"the {self.config.head} head cannot read a location prompt")
        locations = [
            None if v is None else torch.as_tensor(v, dtype=torch.float32, device=self.device)
            for v in locations
        ]
        question = self.config.instance_question if instance_question is None else instance_question
        if (
            (self.config.relations if relations is None else relations)
            and self._asks_instances(question)
            and starts is None
            and all(v is None for v in locations)
            and self.probe is not None
        ):
            options = {
                "max_new_tokens": max_new_tokens,
                "do_sample": do_sample,
                "temperature": temperature,
                "presence_threshold": presence_threshold,
                "colour_threshold": colour_threshold,
                "request_threshold": request_threshold,
                "knowledge_start": knowledge_start,
                "instance_question": instance_question,
            }
            return self._with_relations(caches, turns_list, options, snap_scale, mask_names)
        prompts = [self.preprocessor.encode(turns, image=True).input_ids for turns in turns_list]
        tokenizer = self.preprocessor.tokenizer
        shared = self._image_prefix(prompts) if self.reuse_states else 0
        input_ids, attention = _pad_prompts(prompts, tokenizer.pad_token_id, shared)
        features = torch.cat([cache.features for cache in caches])
        input_ids = input_ids.to(self.device)
        embeds = self.backbone.embed(input_ids, features)
        embeds = self.head.embed_prompt(input_ids, embeds, features, locations)
        key = tuple(prompts[0][:shared].tolist())
        past = self._prefix_states(caches, key, embeds[:, :shared]) if shared else None
        batch = PromptBatch(embeds, attention, past, shared if past is not None else 0)
        options = {
            "max_new_tokens": max_new_tokens or self.config.max_new_tokens,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "do_sample": do_sample,
            "temperature": temperature,
        }

        def generate(rows: Sequence[int], **more: Any) -> list[Generation]:
            """Decode the batch's `rows` (with `banned` or `prefix` as `generate_batch`)."""
            index = torch.tensor(list(rows), device=embeds.device)
            return self.backbone.generate_batch(
                embeds[index],
                attention[index.to(attention.device)],
                past=batch.states(rows),
                **{**options, **more},
            )

        if starts is not None and len(starts) != len(caches):
            raise ValueError(f"{len(starts)} answer starts for {len(caches)} conversations")
        forced = [tokenizer.encode(start, add_special_tokens=False) for start in starts or []]
        # only the checks read them, and they need a probe (a public LLaVA has none, and its
        # prompt states would be large)
        probes = self.probe is not None or self.colour_probe is not None
        keep = self.reuse_states and not forced and probes
        generations = generate(
            range(len(caches)), **({"prefix": forced} if forced else {"keep_prompt_states": keep})
        )
        if keep:  # the checks' passes read each prompt's last position alone
            states = [generation.prompt_states for generation in generations]
            batch = PromptBatch(embeds, attention, states, embeds.shape[1] - 1)
        answers = [
            self._masks_for(cache, generation)
            for cache, generation in zip(caches, generations, strict=True)
        ]

        def chosen(given: float | None, setting: float) -> float:
            return setting if given is None else given

        presence = chosen(presence_threshold, self.config.presence_threshold)
        colour = chosen(colour_threshold, self.config.colour_threshold)
        request = chosen(request_threshold, self.config.request_threshold)
        colour = colour if self.colour_probe is not None else 0.0
        knowledge = self.config.knowledge_start if knowledge_start is None else knowledge_start

        # Which probes' presence also reads their mask-head part, on SAM's image embedding.
        reads_head = {
            "probe": self.config.presence_mask_head,
            "colour_probe": self.config.colour_mask_head,
        }

        def context(name: str) -> torch.Tensor | None:
            return torch.cat([cache.context for cache in caches]) if reads_head[name] else None

        @functools.cache
        def probed(name: str) -> list[list[float]]:  # per row, each class's presence, once
            return class_presence(getattr(self, name), features, context(name)).tolist()

        @functools.cache
        def strongest() -> list[list[float]]:  # per row, each class in its surest probe part
            return self.probe.strongest(features, context("probe")).tolist()

        checked: set[int] = set()
        if self.probe is not None and self.config.probe_labels:
            queries = [turns[-1].user for turns in turns_list]
            if request > 0:
                checked = self._check_request(
                    caches,
                    queries,
                    answers,
                    generations,
                    (presence, request, colour),
                    probed,
                    generate,
                    batch,
                )
            target_id = getattr(self.head, "token_ids", {}).get(SEG_TOKEN)
            statements = None
            # Bound statements and the ranking part read the knowledge adapter's LLM where
            # the model has one, from its own states of the image's part of the prompt (kept
            # with the image beside the LLM's); the absence part's free statements read the
            # LLM itself.
            knowing_batch = batch
            if self._reads_adapter():
                known = (KNOWING_KEY, *key)
                with self._knowing():
                    knowing_past = (
                        self._prefix_states(caches, known, embeds[:, :shared]) if shared else None
                    )
                knowing_batch = PromptBatch(
                    embeds, attention, knowing_past, shared if shared else 0
                )

            def state(rows: Sequence[int], **more: Any) -> list[Generation]:
                index = torch.tensor(list(rows), device=embeds.device)
                with self._knowing():
                    return self.backbone.generate_batch(
                        embeds[index],
                        attention[index.to(attention.device)],
                        past=knowing_batch.states(rows),
                        **{**options, **more},
                    )

            # targets written as text (SAM4MLLM): no one token marks them, no statements
            if knowledge and presence > 0 and target_id is not None:
                statements = Statements(
                    generate if knowing_batch is batch else state,
                    self.preprocessor.tokenizer,
                    self.config.probe_labels,
                    knowledge,
                    target_id,
                    [[score >= presence for score in row] for row in probed("probe")],
                    generate,
                )
            knowing = (caches, queries, answers, generations, statements, generate)
            if statements is not None:
                self._check_knowledge(*knowing, knowing_batch, checked)
            if presence > 0:
                self._check_presence(
                    caches,
                    answers,
                    generations,
                    (presence, probed, strongest),
                    generate,
                    checked,
                )
            if statements is not None:
                self._check_knowledge(
                    *knowing,
                    batch,
                    checked,
                    absence=strongest,
                    adapter_prompts=knowing_batch if knowing_batch is not batch else None,
                )
                if self.config.knowledge_ranking:
                    self._rank_subjects(*knowing, knowing_batch, checked)
                    self._rank_refusals(*knowing, knowing_batch, checked)
        if colour > 0:
            self._check_colour(caches, answers, generations, (colour, probed), batch, checked)
        if self._asks_instances(question):
            settings = {
                "max_new_tokens": max_new_tokens,
                "presence_threshold": presence,
                "colour_threshold": colour,
                "request_threshold": request,
                "knowledge_start": knowledge,
            }
            self._ask_instances(caches, answers, question, settings, snap_scale)
            if self.config.plural_requests:
                self._plural_requests(caches, turns_list, answers, question, settings, snap_scale)
            if self.config.colour_requests:
                self._colour_requests(caches, turns_list, answers, question, settings)
            if self.config.group_members and self.probe is not None:
                queries = [turns[-1].user for turns in turns_list]
                self._add_members(
                    caches,
                    queries,
                    answers,
                    question,
                    settings,
                    (presence, probed("probe")),
                    batch,
                )
            if self.config.knowledge_ranking and knowledge and self.probe is not None:
                queries = [turns[-1].user for turns in turns_list]
                present = [[p >= presence for p in row] for row in probed("probe")]
                self._drop_non_members(caches, queries, answers, present, knowledge, batch)
        if self.config.category_map and request > 0 and starts is None:
            # not where the answer is given: the instance question ("Where are the glasses?")
            # asks for every instance, and a relation's reference is grounded as asked
            self._map_requests(caches, turns_list, answers)
        return self._finish(caches, turns_list, answers, snap_scale, mask_names)

    def _map_requests(
        self,
        caches: Sequence[ImageCache],
        turns_list: Sequence[Sequence[Turn]],
        answers: list[Answer],
    ) -> None:
        """Requests the category map finds, in place: where the last turn asks for one
        instance of a class by name ("Show me the flower.", "Segment the blue bird.",
        `requested_class`) and the answer grounds something else or refuses, but the map has
        a region of the class (`category_regions` at its confidence floor; of the asked colour
        as the pixels read it, where the request names one), the answer becomes "It is the
        {description} <SEG>." over the largest such region (`extras["map_request"]`). The map
        finds 0.05 categories per scene that the scene does not show, at that floor, so a
        query for an absent class is still refused."""
        labels = self.config.probe_labels
        net = self.category_net
        if net is None or not labels:
            return
        colour_labels = self.config.colour_probe_labels
        for row, (cache, turns, answer) in enumerate(zip(caches, turns_list, answers, strict=True)):
            request = requested_class(turns[-1].user, labels, colour_labels)
            target = None if request is None else net.class_id(labels[request.label][0])
            if request is None or target is None:
                continue
            if request.description.split(" ")[-1] != labels[request.label][0].lower():
                continue  # a plural ("the red mugs"): not one instance
            if request.label in target_classes(answer.text, labels):
                continue  # grounded: the move and the colour requests see to its mask
            read = self._classes(cache, cache.image.original_size)
            if read is None:
                continue
            empty = np.zeros(read[0].shape, bool)
            regions = category_regions(empty, read[0], target, confidence=read[1])
            if regions and request.colour is not None:
                if not self._pixel_colours_on():
                    continue
                stack = torch.as_tensor(np.stack(regions)).float()
                colours = self._read_colours(cache, stack)
                regions = [
                    region
                    for region, colour in zip(regions, colours, strict=True)
                    if self._colour_of(colour, request.label) == request.colour
                ]
            if not regions:
                continue
            region = torch.as_tensor(regions[0])  # largest first
            logits = torch.where(region, INSIDE_LOGIT, OUTSIDE_LOGIT)[None]
            score = torch.tensor([float(read[1][regions[0]].mean())])
            found = self._written(f"It is the {request.description} {SEG_TOKEN}.", logits, score)
            found.extras["map_request"] = {"rejected": answer.text, "regions": len(regions)}
            answers[row] = found

    def _drop_non_members(
        self,
        caches: Sequence[ImageCache],
        queries: Sequence[str],
        answers: list[Answer],
        present: Sequence[Sequence[bool]],
        start: str,
        prompts: PromptBatch,
    ) -> None:
        """Non-members dropped, in place: in each answer that grounds targets of two or more
        classes, to a query that asks for no class by name and states a fact (`asked_fact`:
        "everything that is made from milk"), the targets of a class whose statement of the
        fact, after its text question (`_subject_scores`), is more than `FACT_SPAN` nats below
        the likeliest statement of a class the probe finds (`present`) or the answer names.
        The answer is written again from its kept targets' names ("I found the cheese wedge
        <SEG> and the ice cream <SEG>.")."""
        labels = self.config.probe_labels
        for row, answer in enumerate(answers):
            named = target_classes(answer.text, labels)
            if len(set(named)) < 2 or None in named:
                continue
            fact = asked_fact(queries[row])
            if fact is None or requested_class(queries[row], labels) is not None:
                continue
            phrases = list(_TARGET_PHRASE.finditer(answer.text))
            if len(phrases) != len(named) or len(named) != len(answer.scores):
                continue
            shown = [k for k, found in enumerate(present[row]) if found]
            classes = list(dict.fromkeys([*named, *shown]))
            scores = self._subject_scores(caches[row], prompts, row, start, classes, fact)
            scored = dict(zip(classes, scores, strict=True))
            best = max(scored.values())
            keep = [i for i, c in enumerate(named) if scored[c] >= best - FACT_SPAN]
            if not keep or len(keep) == len(named):
                continue
            dropped = [labels[c][0] for i, c in enumerate(named) if i not in keep]
            self._keep_targets(answer, phrases, keep)
            answer.extras["non_members"] = {"fact": fact, "dropped": dropped}

    def _keep_targets(self, answer: Answer, phrases: list[re.Match], keep: list[int]) -> None:
        """Keep only the targets `keep` of an answer, in place, and write it again from their
        phrases (`_TARGET_PHRASE` matches, one per target): "I found the cheese wedge <SEG>
        and the ice cream <SEG>."."""
        opening = answer.text[: phrases[0].start()]
        text = opening + " and ".join(phrases[i].group(0) for i in keep) + "."
        text = text[:1].upper() + text[1:]  # "The trash can <SEG>.", its opening gone
        self._set_tokens(answer, self.preprocessor.tokenizer.encode(text, add_special_tokens=False))
        answer.mask_logits = answer.mask_logits[keep]
        answer.scores = answer.scores[keep]

    def _drop_repeats(self, answers: list[Answer]) -> None:
        """Repeated targets dropped, in place: in an answer that grounds targets of two or more
        classes ("the wine glass <SEG> and the wine glass <SEG> and the blue cup <SEG>"),
        targets named in the same words whose final masks are nearly the same (IoU >=
        `REPEAT_OVERLAP`: one region, left so by the instance split and the instance question)
        are one target, the first; the answer is written again from the kept targets' words.
        On with the instance split (`instance_overlap` > 0). On the seed-23 stream's 300
        several-target queries, every such repeat (16 answers) was one object named twice. An answer
        of one class is left alone: there a repeat was as often two touching objects (two
        lemons) as one (10 and 8); so are targets in other words ("the blue potted plant"
        and "the red potted plant"), which the LLM tells apart."""
        labels = self.config.probe_labels
        if self.config.instance_overlap <= 0 or not labels:
            return
        for answer in answers:
            named = target_classes(answer.text, labels)
            if len(set(named)) < 2 or None in named or len(named) != len(answer.scores):
                continue
            phrases = list(_TARGET_PHRASE.finditer(answer.text))
            if len(phrases) != len(named):
                continue
            masks = (answer.mask_logits > 0).cpu().numpy()
            repeats = set()
            for words in {phrase.group(0).lower() for phrase in phrases}:
                same = [i for i, phrase in enumerate(phrases) if phrase.group(0).lower() == words]
                for group in duplicate_groups(masks[same], REPEAT_OVERLAP) if len(same) > 1 else []:
                    repeats |= {same[k] for k in group[1:]}
            if repeats:
                keep = [i for i in range(len(named)) if i not in repeats]
                self._keep_targets(answer, phrases, keep)
                answer.extras["repeats_dropped"] = [labels[named[i]][0] for i in sorted(repeats)]

    def _finish(
        self,
        caches: Sequence[ImageCache],
        turns_list: Sequence[Sequence[Turn]],
        answers: list[Answer],
        snap_scale: float | None,
        mask_names: bool | None,
    ) -> list[Answer]:
        """The last steps of `answer_batch`: the head's follow-up, region snap, mask names."""
        answers = self.head.follow_up(self, caches, turns_list, answers)
        for cache, answer in zip(caches, answers, strict=True):
            answer.mask_logits = self._snapped(cache, answer.mask_logits, snap_scale)
            self._move_to_category(cache, answer)
            self._drop_spill(cache, answer)
        self._drop_repeats(answers)
        names = self.config.mask_names if mask_names is None else mask_names
        many = any(len(answer.scores) >= UNSEEN_MIN_TARGETS for answer in answers)
        cells = self._probe_cells(caches) if names or many else None
        if many and cells is not None:
            self._drop_unseen(answers, cells)
        if names:
            self._name_masks(caches, answers, cells)
        return answers

    def _cuts(self, cache: ImageCache, shape: Sequence[int]) -> np.ndarray | None:
        """The image's object cuts ((H, W) bool at `shape`, found once per image and kept with
        its cache), or None (`object_cuts` off, no network or no pixels)."""
        if not (self.config.object_cuts and self._cut_net) or cache.pixels is None:
            return None
        if cache.cuts is None:
            cache.cuts = self._cut_net[0].cut_map(cache.pixels)
        return _resized(cache.cuts, shape)

    def _classes(
        self, cache: ImageCache, shape: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The image's category map and its confidence ((H, W) int and float at `shape`, found
        once per image and kept with its cache), or None (`category_map` off, no network or no
        pixels)."""
        if not (self.config.category_map and self._category_net) or cache.pixels is None:
            return None
        if cache.classes is None:
            cache.classes, cache.confidence = self._category_net[0].read(cache.pixels)
        if cache.confidence is None:
            cache.confidence = np.ones(cache.classes.shape, np.float32)
        return _resized(cache.classes, shape), _resized(cache.confidence, shape)

    def _move_to_category(self, cache: ImageCache, answer: Answer) -> None:
        """A single target's mask moved onto its category, in place: where the answer names
        the target's category and the category map finds it in the image, but less than
        `category_map.KEEP_SHARE` of the mask lies on it ("the red leaf <SEG>" on a red heart,
        a small yellow leaf elsewhere), the mask becomes the map's region of that category:
        the one whose pixels read most as the named "COLOUR CATEGORY" (pixel colours), else
        the one the mask overlaps most, else the largest. Mask names then name its colour."""
        if len(answer.scores) != 1 or len(answer.mask_logits) != 1:
            return
        index = target_classes(answer.text, self.config.probe_labels)[0]
        net = self.category_net
        target = (
            None
            if index is None or net is None
            else net.class_id(self.config.probe_labels[index][0])
        )
        if target is None:
            return
        logits = answer.mask_logits[0]
        read = self._classes(cache, logits.shape)
        if read is None:
            return
        mask = (logits > 0).cpu().numpy()
        regions = category_regions(mask, read[0], target, confidence=read[1])
        if not regions:
            return
        chosen = self._region_for(cache, answer.text, index, mask, regions)
        inside = torch.as_tensor(chosen, device=logits.device)
        moved = torch.where(inside, logits.clamp(min=INSIDE_LOGIT), logits.clamp(max=OUTSIDE_LOGIT))
        answer.mask_logits = moved[None]
        answer.extras["category_moved"] = int(chosen.sum())

    def _region_for(
        self, cache: ImageCache, text: str, index: int, mask: np.ndarray, regions: list[np.ndarray]
    ) -> np.ndarray:
        """Of a category's regions (largest first), the one a single-target answer means:
        the one whose pixels read most as the colour it names for class `index`, where it
        names one the pixel colour reader knows; else the one `mask` overlaps most; else the
        largest."""
        if len(regions) == 1:
            return regions[0]
        label = self._named_label(text, index)
        if label is not None and self._pixel_colours_on() and cache.pixels is not None:
            bins = _resized(colour_bins(cache.pixels, self.pixel_colours.levels), mask.shape)
            log_probs = self.pixel_colours.log_probs().numpy()[label]
            return max(regions, key=lambda region: float(log_probs[bins[region]].mean()))
        overlaps = [int((region & mask).sum()) for region in regions]
        return regions[int(np.argmax(overlaps))]  # the first (largest) where none overlaps

    def _named_label(self, text: str, index: int) -> int | None:
        """The colour probe label ("COLOUR CATEGORY") of the colour word right before class
        `index`'s name in a single-target answer, or None where it names no colour."""
        labels = self.config.colour_probe_labels
        for name in sorted(self.config.probe_labels[index], key=len, reverse=True):
            found = re.search(rf"\b(\w+) {re.escape(name)}\s*{re.escape(SEG_TOKEN)}", text, re.I)
            if found:
                wanted = f"{found.group(1).lower()} {self.config.probe_labels[index][0]}"
                return labels.index(wanted) if wanted in labels else None
        return None

    def _drop_spill(self, cache: ImageCache, answer: Answer) -> None:
        """A single target's spill dropped, in place: its final mask, cut along the object
        cuts, keeps only the pieces whose pixels read as its class (`foreign_pieces`): "the
        light bulb <SEG>" over the bulb and the banana it touches keeps the bulb. Needs
        `object_cuts` and `colour_pixels`; a target named by no class is left alone."""
        if len(answer.scores) != 1 or len(answer.mask_logits) != 1:
            return
        own = self._named_colours(answer.text) if self._pixel_colours_on() else []
        logits = answer.mask_logits[0]
        cuts = self._cuts(cache, logits.shape) if own else None
        if cuts is None:
            return
        bins = _resized(colour_bins(cache.pixels, self.pixel_colours.levels), logits.shape)
        log_probs = self.pixel_colours.log_probs().numpy()
        kept = foreign_pieces((logits > 0).cpu().numpy(), cuts, bins, log_probs, own)
        if kept is None:
            return
        inside = torch.as_tensor(kept, device=logits.device)
        answer.mask_logits = torch.where(inside, logits, logits.clamp(max=OUTSIDE_LOGIT))[None]
        answer.extras["spill_dropped"] = int((logits > 0).sum() - (answer.mask_logits > 0).sum())

    def _named_colours(self, text: str) -> list[int]:
        """The colour labels (indices into `colour_probe_labels`) of the category an answer's
        one target is named by, every colour of it ("the red apple <SEG>": every apple's),
        as the LLM's colour word is often wrong (mask names mend it later); empty where the
        target is named by no category."""
        index = target_classes(text, self.config.probe_labels)[0]
        if index is None:
            return []
        names = set(self.config.probe_labels[index])
        labels = self.config.colour_probe_labels
        return [k for k, label in enumerate(labels) if label.partition(" ")[2] in names]

    def _probe_cells(self, caches: Sequence[ImageCache]) -> torch.Tensor | None:
        """(B, C, g, g) the category probe's class probabilities in each cell of each image
        (`cell_probabilities`); None without a probe or its classes' names."""
        if self.probe is None or not self.config.probe_labels:
            return None
        return cell_probabilities(self.probe, torch.cat([c.features for c in caches])).cpu()

    def _drop_unseen(self, answers: list[Answer], cells: torch.Tensor) -> None:
        """Unseen targets dropped, in place: in an answer of `UNSEEN_MIN_TARGETS` or more
        targets, each named by a class, the targets whose class the category probe (`cells`,
        per row (C, g, g)) reads as less than `UNSEEN_SHARE` of all it reads inside the final
        mask ("the blue butterfly <SEG>" on a blue balloon) go, the least read first, as long
        as `UNSEEN_MIN_TARGETS` - 1 targets stay; the answer is written again from the kept
        targets' words. Chosen on the seed-23 stream's 300 several-target queries (0.661 ->
        0.685, 30 better, 4 worse) and the development stream's 65 (0.650 -> 0.670): in
        answers of two targets, dropping lost as much as it won, as the queries ask for at
        least two and the probe misses small objects."""
        labels = self.config.probe_labels
        for row, answer in enumerate(answers):
            count = len(answer.scores)
            named = target_classes(answer.text, labels)
            if count < UNSEEN_MIN_TARGETS or None in named or len(named) != count:
                continue
            phrases = list(_TARGET_PHRASE.finditer(answer.text))
            if len(phrases) != count:
                continue
            read = read_masks(cells[row], answer.mask_logits.cpu())[:, 1:]
            total = read.sum(dim=1).clamp_min(1e-9)
            share = [float(read[k, c] / total[k]) for k, c in enumerate(named)]
            unseen = sorted(
                (k for k in range(count) if share[k] < UNSEEN_SHARE), key=share.__getitem__
            )
            dropped = set(unseen[: count - (UNSEEN_MIN_TARGETS - 1)])
            if dropped:
                self._keep_targets(answer, phrases, [k for k in range(count) if k not in dropped])
                answer.extras["unseen_dropped"] = [labels[named[k]][0] for k in sorted(dropped)]

    def _snapped(
        self, cache: ImageCache, logits: torch.Tensor, snap_scale: float | None
    ) -> torch.Tensor:
        """Mask logits (N, H, W) region-snapped (`pixelreason.models.snap`) at `snap_scale`
        (None: the config's; 0 or an image without its pixels: as they are). The image's
        regions are found once per scale and kept with its cache."""
        scale = self.config.snap_scale if snap_scale is None else snap_scale
        if scale <= 0 or cache.pixels is None:
            return logits
        if scale not in cache.regions:
            cache.regions[scale] = image_regions(cache.pixels, scale)
        return snap_logits(logits, cache.regions[scale], self.config.snap_share)

    def _asks_instances(self, question: str) -> bool:
        """Whether the model can ask the instance question `question` ("" is off): it needs
        the classes' names, and one token marking each target (not SAM4MLLM's text)."""
        marks_targets = SEG_TOKEN in getattr(self.head, "token_ids", {})
        return bool(question and self.config.probe_labels and marks_targets)

    def _ask_instance_question(
        self,
        caches: Sequence[ImageCache],
        classes: Sequence[int],
        question: str,
        settings: dict[str, Any],
    ) -> tuple[list[str], list[Answer]]:
        """The instance question `question` about each class of `classes` in the image of the
        same position of `caches`, in one `answer_batch` call with the checks' `settings`: the
        questions and the answers. Each answer is given its start (`INSTANCE_ANSWER`), so that
        one pass over question and answer reads it; its masks are not snapped (the asking
        answer's are, once they take the regions) and its words are not shown."""
        labels = self.config.probe_labels
        texts = [instance_question(question, labels[c]) for c in classes]
        replies = self.answer_batch(
            caches,
            [[Turn(text)] for text in texts],
            instance_question="",
            snap_scale=0.0,
            mask_names=False,
            starts=[INSTANCE_ANSWER] * len(texts),
            **settings,
        )
        return texts, replies

    def _ask_instances(
        self,
        caches: Sequence[ImageCache],
        answers: list[Answer],
        question: str,
        settings: dict[str, Any],
        snap_scale: float | None = None,
    ) -> None:
        """The instance question, in place: for each class an answer grounds with two or more
        targets, the model is asked `question` about it ("Where are the oranges?", one
        `answer_batch` call for all of them, with the same checks), and where the answer
        grounds something, the class's targets take the regions of its masks' union
        (`take_regions`), so that each target is one instance and none is missed. The answer
        is given its start (`INSTANCE_ANSWER`, a semantic-segmentation answer), so that one
        pass over question and answer reads it, not a decoding step per word. The union is
        region-snapped first (`snap_scale`, None: the config's; as it is where snapping leaves
        nothing), so that its regions, the instances, follow the image's edges: on 300
        several-target queries of a fresh stream (seed 23) multi-target IoU 0.621 -> 0.640,
        on the development stream 0.613 -> 0.638."""
        labels = self.config.probe_labels
        asks = [
            (row, index, group)
            for row, answer in enumerate(answers)
            if len(answer.scores) > 1
            for index, group in repeated_classes(answer.text, labels).items()
            if group[-1] < len(answer.mask_logits)
        ]
        if not asks:
            return
        texts, replies = self._ask_instance_question(
            [caches[row] for row, _, _ in asks], [index for _, index, _ in asks], question, settings
        )
        # an answer's later groups first, so that spare targets do not move the earlier ones
        order = sorted(range(len(asks)), key=lambda k: (asks[k][0], -asks[k][2][-1]))
        for k in order:
            (row, index, group), text, reply = asks[k], texts[k], replies[k]
            if not len(reply.scores):
                continue  # the model finds none: the targets stay as they are
            answer = answers[row]
            found = reply.mask_logits.max(dim=0).values
            snapped = self._snapped(caches[row], found[None], snap_scale)[0]
            found = snapped if bool((snapped > 0).any()) else found
            logits, regions, spare = take_regions(
                answer.mask_logits,
                group,
                found,
                spare=self.config.instance_spare,
                cuts=self._cuts(caches[row], found.shape[-2:]),
            )
            answer.mask_logits = logits
            if len(spare):
                self._add_targets(answer, group, spare, [labels[index][0]] * len(spare))
            answer.extras.setdefault("instance_question", []).append(
                {
                    "class": labels[index][0],
                    "question": text,
                    "answer": reply.text,
                    "masks": group,
                    "region_pixels": regions,
                }
            )

    def _add_members(
        self,
        caches: Sequence[ImageCache],
        queries: Sequence[str],
        answers: list[Answer],
        question: str,
        settings: dict[str, Any],
        presence: tuple[float, Sequence[Sequence[float]]],
        prompts: PromptBatch,
    ) -> None:
        """Group members, in place (`pixelreason.models.members`): each answer that grounds two or
        more targets, to a query that asks for no class by name ("all the cherries" asks for
        cherries only; "everything that grows on trees" names trees in passing), gains the regions
        of the classes the LLM finds about as likely to start it as its likeliest, that the answer
        does not name and the probe finds (`presence`: the threshold, and per row each class's;
        `prompts`: the batch's prompts); each asked the instance question
        `question`, one `answer_batch` call for all."""
        labels = self.config.probe_labels
        threshold, strength = presence
        rows = [
            row
            for row, answer in enumerate(answers)
            if len(answer.scores) > 1
            and named_classes(answer.text, labels)
            and requested_class(queries[row], labels) is None
        ]
        seen = [[c for c, p in enumerate(strength[row]) if p >= threshold] for row in rows]
        texts, owners = [], []
        for row, classes in zip(rows, seen, strict=True):
            texts += first_slot_texts(labels, classes)
            owners += [row] * len(classes)
        if not texts:
            return
        scores = iter(self._continuation_logprobs(prompts, owners, texts))
        asks = []
        for row, classes in zip(rows, seen, strict=True):
            run = likeliest_run({c: next(scores) for c in classes})
            named = named_classes(answers[row].text, labels)
            asks += [(row, c) for c in run if c not in named and strength[row][c] >= MIN_PRESENCE]
        if not asks:
            return
        texts, replies = self._ask_instance_question(
            [caches[row] for row, _ in asks], [c for _, c in asks], question, settings
        )
        for (row, c), text, reply in zip(asks, texts, replies, strict=True):
            if not len(reply.scores):
                continue
            answer = answers[row]
            taken = (answer.mask_logits > 0).any(dim=0)
            more = new_targets(reply.mask_logits.max(dim=0).values, taken)
            if not len(more):
                continue
            last = len(answer.scores) - 1
            self._add_targets(answer, [last], more, [labels[c][0]] * len(more))
            answer.extras.setdefault("group_members", []).append(
                {"class": labels[c][0], "question": text, "answer": reply.text, "added": len(more)}
            )

    def _with_relations(
        self,
        caches: Sequence[ImageCache],
        turns_list: Sequence[Sequence[Turn]],
        options: dict[str, Any],
        snap_scale: float | None,
        mask_names: bool | None,
    ) -> list[Answer]:
        """`answer_batch` with relations (`pixelreason.models.relations`): each conversation
        whose last turn asks about one is answered "It is the CLASS <SEG>." over the region
        the relation picks among the model's own masks, where every part is found
        (`extras["relation"]` tells what was asked and found); the others, and those where a
        part is not found, are answered as without relations, in one batch."""
        settings = {k: options[k] for k in ("max_new_tokens", *CHECK_SETTINGS)}
        template = options["instance_question"]
        template = self.config.instance_question if template is None else template
        resolved: dict[int, Answer] = {}
        for row, turns in enumerate(turns_list):
            relation = parse_relation(turns[-1].user)
            if relation is None:
                continue
            if relation.reference == "it" and not relation.context and len(turns) > 1:
                relation = dataclasses.replace(relation, context=turns[-2].user)
            if relation.reference == "it" and not relation.context:
                continue
            found = self._relation_target(caches[row], relation, template, settings, snap_scale)
            if found is None:
                continue
            index, logits, score, asked = found
            text = f"It is the {self.config.probe_labels[index][0]} {SEG_TOKEN}."
            answer = self._written(text, logits[None], torch.tensor([score]))
            answer.extras["relation"] = asked
            resolved[row] = answer
        rest = [row for row in range(len(caches)) if row not in resolved]
        answers = dict(resolved)
        if rest:
            others = self.answer_batch(
                [caches[row] for row in rest],
                [turns_list[row] for row in rest],
                relations=False,
                snap_scale=snap_scale,
                mask_names=mask_names,
                **options,
            )
            answers.update(zip(rest, others, strict=True))
        if resolved:
            rows = sorted(resolved)
            finished = self._finish(
                [caches[row] for row in rows],
                [turns_list[row] for row in rows],
                [resolved[row] for row in rows],
                snap_scale,
                mask_names,
            )
            answers.update(zip(rows, finished, strict=True))
        return [answers[row] for row in range(len(caches))]

    def _relation_target(
        self,
        cache: ImageCache,
        relation: Relation,
        template: str,
        settings: dict[str, Any],
        snap_scale: float | None = None,
    ) -> tuple[int, torch.Tensor, float, dict[str, Any]] | None:
        """The class, (H, W) mask logits and score of the object `relation` picks in the
        image, and what the model was asked; None where a part is not found. The candidates
        are the regions of the answers to the instance question (`template`) about each class
        that may hold them, region-snapped at `snap_scale` (None: the config's)."""
        labels = self.config.probe_labels
        asked: dict[str, Any] = {"relation": dataclasses.asdict(relation)}

        def ask(questions: Sequence[str], start: str | None = None, **more: Any) -> list[Answer]:
            return self.answer_batch(
                [cache] * len(questions),
                [[Turn(question)] for question in questions],
                instance_question="" if start else None,
                relations=False,
                snap_scale=0.0,
                mask_names=False,
                starts=[start] * len(questions) if start else None,
                **{**settings, **({"knowledge_start": ""} if start else {}), **more},
            )

        # What the relation presupposes ("the teapot above the green pencil": a teapot and a
        # green pencil) is grounded where the probe reads it weakly, or the LLM would refuse it.
        reference = None
        reference_class = None
        if relation.reference:
            if relation.reference == "it":  # the earlier sentences' answer
                question = relation.context
                request = requested_class(question, labels, self.config.colour_probe_labels)
                named = None if request is None else request.description
            else:
                question = f"Segment the {relation.reference}."
                named = relation.reference
            if named is None:  # asked for a thing by what it is: as the model says
                said = ask([question])[0]
            else:  # asked for by name ("the key", "Where is the lamp?"): the model grounds it
                said = ask([question], f"It is the {named} {SEG_TOKEN}.", **UNCHECKED)[0]
            asked["reference"] = {"question": question, "answer": said.text}
            if not len(said.scores):
                return None
            reference = (said.mask_logits > 0).any(dim=0).numpy()
            classes = [c for c in target_classes(said.text, labels) if c is not None]
            reference_class = classes[0] if classes else None
        # which classes may hold the candidates: one named, a group's, or any the probe finds
        named = mentioned_classes(relation.target, labels) if relation.target else []
        if relation.kind == "other" and not named and reference_class is not None:
            named = [reference_class]
        if len(named) > 1 or (relation.kind == "other" and not named):
            return None
        wanted = set(named)
        if relation.target and not named:  # a group: the classes the model names for it
            question = (
                f"Where are the {relation.target}?"
                if relation.target.endswith("s")
                else f"Find every {relation.target} in this picture."
            )
            reply = ask([question])[0]
            asked["candidates"] = {"question": question, "answer": reply.text}
            wanted = {c for c in target_classes(reply.text, labels) if c is not None}
            if not wanted:
                return None
        candidates = self._mapped_candidates(cache, wanted)
        if candidates:
            asked["classes"] = sorted({labels[c][0] for c, *_ in candidates})
            asked["category_map"] = True
        else:
            candidates = self._asked_candidates(
                cache, wanted, ask, template, settings, asked, snap_scale
            )
        if reference is not None:  # the reference is no candidate, nor part of one
            apart = set_apart([region for *_, region in candidates], reference)
            candidates = [
                (*candidate[:3], region)
                for candidate, region in zip(candidates, apart, strict=True)
                if region is not None
            ]
        if relation.kind == "colour" and candidates:
            candidates = self._same_colour(cache, relation, candidates, reference, reference_class)
        if not candidates:
            return None
        pick = choose(relation, [region for *_, region in candidates], reference)
        if pick is None:
            return None
        c, logits, score, region = candidates[pick]
        inside = torch.as_tensor(region)
        return c, torch.where(inside, logits, logits.clamp(max=OUTSIDE_LOGIT)), score, asked

    def _asked_candidates(
        self,
        cache: ImageCache,
        wanted: set[int],
        ask: Callable[..., list[Answer]],
        template: str,
        settings: dict[str, Any],
        asked: dict[str, Any],
        snap_scale: float | None,
    ) -> list[tuple[int, torch.Tensor, float, np.ndarray]]:
        """A relation's candidates found by asking the model the instance question about each
        class that may hold them: those `wanted` that the probe reads at all, and any it
        finds."""
        labels = self.config.probe_labels
        presence = class_presence(
            self.probe, cache.features, cache.context if self.config.presence_mask_head else None
        )[0]
        # the presence check's threshold, also where the check is off (0)
        threshold = settings["presence_threshold"] or self.config.presence_threshold
        classes = sorted(
            {c for c in wanted if presence[c] >= PRESUPPOSED_PRESENCE}
            | {c for c in range(len(labels)) if presence[c] >= threshold}
        )
        asked["classes"] = [labels[c][0] for c in classes]
        replies = ask(  # no request check: it could only refuse wanted classes the probe misses
            [instance_question(template, labels[c]) for c in classes],
            INSTANCE_ANSWER,
            request_threshold=0.0,
        )
        found = [
            (c, reply.mask_logits.max(dim=0).values, float(reply.scores.mean()))
            for c, reply in zip(classes, replies, strict=True)
            if len(reply.scores)
        ]
        # the candidates from the masks region-snapped, so that the objects' areas, centroids
        # and pieces follow the image's edges; from the masks as they are where that leaves
        # none (a weak mask of a class the query names, snapped into a neighbour's region)
        snapped = [(c, self._snapped(cache, m[None], snap_scale)[0], s) for c, m, s in found]
        return self._candidates(cache, snapped, wanted) or self._candidates(cache, found, wanted)

    def _mapped_candidates(
        self, cache: ImageCache, wanted: set[int]
    ) -> list[tuple[int, torch.Tensor, float, np.ndarray]]:
        """A relation's candidates read off the category map (`category_map`): each region of
        each `wanted` class (every class the map finds where none is wanted), as (class, mask
        logits, score 1, region); empty without the map or where it finds none of them."""
        net = self.category_net
        read = None if net is None else self._classes(cache, cache.image.original_size)
        if read is None:
            return []
        classes, confidence = read
        labels = self.config.probe_labels
        ids = {c: net.class_id(names[0]) for c, names in enumerate(labels)}
        empty = np.zeros(classes.shape, bool)
        candidates = []
        for c in sorted(wanted or range(len(labels))):
            if ids[c] is None:
                continue
            for region in category_regions(
                empty, classes, ids[c], confidence=confidence, least_confidence=CANDIDATE_CONFIDENCE
            ):
                logits = torch.where(torch.as_tensor(region), INSIDE_LOGIT, OUTSIDE_LOGIT)
                candidates.append((c, logits, 1.0, region))
        return candidates

    def _candidates(
        self,
        cache: ImageCache,
        found: Sequence[tuple[int, torch.Tensor, float]],
        wanted: set[int],
    ) -> list[tuple[int, torch.Tensor, float, np.ndarray]]:
        """A relation's candidate objects, (class, its (H, W) mask logits, score, bool (H, W)
        region), from each found class's mask logits and score: the masks' regions
        (`object_proposals`), of overlapping regions the one whose class the probe reads most
        there (its share of the reading: one object, one class, `distinct`), of the `wanted`
        classes where any are."""
        if not found:
            return []
        proposals = object_proposals(torch.stack([logits for _, logits, _ in found]))
        if not proposals:
            return []
        cells = cell_probabilities(self.probe, cache.features)[0].cpu()
        read = read_masks(cells, torch.as_tensor(np.stack([r for _, r in proposals])))
        share = read / read.sum(dim=1, keepdim=True).clamp(min=1e-9)
        strengths = [float(share[i, found[k][0] + 1]) for i, (k, _) in enumerate(proposals)]
        return [
            (found[k][0], found[k][1], found[k][2], region)
            for k, region in (proposals[i] for i in distinct([r for _, r in proposals], strengths))
            if not wanted or found[k][0] in wanted
        ]

    def _plural_requests(
        self,
        caches: Sequence[ImageCache],
        turns_list: Sequence[Sequence[Turn]],
        answers: list[Answer],
        question: str,
        settings: dict[str, Any],
        snap_scale: float | None,
    ) -> None:
        """Plural requests, in place: where the last turn asks for one class in the plural by
        name ("Where are the leaves?", "Segment all the carrots.": `requested_class`, no
        colour) and the answer grounds targets, each named by a class, fewer than two of them
        by the class ("Here they are: the red umbrella <SEG> and the yellow umbrella <SEG>."),
        the model is asked the instance question about the class (`question`, one batch for
        all), and where it grounds something, each region of its masks' union (region-snapped
        at `snap_scale`, None: the config's; `new_targets`) becomes a target named by the
        class: "The carrot <SEG> and the carrot <SEG> and the carrot <SEG>." (`extras
        ["plural_request"]` keeps the answer it replaced). A target named by no class is left
        to mask names. Rare: on the development stream (600) 2 answers change, both better
        (multi-target IoU 0.670 -> 0.683, 2 more name their targets); no answer of test, val,
        zero-shot or the seed-23 stream's 300 several-target queries changes. Without the rule
        about unnamed targets, development 0.693 but seed 23 and test 0.0002 lower, and
        answers that mask names would name and split are replaced."""
        labels = self.config.probe_labels
        asks = []
        for row, (turns, answer) in enumerate(zip(turns_list, answers, strict=True)):
            request = requested_class(turns[-1].user, labels, self.config.colour_probe_labels)
            if request is None or request.colour is not None:
                continue
            if request.description.endswith(labels[request.label][0].lower()):
                continue  # one object asked for
            if not len(answer.scores):
                continue
            named = target_classes(answer.text, labels)
            if None in named or named.count(request.label) >= 2:
                continue  # mask names name a target named by no class
            asks.append((row, request))
        if not asks:
            return
        _, replies = self._ask_instance_question(
            [caches[row] for row, _ in asks], [r.label for _, r in asks], question, settings
        )
        for (row, request), reply in zip(asks, replies, strict=True):
            if not len(reply.scores):
                continue
            found = reply.mask_logits.max(dim=0).values
            snapped = self._snapped(caches[row], found[None], snap_scale)[0]
            found = snapped if bool((snapped > 0).any()) else found
            masks = new_targets(found, torch.zeros(found.shape, dtype=torch.bool))
            if not len(masks):
                continue
            name = labels[request.label][0]
            text = " and ".join([f"the {name} {SEG_TOKEN}"] * len(masks)) + "."
            text = text[:1].upper() + text[1:]
            new = self._written(text, masks, reply.scores.mean().repeat(len(masks)))
            new.extras["plural_request"] = {"rejected": answers[row].text, "regions": len(masks)}
            answers[row] = new

    def _colour_requests(
        self,
        caches: Sequence[ImageCache],
        turns_list: Sequence[Sequence[Turn]],
        answers: list[Answer],
        question: str,
        settings: dict[str, Any],
    ) -> None:
        """Colour requests, in place: where the last turn asks for one "COLOUR CATEGORY" by
        name ("Segment the white sock.", `requested_class`) and the answer refuses it, or
        grounds one target that is not the class or, read off the image's pixels
        (`_read_colours` with `colour_pixels`), is another of the class's colours, the model is
        asked the instance question about the class (`question`, one batch for all), and the
        largest of its regions whose pixels read the asked colour becomes the answer ("It is
        the white sock <SEG>."; `extras["colour_request"]` says what was asked and found).
        Where none reads it, an answer that grounds the class (in another colour) says that
        the image does not show it ("There is no red mug in this image.", `refusal`), and any
        other answer stays."""
        labels = self.config.probe_labels
        colour_labels = self.config.colour_probe_labels
        if not (self._pixel_colours_on() and labels and colour_labels):
            return
        asks: list[tuple[int, Request]] = []
        for row, (cache, turns, answer) in enumerate(zip(caches, turns_list, answers, strict=True)):
            request = requested_class(turns[-1].user, labels, colour_labels)
            if request is None or request.colour is None or cache.pixels is None:
                continue
            if request.description.split(" ")[-1] != labels[request.label][0].lower():
                continue  # a plural ("the red mugs"): no one instance to pick
            classes = target_classes(answer.text, labels)
            if len(classes) > 1:
                continue
            if classes:
                if classes[0] == request.label:
                    read = self._read_colours(cache, answer.mask_logits[:1])[0]
                    if self._colour_of(read, request.label) == request.colour:
                        continue
            elif len(answer.scores):
                continue  # grounded with no class named: mask names will say what it is
            asks.append((row, request))
        if not asks:
            return
        _, replies = self._ask_instance_question(
            [caches[row] for row, _ in asks],
            [r.label for _, r in asks],
            question,
            {**settings, "knowledge_start": ""},
        )
        for (row, request), reply in zip(asks, replies, strict=True):
            if not len(reply.scores):
                continue
            logits = reply.mask_logits.max(dim=0).values
            regions = [region for _, region in object_proposals(logits[None])]
            if not regions:
                continue
            read = self._read_colours(caches[row], torch.as_tensor(np.stack(regions)).float())
            fits = [
                k
                for k in range(len(regions))
                if self._colour_of(read[k], request.label) == request.colour
            ]
            if fits:  # the largest region of the asked colour
                region = torch.as_tensor(regions[max(fits, key=lambda k: int(regions[k].sum()))])
                text = f"It is the {request.description} {SEG_TOKEN}."
                masks = torch.where(region, logits, logits.clamp(max=OUTSIDE_LOGIT))[None]
                scores = reply.scores.mean().reshape(1)
            elif target_classes(answers[row].text, labels) == [request.label]:
                text, masks, scores = refusal(request, labels), logits[None][:0], reply.scores[:0]
            else:
                continue
            found = self._written(text, masks, scores)
            found.extras["colour_request"] = {
                "rejected": answers[row].text,
                "question": instance_question(question, labels[request.label]),
                "regions": len(regions),
            }
            answers[row] = found

    def _colour_of(self, read: torch.Tensor, label: int | None) -> int | None:
        """The colour label (an index into `colour_probe_labels`) of class `label` (an index
        into `probe_labels`; None: any class) that a reading (1 + L,) (`_read_colours`) finds
        most; None where the class comes in no colour or the mask is empty."""
        name = None if label is None else self.config.probe_labels[label][0]
        options = [
            k
            for k, pair in enumerate(self.config.colour_probe_labels)
            if name in (None, pair.partition(" ")[2])
        ]
        if not options or read.sum() <= 0:
            return None
        return max(options, key=lambda k: float(read[k + 1]))

    def _same_colour(
        self,
        cache: ImageCache,
        relation: Relation,
        candidates: list[tuple[int, torch.Tensor, float, np.ndarray]],
        reference: np.ndarray | None,
        reference_class: int | None,
    ) -> list[tuple[int, torch.Tensor, float, np.ndarray]]:
        """The candidates whose colour, as read inside their region (`_read_colours`), is the
        relation's colour word or else the reference's; none without a colour reader. Those of
        a category that comes in several colours come first: only their colour is a word the
        answers name, as mask names hold (`colour_names`), so "the other red thing" is the red
        bird before the strawberry."""
        if not self._reads_colours(cache):
            return []
        categories = [label.split(maxsplit=1)[-1] for label in self.config.colour_probe_labels]
        coloured = {
            c for c, names in enumerate(self.config.probe_labels) if categories.count(names[0]) > 1
        }

        def colour(mask: np.ndarray, index: int | None) -> str | None:
            read = self._read_colours(cache, torch.as_tensor(mask)[None].float())[0]
            found = self._colour_of(read, index)
            return None if found is None else self.config.colour_probe_labels[found].split()[0]

        wanted = relation.colour.replace("gray", "grey") or (
            None if reference is None else colour(reference, reference_class)
        )
        if wanted is None:
            return []
        matches = [c for c in candidates if colour(c[3], c[0]) == wanted]
        return [c for c in matches if c[0] in coloured] or matches

    def _add_targets(
        self, answer: Answer, group: Sequence[int], spare: torch.Tensor, names: Sequence[str]
    ) -> None:
        """Ground (k, H, W) `spare` masks in `answer`, in place, right after the targets of
        `group`: " and the {name} <SEG>" each (k `names`), after its last `<SEG>`, with their
        mean score."""
        tokenizer = self.preprocessor.tokenizer
        marker = self.head.token_ids[SEG_TOKEN]
        ids = answer.token_ids
        after = int((ids == marker).nonzero()[group[-1], 0]) + 1
        text = "".join(f" and the {name} {SEG_TOKEN}" for name in names)
        more = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=ids.dtype)
        self._set_tokens(answer, torch.cat([ids[:after], more, ids[after:]]))
        at = group[-1] + 1
        logits = answer.mask_logits
        answer.mask_logits = torch.cat([logits[:at], spare.to(logits.dtype), logits[at:]])
        score = answer.scores[list(group)].mean().reshape(1).expand(len(spare))
        answer.scores = torch.cat([answer.scores[:at], score, answer.scores[at:]])

    def _written(self, text: str, mask_logits: torch.Tensor, scores: torch.Tensor) -> Answer:
        """An answer the model is given rather than decodes: `text`'s tokens, with the masks'
        logits (N, H, W) and scores (N,) of its N targets."""
        ids = self.preprocessor.tokenizer.encode(text, add_special_tokens=False)
        answer = Answer("", torch.tensor(ids), mask_logits, scores)
        self._set_tokens(answer, ids)
        return answer

    def _set_tokens(self, answer: Answer, ids: Sequence[int] | torch.Tensor) -> None:
        """Give `answer` new token ids and the text they show (`raw_text` where it differs)."""
        answer.token_ids = torch.as_tensor(ids, dtype=answer.token_ids.dtype)
        answer.text, raw = self._answer_text(answer.token_ids)
        if answer.text != raw:
            answer.extras["raw_text"] = raw

    def _name_masks(
        self,
        caches: Sequence[ImageCache],
        answers: Sequence[Answer],
        cells: torch.Tensor | None,
    ) -> None:
        """Mask names, in place (`pixelreason.models.mask_names`): first each target named by
        no class gets the class the category probe (`cells`, `_probe_cells`) reads inside its
        final mask (`_name_class`), then each target named as a category with colours the
        colour read there (`_read_colours`, `_name_colours`). Needs one token marking each
        target."""
        target_id = getattr(self.head, "token_ids", {}).get(SEG_TOKEN)
        if target_id is None:
            return
        if cells is not None:
            for row, answer in enumerate(answers):
                self._name_class(answer, cells[row], target_id)
        for cache, answer in zip(caches, answers, strict=True):
            self._name_colours(cache, answer, target_id)

    def _reads_colours(self, cache: ImageCache) -> bool:
        """Whether the model can read colours inside masks on the image of `cache`: with
        colour labels, off its pixels (`colour_pixels`) or with a colour probe."""
        pixels = self._pixel_colours_on() and cache.pixels is not None
        return bool(self.config.colour_probe_labels) and (pixels or self.colour_probe is not None)

    def _pixel_colours_on(self) -> bool:
        return self.config.colour_pixels and self.pixel_colours is not None

    def _read_colours(self, cache: ImageCache, masks: torch.Tensor) -> torch.Tensor:
        """(n, 1 + L) what the model reads inside masks (n, H, W) of the image of `cache`,
        column k + 1 for colour label k: the image's pixels with `colour_pixels`
        (`pixelreason.models.pixel_colours`), else the colour probe's cells
        (`mask_names.read_masks`). Check `_reads_colours` first."""
        if self._pixel_colours_on() and cache.pixels is not None:
            return self.pixel_colours.read(cache.pixels, masks.cpu())
        cells = cell_probabilities(self.colour_probe, cache.features)[0].cpu()
        return read_masks(cells, masks.cpu())

    def _name_class(self, answer: Answer, cells: torch.Tensor, target_id: int) -> None:
        """Each target `answer` names by no class ("Sure, it is <SEG>.") is named by the class
        the category probe (cells (C, g, g) of its image) reads most inside its final mask
        ("... it is the star <SEG>."); with `instance_spare` the mask's separate regions
        become targets of their own, each named by its own reading. `extras["mask_class"]`
        lists the targets named."""
        labels = self.config.probe_labels
        tokenizer = self.preprocessor.tokenizer
        colours = [label.partition(" ")[0] for label in self.config.colour_probe_labels]
        shown = answer.text.split(SEG_TOKEN)[:-1]
        unnamed = [
            k
            for k, index in enumerate(target_classes(answer.text, labels))
            if index is None and k < len(answer.mask_logits) and names_nothing(shown[k], colours)
        ]
        named = []
        for k in reversed(unnamed):  # from the last back: added words move only later ones
            logits, _, spare = take_regions(
                answer.mask_logits, [k], answer.mask_logits[k], spare=self.config.instance_spare
            )
            classes = [
                mask_class(r) for r in read_masks(cells, torch.cat([logits[k : k + 1], spare]))
            ]
            if None in classes:
                continue  # an empty mask (a spare region is never empty)
            answer.mask_logits = logits
            # " the {name}" before the target's marker and the blank tokens before it
            ids = answer.token_ids.tolist()
            at = [i for i, token in enumerate(ids) if token == target_id][k]
            while at > 0 and not tokenizer.decode([ids[at - 1]]).strip():
                at -= 1
            found = [labels[c][0] for c in classes if c is not None]
            words = tokenizer.encode(f" the {found[0]}", add_special_tokens=False)
            self._set_tokens(answer, ids[:at] + words + ids[at:])
            if len(spare):
                self._add_targets(answer, [k], spare, found[1:])
            named.append({"target": k, "classes": found})
        if named:
            answer.extras["mask_class"] = named[::-1]

    def _name_colours(self, cache: ImageCache, answer: Answer, target_id: int) -> None:
        """Each target `answer` names as a category with colours gets the colour read inside
        its final mask (`_read_colours`, on the image of `cache`); `extras["mask_colour"]`
        lists the words changed."""
        tokenizer = self.preprocessor.tokenizer
        ids = answer.token_ids.tolist()
        names = colour_names(ids, tokenizer, self.config.colour_probe_labels, target_id)
        if not names or not self._reads_colours(cache):
            return
        chosen = mask_colours(self._read_colours(cache, answer.mask_logits), names)
        changed = []
        # from the last name back, so that an added colour does not move the ones before
        for name, colour in reversed(list(zip(names, chosen, strict=True))):
            if colour is None or colour == name.colour:
                continue
            was = None if name.colour is None else tokenizer.decode([name.colour]).strip()
            if name.colour is None:
                ids.insert(name.position, colour)
            else:
                ids[name.position] = colour
            now = tokenizer.decode([colour]).strip()
            changed.append({"target": name.target, "was": was, "now": now})
        if changed:
            answer.extras["mask_colour"] = {"rejected": answer.text, "changed": changed[::-1]}
            self._set_tokens(answer, ids)

    def _prefix_states(
        self, caches: Sequence[ImageCache], key: tuple[Any, ...], embeds: torch.Tensor
    ) -> list[PrefixStates]:
        """Per row, the LLM's states of the image's part of the prompt, `embeds` (B, shared, D):
        those kept with the row's image under `key` where there are some, else read in one pass
        (these positions hold no padding) and kept where they fit `kept_states_bytes`."""
        past = [cache.prefix_states.get(key) for cache in caches]
        missing = [row for row, states in enumerate(past) if states is None]
        if missing:
            read = self.backbone.prefix_states(embeds[missing])
            for row, states in zip(missing, read, strict=True):
                past[row] = states
                size = sum(t.numel() * t.element_size() for pair in states for t in pair)
                if size <= self.kept_states_bytes:
                    caches[row].prefix_states[key] = states
        return past  # type: ignore[return-value]

    def _image_prefix(self, prompts: Sequence[torch.Tensor]) -> int:
        """How many first positions of the prompts depend on their images alone, so that the
        LLM's states there can be kept with each image (`ImageCache.prefix_states`): those
        up to the last image token, where all prompts have the same tokens there and text after
        them, and no head prompt token (PixelLLM's location) comes before it; 0 where none."""
        first = prompts[0]
        images = (first == self.backbone.image_token_id).nonzero()
        if not len(images):
            return 0
        shared = int(images[-1]) + 1
        head_ids = getattr(self.head, "token_ids", {})
        placeholders = [head_ids[token] for token in self.head.prompt_tokens if token in head_ids]
        if bool(torch.isin(first[:shared], torch.tensor(placeholders, dtype=first.dtype)).any()):
            return 0
        same = all(
            len(prompt) > shared and torch.equal(prompt[:shared], first[:shared])
            for prompt in prompts
        )
        return shared if same else 0

    def _check_presence(
        self,
        caches: Sequence[ImageCache],
        answers: list[Answer],
        generations: list[Generation],
        check: tuple[float, Callable[[str], list[list[float]]], Callable[[], list[list[float]]]],
        generate: Callable[..., list[Generation]],
        skip: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """Decode again, in place, each answer that grounds a target and names a probe class
        the image does not show, with that class's names banned (`pixelreason.models.presence`).
        One that then grounds nothing keeps its answer where one probe part reads each banned
        class at `RESCUE_PRESENCE` or more, and otherwise says so in words (`NOTHING_FOUND`,
        given to the LLM to write, the target token banned). `check`: the threshold, the
        probes' scores by probe name and the probe's surest part's (`VisionProbe.strongest`);
        the rows in `skip` (settled by the request check) are left alone. An answer's words
        before its first banned one are kept as they are (`written_before`), not decoded
        again: greedy decoding would write them again."""
        labels = self.config.probe_labels
        threshold, probed, strongest = check
        presence = probed("probe")
        rows, banned, kept, rejected = [], [], [], []
        for row, answer in enumerate(answers):
            if not len(answer.scores) or row in skip:
                continue  # grounds nothing: "There is no teapot here." may name what is absent
            present = [score >= threshold for score in presence[row]]
            absent = [i for i in named_classes(answer.text, labels) if not present[i]]
            if absent:
                keep = [i for i, shown in enumerate(present) if shown]
                others = [i for i, shown in enumerate(present) if not shown]
                rows.append(row)
                banned.append(ban_list(self.preprocessor.tokenizer, labels, others, keep))
                written = generations[row].token_ids.tolist() if self.reuse_states else []
                kept.append(written_before(written, banned[-1]))
                rejected.append((answer.text, absent))
        if not rows:
            return
        redone = generate(rows, banned=banned, prefix=kept)
        target_id = getattr(self.head, "token_ids", {}).get(SEG_TOKEN)
        empty = (
            []
            if target_id is None
            else [i for i, g in enumerate(redone) if target_id not in g.token_ids]
        )
        rescued: set[int] = set()
        for i in empty:  # where one probe part reads what the answer grounds, it stays
            read = [strongest()[rows[i]][c] for c in rejected[i][1]]
            if min(read) >= RESCUE_PRESENCE:
                rescued.add(i)
                answers[rows[i]].extras["presence_rescue"] = {
                    "absent": [labels[c][0] for c in rejected[i][1]],
                    "read": [round(value, 3) for value in read],
                }
        empty = [i for i in empty if i not in rescued]
        if empty:
            said = self._say_nothing_found([rows[i] for i in empty], generate, target_id)
            for i, generation in zip(empty, said, strict=True):
                redone[i] = generation
        for i, (row, generation) in enumerate(zip(rows, redone, strict=True)):
            if i in rescued:
                continue
            text, absent = rejected[i]
            answer = self._masks_for(caches[row], generation)
            answer.extras["presence_check"] = {
                "rejected": text,
                "absent": [labels[c][0] for c in absent],
            }
            answers[row], generations[row] = answer, generation

    def _grounding_one(self, answers: Sequence[Answer], skip: set[int]) -> list[int]:
        """The rows, not in `skip`, whose answer grounds one target and names a probe class."""
        labels = self.config.probe_labels
        return [
            row
            for row, answer in enumerate(answers)
            if len(answer.scores) == 1 and row not in skip and named_classes(answer.text, labels)
        ]

    def _check_knowledge(
        self,
        caches: Sequence[ImageCache],
        queries: Sequence[str],
        answers: list[Answer],
        generations: list[Generation],
        statements: Statements,
        generate: Callable[..., list[Generation]],
        prompts: PromptBatch,
        skip: set[int] = frozenset(),  # type: ignore[assignment]
        absence: Callable[[], list[list[float]]] | None = None,
        adapter_prompts: PromptBatch | None = None,
    ) -> None:
        """The knowledge check (`pixelreason.models.knowledge`), in place, on the answers that
        ground one target, but not the rows in `skip` (settled by the request check).

        Each answer's bound statement (`statements`) is decoded one token first: one that goes
        on with a name of the answer's own class agrees with it and ends there. Where a
        statement names a class the probe finds and the answer does not ground, restates the
        query and is likelier for its class by `MARGIN` nats than for the answer's first
        grounded class, the answer is decoded again with every other class banned, and kept
        where it then grounds the stated class. The free statements of the rows that disagree
        are decoded now too, for the second part. `prompts`: the first part's (the knowledge
        adapter's LLM writes and weighs the bound statements, where the model has one) or the
        second's (the LLM itself writes and weighs the free ones).

        With `absence` (the second part, after the presence check; it gives each class's
        reading in the probe's surest part, `VisionProbe.strongest`): where the bound statement
        does not agree with the answer and the free statement names a class the probe does not
        find, restates the query and is likelier for its class by `ABSENT_MARGIN` nats than for
        the answer's, the answer says in words that the image does not show what was asked
        (`NOTHING_FOUND`); but where one probe part reads the class at `RESCUE_PRESENCE` or
        more, the answer is decoded again for it, as for the first part. `adapter_prompts` (a
        model with a knowledge adapter): the statement must also be likelier for its class by
        as much as the adapter's LLM reads it, after these prompts: the adapter knows facts the
        LLM lacks, and an answer whose class it finds about as likely is left as it is."""
        rows = self._grounding_one(answers, skip)
        going = statements.disagreeing(rows, [answer.text for answer in answers])
        if not going:
            return
        bound = absence is None  # the first part reads the bound statements, the second the free
        if bound:
            statements.texts(going, (True, False))  # both in one batch: the free ones for later
        candidates = self._statement_candidates(statements, going, queries, answers, bound)
        with self._knowing() if bound else contextlib.nullcontext():
            margins = self._statement_margins(prompts, statements.start, candidates)
        least = MARGIN if bound else ABSENT_MARGIN
        met = [c for c, margin in zip(candidates, margins, strict=True) if margin >= least]
        if adapter_prompts is not None and met:  # the adapter's LLM must find it so too
            with self._knowing():
                again = self._statement_margins(adapter_prompts, statements.start, met)
            met = [c for c, margin in zip(met, again, strict=True) if margin >= least]
        if absence is not None:  # one probe part reads the stated class: it is followed
            read = [c for c in met if absence()[c[0]][c[1]] >= RESCUE_PRESENCE]
            met = [c for c in met if c not in read]
            self._follow_statements(caches, answers, generations, [c[:3] for c in read], generate)
        if not met:
            return
        if bound:
            self._follow_statements(caches, answers, generations, [c[:3] for c in met], generate)
            return
        labels = self.config.probe_labels
        said = self._say_nothing_found([row for row, *_ in met], generate, statements.target_id)
        for (row, label, statement, _, _), generation in zip(met, said, strict=True):
            answer = self._masks_for(caches[row], generation)
            answer.extras["knowledge_check"] = {
                "rejected": answers[row].text,
                "statement": statement,
                "absent": labels[label][0],
            }
            answers[row], generations[row] = answer, generation

    def _rank_subjects(
        self,
        caches: Sequence[ImageCache],
        queries: Sequence[str],
        answers: list[Answer],
        generations: list[Generation],
        statements: Statements,
        generate: Callable[..., list[Generation]],
        prompts: PromptBatch,
        skip: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """The knowledge check's ranking part (`pixelreason.models.knowledge`), in place, on
        the answers that ground one target, to queries that ask for an object by what it is
        (`asks_by_knowledge`), but not the rows in `skip`: each class the probe finds, and the
        answer's, is scored as the statement's subject ("{start} {class}", the row's prompt read
        once for all of them: `Backbone.continuation_logprobs`), and where the likeliest is not
        the answer's class and is likelier than it by `RANK_MARGIN` nats, the answer is decoded
        again for it."""
        labels = self.config.probe_labels
        start = statements.start
        chosen, ranked = [], {}
        for row in self._grounding_one(answers, skip):
            if not asks_by_knowledge(queries[row], labels):
                continue
            answered = named_classes(answers[row].text, labels)[0]
            shown = [k for k, found in enumerate(statements.present[row]) if found]
            classes = list(dict.fromkeys([answered, *shown]))  # the answer's class first
            if len(classes) < 2:
                continue
            fact = asked_fact(queries[row])
            scored = self._subject_scores(caches[row], prompts, row, start, classes, fact)
            best = max(range(len(classes)), key=scored.__getitem__)
            margin = scored[best] - scored[0]
            if best and margin >= (RANK_MARGIN if fact is None else FACT_MARGIN):
                chosen.append((row, classes[best], f"{start} {labels[classes[best]][0]}".strip()))
                ranked[row] = round(margin, 2)
        self._follow_statements(caches, answers, generations, chosen, generate, ranked)

    def _rank_refusals(
        self,
        caches: Sequence[ImageCache],
        queries: Sequence[str],
        answers: list[Answer],
        generations: list[Generation],
        statements: Statements,
        generate: Callable[..., list[Generation]],
        prompts: PromptBatch,
        skip: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """The ranking part's second step (`pixelreason.models.knowledge`), in place, on the
        answers that ground nothing, to queries that ask for an object by what it is
        (`asks_by_knowledge`), but not the rows in `skip`: every class is scored as the
        statement's subject, and where the likeliest class the probe finds is less than
        `REFUSAL_MARGIN` nats behind the likeliest of all, the answer is decoded again for it."""
        labels = self.config.probe_labels
        rows = [
            row
            for row, answer in enumerate(answers)
            if not len(answer.scores)
            and row not in skip
            and any(statements.present[row])
            and asks_by_knowledge(queries[row], labels)
        ]
        if not rows:
            return
        start = statements.start
        chosen = []
        for row in rows:
            fact = asked_fact(queries[row])
            scored = self._subject_scores(
                caches[row], prompts, row, start, range(len(labels)), fact
            )
            shown = [k for k, found in enumerate(statements.present[row]) if found]
            best = max(shown, key=scored.__getitem__)
            behind = max(scored) - scored[best]
            if behind < REFUSAL_MARGIN:
                chosen.append((row, best, behind))
        if not chosen:
            return
        # a refusal has no words before a class name to keep: the answer is given whole
        tokenizer = self.preprocessor.tokenizer
        given = [
            tokenizer.encode(f"It is the {labels[k][0]} {SEG_TOKEN}.", add_special_tokens=False)
            for _, k, _ in chosen
        ]
        redone = generate([row for row, *_ in chosen], prefix=given)
        for (row, k, behind), generation in zip(chosen, redone, strict=True):
            answer = self._masks_for(caches[row], generation)
            if k not in named_classes(answer.text, labels):
                continue
            answer.extras["knowledge_refusal"] = {
                "rejected": answers[row].text,
                "subject": f"{start} {labels[k][0]}".strip(),
                "behind": round(behind, 2),
            }
            answers[row], generations[row] = answer, generation

    def _subject_scores(
        self,
        cache: ImageCache,
        prompts: PromptBatch,
        row: int,
        start: str,
        classes: Iterable[int],
        fact: str | None = None,
    ) -> list[float]:
        """Each of `classes` scored by the knowledge adapter's LLM (where the model has one),
        its prompt read once for all of them (`Backbone.continuation_logprobs`): as the
        statement's subject ("{start} {class}") after the row's prompt, or, where the query
        states its `fact` (`asked_fact`), as the subject of the whole statement of it ("{start}
        {class} {fact}.") after the text question that asks for what holds it ("What {fact}?",
        on the row's image: the form ReasonWorld's text QA teaches facts in)."""
        tokenizer = self.preprocessor.tokenizer
        labels = self.config.probe_labels
        texts = [
            f"{start} {labels[k][0]}"
            if fact is None
            else f"{fact_subject(start, labels[k])} {fact}."
            for k in classes
        ]
        subjects = [
            torch.tensor(tokenizer.encode(text, add_special_tokens=False), device=self.device)
            for text in texts
        ]
        with self._knowing():
            if fact is None:
                prompt, past = prompts.unread(row), prompts.prefix(row)
            else:
                prompt, past = self._question_prompt(cache, f"What {fact}?")
            return self.backbone.continuation_logprobs(prompt, subjects, past)

    def _question_prompt(
        self, cache: ImageCache, question: str
    ) -> tuple[torch.Tensor, PrefixStates | None]:
        """The prompt (P, D) that asks `question` of the cached image, as the LLM in place
        reads it, after the states of its image's part kept with the image for that LLM
        (`_prefix_states`; the knowledge adapter's under `KNOWING_KEY`), and those states
        (None, and the prompt whole, where there are none)."""
        ids = self.preprocessor.encode([Turn(question)], image=True).input_ids
        shared = self._image_prefix([ids]) if self.reuse_states else 0
        key = tuple(ids[:shared].tolist())
        if self._reads_adapter():
            key = (KNOWING_KEY, *key)
        past = cache.prefix_states.get(key) if shared else None
        ids = ids[None].to(self.device)
        embeds = self.head.embed_prompt(
            ids, self.backbone.embed(ids, cache.features), cache.features, [None]
        )[0]
        return (embeds, None) if past is None else (embeds[shared:], past)

    def _statement_candidates(
        self,
        statements: Statements,
        rows: Sequence[int],
        queries: Sequence[str],
        answers: Sequence[Answer],
        bound: bool,
    ) -> list[tuple[int, int, str, str, int]]:
        """(row, stated class, statement, rest, answered class) for each of `rows` whose bound
        (or free) statement names a class its answer does not name, that the probe finds (or
        does not find), and restates the row's query (`restated_share`)."""
        labels = self.config.probe_labels
        said = statements.texts(rows, (bound,))
        candidates = []
        for row in rows:
            stated = stated_class(said[row, bound], labels)
            if stated is None:
                continue
            label, rest = stated
            answered = named_classes(answers[row].text, labels)
            if (
                label in answered
                or statements.present[row][label] != bound
                or restated_share(rest, queries[row], labels) < RESTATED
            ):
                continue
            candidates.append((row, label, said[row, bound], rest, answered[0]))
        return candidates

    def _statement_margins(
        self,
        prompts: PromptBatch,
        start: str,
        candidates: Sequence[tuple[int, int, str, str, int]],
    ) -> list[float]:
        """For each (row, stated class, statement, rest, answered class): by how many nats the
        LLM finds "{start} {stated}{rest}" likelier than "{start} {answered}{rest}" after the
        row's prompt, all in one teacher-forced pass."""
        if not candidates:
            return []
        labels = self.config.probe_labels
        texts, rows = [], []
        for row, stated, _, rest, answered in candidates:
            texts += [f"{start} {labels[k][0]}{rest.rstrip()}" for k in (stated, answered)]
            rows += [row, row]
        scores = self._continuation_logprobs(prompts, rows, texts)
        return [scores[i] - scores[i + 1] for i in range(0, len(scores), 2)]

    def _follow_statements(
        self,
        caches: Sequence[ImageCache],
        answers: list[Answer],
        generations: list[Generation],
        chosen: Sequence[tuple[int, int, str]],
        generate: Callable[..., list[Generation]],
        ranked: dict[int, float] | None = None,
    ) -> None:
        """Decode again, in place, each (row, stated class, statement) of `chosen` with every
        other class banned; kept where it then grounds the stated class. `ranked`: the ranking
        part's margins by row, noted under extras "knowledge_ranking" rather than
        "knowledge_check" (its statement is only the subject: " A lemon")."""
        if not chosen:
            return
        labels = self.config.probe_labels
        tokenizer = self.preprocessor.tokenizer
        bans, kept, named = [], [], []
        for row, label, _ in chosen:
            others = [i for i in range(len(labels)) if i != label]
            bans.append(ban_list(tokenizer, labels, others, [label]))
            before = written_before(generations[row].token_ids.tolist(), bans[-1])
            kept.append(before if self.reuse_states else [])
            # where the LLM does not go on to the stated class itself: its name written for it
            name = labels[label][0]
            name = " " + name if before else name[:1].upper() + name[1:]
            named.append(before + tokenizer.encode(name, add_special_tokens=False))
        rows = [row for row, *_ in chosen]
        redone = generate(rows, banned=bans, prefix=kept)
        new = [self._masks_for(caches[row], g) for row, g in zip(rows, redone, strict=True)]
        again = [i for i, a in enumerate(new) if chosen[i][1] not in named_classes(a.text, labels)]
        if again:
            forced = generate(
                [rows[i] for i in again],
                banned=[bans[i] for i in again],
                prefix=[named[i] for i in again],
            )
            for i, generation in zip(again, forced, strict=True):
                redone[i], new[i] = generation, self._masks_for(caches[rows[i]], generation)
        for (row, label, statement), generation, answer in zip(chosen, redone, new, strict=True):
            if label not in named_classes(answer.text, labels):
                continue
            if ranked is None:
                answer.extras["knowledge_check"] = {
                    "rejected": answers[row].text,
                    "statement": statement,
                }
            else:
                answer.extras["knowledge_ranking"] = {
                    "rejected": answers[row].text,
                    "subject": statement,
                    "margin": ranked[row],
                }
            answers[row], generations[row] = answer, generation

    def _say_nothing_found(
        self, rows: Sequence[int], generate: Callable[..., list[Generation]], target_id: int
    ) -> list[Generation]:
        """The rows' answers that say in words that the image does not show what was asked:
        `NOTHING_FOUND`, given to the LLM to write, then its own words, the target token
        banned."""
        prefix = self.preprocessor.tokenizer.encode(NOTHING_FOUND, add_special_tokens=False)
        return generate(rows, banned=[[[target_id]]] * len(rows), prefix=[prefix] * len(rows))

    def _continuation_logprobs(
        self, prompts: PromptBatch, rows: Sequence[int], texts: Sequence[str]
    ) -> list[float]:
        """Log-probability the LLM gives each text as the continuation of its row's prompt:
        each row's prompt is read once, after its prefix states, for all of its texts
        (`Backbone.continuation_logprobs`)."""
        tokenizer = self.preprocessor.tokenizer
        by_row: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            by_row.setdefault(row, []).append(index)
        scores = [0.0] * len(texts)
        for row, indices in by_row.items():
            ids = [
                torch.tensor(
                    tokenizer.encode(texts[i], add_special_tokens=False), device=self.device
                )
                for i in indices
            ]
            read = self.backbone.continuation_logprobs(
                prompts.unread(row), ids, prompts.prefix(row)
            )
            for i, score in zip(indices, read, strict=True):
                scores[i] = score
        return scores

    def _read_after_prompts(
        self, prompts: PromptBatch, rows: Sequence[int], continuations: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[int]]:
        """Teacher-forced passes over each row's prompt (its real positions after its prefix
        states, which are not read again) followed by token ids, right-padded, so causal
        attention is exact for every real token; rows whose prefix states are as long share a
        pass. Returns per row the last-layer states (T, D) of the positions read, and its
        prompt's number of positions read."""
        groups: dict[int, list[int]] = {}
        prefixes = [prompts.prefix(row) for row in rows]
        for index, prefix in enumerate(prefixes):
            groups.setdefault(0 if prefix is None else prefix[0][0].shape[2], []).append(index)
        unread = [prompts.unread(row) for row in rows]
        hidden: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        for indices in groups.values():
            sequences = [
                torch.cat([unread[i], self.backbone.embed(continuations[i][None], None)[0]])
                for i in indices
            ]
            length = max(len(sequence) for sequence in sequences)
            padded = prompts.embeds.new_zeros((len(sequences), length, prompts.embeds.shape[-1]))
            for place, sequence in enumerate(sequences):
                padded[place, : len(sequence)] = sequence
            past = None if prefixes[indices[0]] is None else [prefixes[i] for i in indices]
            with torch.no_grad():
                out = self.backbone(padded, None, past)
            for place, i in enumerate(indices):
                hidden[i] = out.hidden[place]
        return hidden, [len(prompt) for prompt in unread]

    def _check_request(
        self,
        caches: Sequence[ImageCache],
        queries: Sequence[str],
        answers: list[Answer],
        generations: list[Generation],
        thresholds: tuple[float, float, float],
        probed: Callable[[str], list[list[float]]],
        generate: Callable[..., list[Generation]],
        prompts: PromptBatch,
    ) -> set[int]:
        """The request check, in place, for queries that ask for one class by an explicit
        description (`requested_class`, "the red mug"), with `thresholds` (presence, request,
        colour); returns the rows it settled (changed, or with the asked colour checked), which
        the other checks leave alone.

        - An answer that grounds the class (or grounds without naming one) where the probe finds
          the class below the presence threshold, or the colour probe finds the asked "COLOUR
          CATEGORY" below the colour threshold, becomes "There is no red mug in this image."
          (`refusal`, given to the LLM to write, the target token banned).
        - One that grounds the class in another colour where the colour probe finds the asked
          one at the request threshold gets the asked colour word (`_rewrite`).
        - One that refuses (grounds nothing, names no other class) where the probes find what it
          asks for at the request threshold is decoded again with the refusal words banned, and
          kept if it grounds a target.
        """
        absent_below, found_at, colour_below = thresholds
        labels = self.config.probe_labels
        colour_labels = self.config.colour_probe_labels
        tokenizer = self.preprocessor.tokenizer
        target_id = getattr(self.head, "token_ids", {}).get(SEG_TOKEN)
        requests = [requested_class(query, labels, colour_labels) for query in queries]
        if target_id is None or not any(requests):
            return set()  # nothing asked by name, or targets written as text (SAM4MLLM)
        presence = probed("probe")
        colours = probed("colour_probe") if self.colour_probe is not None else None
        settled: set[int] = set()
        redo: dict[int, tuple[str, str]] = {}  # row -> (what it did, the answer's forced start)
        edits: list[Edit] = []
        for row, (request, answer) in enumerate(zip(requests, answers, strict=True)):
            if request is None:
                continue
            found = presence[row][request.label]
            asked = (
                found if colours is None or request.colour is None else colours[row][request.colour]
            )
            if not len(answer.scores):
                if (
                    set(mentioned_classes(answer.text, labels)) <= {request.label}
                    and min(found, asked) >= found_at
                ):
                    redo[row] = ("refused", "")
                continue
            if not set(named_classes(answer.text, labels)) <= {request.label}:
                continue
            if request.colour is not None:
                settled.add(row)  # its colour is checked here, against the asked one
            if found < absent_below or (request.colour is not None and asked < colour_below):
                redo[row] = ("grounded", refusal(request, labels))
            elif request.colour is not None and asked >= found_at:
                ids = generations[row].token_ids.tolist()
                for slot in colour_slots(ids, tokenizer, colour_labels, target_id):
                    tokens = {label: token for token, label in slot.others.items()}
                    if request.colour in tokens:  # another colour of the asked category
                        check = {"rejected": answer.text, "was": "recoloured"}
                        edits.append(
                            Edit(row, slot.position, tokens[request.colour], "request_check", check)
                        )
                        break
        bans = {"grounded": [[target_id]], "refused": refusal_bans(tokenizer)}
        banned, forced = [], []
        for row, (kind, start) in redo.items():
            banned.append(bans[kind])
            if start:
                forced.append(tokenizer.encode(start, add_special_tokens=False))
            else:
                written = generations[row].token_ids.tolist() if self.reuse_states else []
                forced.append(written_before(written, bans[kind]))
        redone = generate(list(redo), banned=banned, prefix=forced) if redo else []
        for (row, (kind, _)), generation in zip(redo.items(), redone, strict=True):
            answer = self._masks_for(caches[row], generation)
            if kind == "refused" and not len(answer.scores):
                continue  # the LLM has nothing else to say: its refusal stands
            answer.extras["request_check"] = {"rejected": answers[row].text, "was": kind}
            answers[row], generations[row] = answer, generation
            settled.add(row)
        self._rewrite(caches, answers, generations, prompts, edits)
        return settled | {edit.row for edit in edits}

    def _check_colour(
        self,
        caches: Sequence[ImageCache],
        answers: list[Answer],
        generations: list[Generation],
        check: tuple[float, Callable[[str], list[list[float]]]],
        prompts: PromptBatch,
        skip: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """Rewrite, in place, each answer whose first grounded "COLOUR CATEGORY" the colour
        probe does not find while it finds that category in other colours: the colour word
        becomes the one the probe finds most for that category, and the states after it are
        recomputed in one teacher-forced pass over prompt and answer
        (`pixelreason.models.presence`), so the masks follow the new words. Before that, a
        colour word its category never has ("the red lemon <SEG>", `foreign_colour`: the LLM
        writes them off its training distribution, on zero-shot facts above all, and the mask
        follows the colour to another object) is dropped where the category comes in one
        colour ("the lemon", as answers name it) and otherwise replaced in the same way.
        `check`: the threshold and the probes' scores by probe name; rows in `skip` are left
        alone."""
        labels = self.config.colour_probe_labels
        tokenizer = self.preprocessor.tokenizer
        target_id = getattr(self.head, "token_ids", {}).get(SEG_TOKEN)
        if target_id is None:
            return  # targets written as text (SAM4MLLM): no one token marks them
        threshold, probed = check
        presence = probed("colour_probe")
        edits = []
        for row, answer in enumerate(answers):
            if not len(answer.scores) or row in skip:
                continue
            ids = generations[row].token_ids
            scores = presence[row]
            foreign = foreign_colour(ids.tolist(), tokenizer, labels, target_id)
            if foreign is not None:  # "the red lemon": a colour its category never has
                position, own = foreign
                category = labels[next(iter(own.values()))].partition(" ")[2]
                wrote = tokenizer.decode(ids[position : position + 1]).strip()
                check = {"rejected": answer.text, "absent": f"{wrote} {category}"}
                # one colour: answers name the category alone ("the lemon"); else the colour
                # the probe finds most for it
                token = None if len(own) == 1 else max(own, key=lambda t: scores[own[t]])
                edits.append(Edit(row, position, token, "colour_check", check))
                continue
            found = recolour(
                colour_slots(ids.tolist(), tokenizer, labels, target_id), scores, threshold
            )
            if found is None:
                continue
            slot, colours = found
            colour = max(colours, key=lambda token: scores[slot.others[token]])
            check = {"rejected": answers[row].text, "absent": labels[slot.label]}
            edits.append(Edit(row, slot.position, colour, "colour_check", check))
        self._rewrite(caches, answers, generations, prompts, edits)

    def _rewrite(
        self,
        caches: Sequence[ImageCache],
        answers: list[Answer],
        generations: list[Generation],
        prompts: PromptBatch,
        edits: Sequence[Edit],
    ) -> None:
        """Replace one token of each edited row's answer, in place, and recompute the states
        from it on in a teacher-forced pass over the edited answer after its prompt
        (`_read_after_prompts`), so the masks follow the new words; each answer keeps its
        earlier checks' extras."""
        if not edits:
            return
        edited_ids = []
        for edit in edits:
            ids = generations[edit.row].token_ids
            put = [] if edit.token is None else [edit.token]
            middle = torch.tensor(put, dtype=ids.dtype)
            edited_ids.append(torch.cat([ids[: edit.position], middle, ids[edit.position + 1 :]]))
        states, lengths = self._read_after_prompts(
            prompts, [edit.row for edit in edits], [ids[:-1] for ids in edited_ids]
        )
        for index, (edit, edited, prompt_length) in enumerate(
            zip(edits, edited_ids, lengths, strict=True)
        ):
            first = generations[edit.row]
            start = prompt_length - 1 + edit.position  # the state that predicted the new token
            hidden = states[index][start : prompt_length - 1 + len(edited)]
            joined = Generation(
                token_ids=edited,
                hidden=torch.cat([first.hidden[: edit.position], hidden.to(first.hidden.dtype)]),
            )
            answer = self._masks_for(caches[edit.row], joined)
            for key in CHECK_KEYS:
                if key in answers[edit.row].extras:
                    answer.extras[key] = answers[edit.row].extras[key]
            answer.extras[edit.check] = edit.extras
            answers[edit.row], generations[edit.row] = answer, joined

    def _answer_text(self, token_ids: torch.Tensor) -> tuple[str, str]:
        """An answer's text as shown (each target as `<SEG>`) and as the model wrote it."""
        raw = self.preprocessor.decode(token_ids)
        return self.head.display_text(raw), raw

    def _masks_for(self, cache: ImageCache, generation: Generation) -> Answer:
        ids = generation.token_ids[None]
        prediction = self.head(
            HeadInputs(
                token_ids=ids,
                states=generation.hidden[None],
                valid=torch.ones_like(ids, dtype=torch.bool),
                context=cache.context,
                images=[cache.image],
            )
        )
        logits = self.preprocessor.masks_to_image(prediction.logits[0], cache.image)
        cuts = self._cuts(cache, logits.shape[-2:]) if len(logits) > 1 else None
        logits, splits = split_duplicates(logits, self.config.instance_overlap, cuts=cuts)
        text, raw = self._answer_text(generation.token_ids)
        extras = dict(prediction.extras[0]) if prediction.extras else {}
        if splits:
            extras["instance_split"] = [
                {"masks": list(split.masks), "region_pixels": list(split.regions)}
                for split in splits
            ]
        if text != raw:  # what the model wrote, for replaying the conversation
            extras["raw_text"] = raw
        return Answer(
            text=text,
            token_ids=generation.token_ids.cpu(),
            mask_logits=logits.float().cpu(),
            scores=prediction.scores[0].float().cpu(),
            extras=extras,
        )


def _build_backbone(config: ModelConfig) -> Backbone:
    """A randomly initialised backbone of the config's architecture (weights loaded later)."""
    return Backbone(build_llava(config.llava, config.vision_stem, config.vision_feature_norm))


def _make_preprocessor(
    config: ModelConfig,
    tokenizer: PreTrainedTokenizerBase,
    backbone: Backbone,
    head: MaskHead,
    backbone_processor: Any,
    head_processor: Any,
) -> Preprocessor:
    image_token_id = token_id(tokenizer, IMAGE_TOKEN)
    if image_token_id != backbone.image_token_id:
        raise CheckpointError(
            f"tokenizer's {IMAGE_TOKEN} id {image_token_id} != model's {backbone.image_token_id}"
        )
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the model only {vocab}")
    missing = [t for t in head.tokens if t not in tokenizer.get_vocab()]
    if missing:
        raise CheckpointError(f"the tokenizer lacks the {config.head} head's tokens {missing[:3]}")
    return Preprocessor(
        tokenizer,
        backbone_processor,
        head_processor,
        image_token_id=image_token_id,
        num_image_tokens=backbone.num_image_tokens,
        system_prompt=config.system_prompt,
        target_text=head.target_text,
        prompt_token_ids=[token_id(tokenizer, t) for t in head.prompt_tokens],
    )


def _same_geometry(
    logits: Sequence[torch.Tensor], images: Sequence[ImageInputs]
) -> list[list[int]]:
    """Indices of the items with at least one mask, grouped by image geometry (original size
    and size inside the head's input), in order of first appearance."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for index, (item, image) in enumerate(zip(logits, images, strict=True)):
        if item.shape[0]:
            key = (tuple(image.original_size), image.head_resized_size)
            groups.setdefault(key, []).append(index)
    return list(groups.values())


def _pad_prompts(
    prompts: Sequence[torch.Tensor], pad_id: int, shared: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, T) and attention mask (B, T) of prompts padded to one length on the
    left, for generation: each ends at the last position. The first `shared` positions (the
    same in every prompt, see `PixelReasonModel._image_prefix`) stay in front, and the padding
    goes after them, so they can come from states kept with the image."""
    length = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        start = length - len(prompt) + shared
        input_ids[row, :shared] = prompt[:shared]
        input_ids[row, start:] = prompt[shared:]
        attention[row, :shared] = 1
        attention[row, start:] = 1
    return input_ids, attention


def _pad_rows(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack per-sample (T_i, ...) tensors into (B, length, ...), zero-padded at the end."""
    out = rows[0].new_zeros((len(rows), length, *rows[0].shape[1:]))
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


def _tied_keys(model: nn.Module) -> set[str]:
    """State-dict keys that alias another tensor (safetensors stores them once)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        pointer = tensor.data_ptr()
        if pointer in seen:
            tied.add(name)
            tied.add(seen[pointer])
        else:
            seen[pointer] = name
    return tied
