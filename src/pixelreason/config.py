"""Model configuration: one dataclass saved next to the weights, and named presets."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pixelreason.errors import CheckpointError
from pixelreason.utils.files import atomic_write_bytes

#: Key of a SAM config (ours, not transformers') naming its image encoder (`models.sam`).
ENCODER_KEY = "image_encoder"

CONFIG_NAME = "pixelreason.json"
FORMAT_VERSION = 1
#: The bundled model `--model` defaults to.
DEFAULT_MODEL = "default"
#: The bundled model of each method (a mask head: one paper's design), for `--method`.
METHOD_MODELS = {
    "lisa": DEFAULT_MODEL,
    "pixellm": "default-pixellm",
    "sam4mllm": "default-sam4mllm",
    "pixelllm": "default-pixelllm",
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture.

    `llava` and `sam` are the `to_dict()` of transformers' `LlavaConfig` and `SamConfig`, so any
    LLaVA-family backbone and any SAM size fit; `head` names the mask head (see
    `pixelreason.models.heads.HEADS`) and `head_args` its options.
    """

    llava: dict[str, Any]
    sam: dict[str, Any] | None
    head: str = "lisa"
    head_args: dict[str, Any] = field(default_factory=dict)
    #: Side of the square image the backbone's vision tower sees.
    backbone_image_size: int = 224
    #: Longest side of the image the SAM encoder sees (padded to a square).
    sam_image_size: int = 1024
    #: Chat template pieces, LLaVA-1.5 style.
    system_prompt: str = ""
    max_new_tokens: int = 64
    #: Classes of the auxiliary vision probes (`pixelreason.models.probe`), 0 for none.
    probe_classes: int = 0
    #: Probe the mask head's image embedding too (SAM heads), not only the LLM's image features.
    probe_mask_head: bool = True
    #: The words an answer calls each probe class 1, 2, ... by (class 0 is background), e.g. a
    #: category's singular and plural; the presence check needs them.
    probe_labels: list[list[str]] = field(default_factory=list)
    #: The presence check at inference (`pixelreason.models.presence`; 0: off): an answer that
    #: grounds a target and names a probe class whose probability in every image cell stays
    #: below this is decoded again with that class's names banned.
    presence_threshold: float = 0.0
    #: The presence check (and the request check) reads the mean of both category probes'
    #: class presence, the backbone probe's and the mask-head probe's (SAM's finer grid finds
    #: small objects), not the backbone probe's alone. For probes fitted for it (`task: probe`
    #: with a `presence` loss); False for models without a mask-head probe.
    presence_mask_head: bool = False
    #: Names of the classes 1, 2, ... of the colour probe, each a colour word and then a
    #: category's name ("red apple"; class 0 is background); empty: no colour probe. The probe
    #: is a per-cell classifier like the category probe, fitted on the frozen image features
    #: (`task: colour-probe` recipes); the colour check needs it.
    colour_probe_labels: list[str] = field(default_factory=list)
    #: The colour probe has a mask-head part too, on SAM's image embedding (SAM heads), and the
    #: colour and request checks read the mean of both parts' presence of a "COLOUR CATEGORY"
    #: pair, as `presence_mask_head` does for the category probe. For colour probes fitted with
    #: a `presence` loss (`task: colour-probe`); False: the backbone part alone.
    colour_mask_head: bool = False
    #: The colour check at inference (`pixelreason.models.presence`; 0: off): an answer that
    #: grounds "COLOUR CATEGORY" where the colour probe finds that pair below this in every
    #: cell, but finds the category in another colour, gets the colour word the probe finds
    #: most for that category instead.
    colour_threshold: float = 0.0
    #: The request check at inference (`pixelreason.models.presence`; 0: off; needs the
    #: probe): a request for one class by an explicit description ("the red mug") is answered
    #: in words where the probe finds no such class (below `presence_threshold`), and a refusal
    #: of it is decoded again where the probes find it with at least this probability.
    request_threshold: float = 0.0
    #: The knowledge check at inference (`pixelreason.models.knowledge`; "": off; needs the
    #: probe): the words a text answer starts with in the model's training data (" A" for
    #: ReasonWorld's "A lemon tastes very sour."). The LLM states from them what the query asks
    #: about, and an answer grounding another class is decoded again for the stated one, where
    #: the statement restates the query and the LLM finds it clearly likelier for its class;
    #: after the presence check, an answer that the LLM's statement with no class banned
    #: contradicts with a class the probe does not find says that the image does not show it.
    knowledge_start: str = ""
    #: The knowledge check's ranking part (needs `knowledge_start`): an answer grounding one
    #: class, to a query that asks for no class by name and about no relation ("What here is
    #: squeezed to make lemonade?"), follows the class of the image the LLM finds likeliest to
    #: start its statement (" A lemon"), where that one is clearly likelier than the answer's;
    #: where the query states its fact, the likeliest as the subject of the fact's statement
    #: after the text question ("What is squeezed to make lemonade?"), which also drops from a
    #: several-target answer the classes whose statement is far less likely.
    knowledge_ranking: bool = False
    #: The knowledge check's bound statements and the ranking part's subjects read the model's
    #: knowledge adapter (`pixelreason.models.adapter`: a LoRA on the LLM trained on text,
    #: loaded from the model directory where it has one) in place of the LLM as it answers
    #: (the absence part's free statements always read the LLM); False: they read the LLM.
    knowledge_adapter: bool = True
    #: The instance split at inference (`pixelreason.models.instances`; 0: off): masks of one
    #: answer that repeat each other (IoU >= this) each take one region of their union, where
    #: the union falls apart into separate regions. 0.5 (the same on 0.3-0.5) raised every
    #: bundled model's multi-target score on ReasonWorld's val stream.
    instance_overlap: float = 0.5
    #: The instance question at inference (`pixelreason.models.instances`; "": off; needs
    #: `probe_labels` for the classes' names): an answer that grounds one class with several
    #: targets ("the orange <SEG> and the orange <SEG>") asks the model this question about
    #: the class (`{plural}`: its plural name, `{name}`: its singular), the form its
    #: semantic-segmentation training answered with one mask over every instance ("Where are
    #: the {plural}?"), and the class's targets take that mask's regions, one instance each.
    instance_question: str = ""
    #: With the instance question, regions of its answer beyond the class's targets become
    #: targets of their own (the answer grounds them as "and the {name} <SEG>") rather than
    #: parts of the target surest of them: three oranges get three masks, not two.
    instance_spare: bool = False
    #: Mask names at inference (`pixelreason.models.mask_names`; needs the probes' labels):
    #: each target the answer names by no class ("Sure, it is <SEG>.") is named by the class
    #: the category probe reads inside its final mask (with `instance_spare`, each separate
    #: region a target of its own), and each target named "COLOUR CATEGORY" (or "the
    #: CATEGORY") gets the colour the colour probe reads there, so that two apples of
    #: different colours are not both "red".
    mask_names: bool = False
    #: Mask names and the relations' "same colour" read colours off the image's pixels inside
    #: each mask (`pixelreason.models.pixel_colours`, counts kept beside the weights and written
    #: by `pixelreason fit-colours`) rather than off the colour probe's 8 x 8 cells.
    colour_pixels: bool = False
    #: Object cuts at inference (`pixelreason.models.objects`, a network kept beside the
    #: weights and written by `pixelreason fit-object-cuts`): the instance split and the
    #: instance question part touching objects of one class where a class's mask has fewer
    #: regions than the answer has targets of it, and a single target's mask (with
    #: `colour_pixels`) drops the touching pieces whose pixels read as another class.
    object_cuts: bool = False
    #: The category map at inference (`pixelreason.models.category_map`, a network kept beside
    #: the weights and written by `pixelreason fit-category-map`): a single target's mask that
    #: lies mostly off the pixels of the category its answer names moves onto the map's region
    #: of that category (the one whose pixels read the named colour, with `colour_pixels`);
    #: relations take their candidates from the map's regions; and a request for one class by
    #: name that the answer misses grounds the map's region of it.
    category_map: bool = False
    #: Colour requests at inference (needs `colour_pixels` and the instance question): where
    #: the query asks for one "COLOUR CATEGORY" by name ("Segment the white sock.") and the
    #: answer refuses it or grounds another object, or the class in another colour as the
    #: pixels read it, the answer becomes the instance question's region whose pixels read
    #: the asked colour, where one does.
    colour_requests: bool = False
    #: Plural requests at inference (needs the probe's labels and the instance question):
    #: where the query asks for a class in the plural by name ("Where are the leaves?") and the
    #: answer grounds fewer than two targets of it ("... the potato <SEG> and the broccoli
    #: <SEG>."), the answer becomes the instance question's regions, one target each ("The leaf
    #: <SEG> and the leaf <SEG>.", which mask names then colour).
    plural_requests: bool = False
    #: Group members at inference (`pixelreason.models.members`; needs the probe and the
    #: instance question): an answer that grounds two or more targets also grounds the
    #: classes the LLM finds about as likely to start it ("Where are the kitchen items?":
    #: the cup beside the bottle it names).
    group_members: bool = False
    #: Relations at inference (`pixelreason.models.relations`; needs the instance question): a
    #: question about a relation in plain English ("the cup left of the plant", "the biggest
    #: fruit", "... What is closest to it?") is answered by asking the model where the
    #: candidates and the reference are and choosing among their regions by geometry.
    relations: bool = False
    #: Region snap at inference (`pixelreason.models.snap`; 0: off): the final masks follow
    #: the image's colour regions, found by Felzenszwalb's graph segmentation at this scale;
    #: a region is in a mask where the mask's mean probability over it reaches `snap_share`.
    #: For images whose objects differ from their surroundings in colour (ReasonWorld's).
    snap_scale: float = 0.0
    snap_share: float = 0.3
    #: The vision tower's patch embedding: "patch" (one strided convolution, CLIP's) or "conv"
    #: (a stack of 3x3 stride-2 convolutions, `ConvStem`, for towers trained from scratch).
    vision_stem: str = "patch"
    #: Normalise the vision features before the projector with the tower's final LayerNorm
    #: (`normalise_vision_features`): for towers trained from scratch, off for public LLaVA.
    vision_feature_norm: bool = False
    #: Preset this config came from (informational).
    preset: str | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"unknown keys in model config: {', '.join(unknown)}")
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"model config format {version} is newer than this pixelreason understands "
                f"({FORMAT_VERSION}); upgrade pixelreason"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise CheckpointError(f"invalid model config: {exc}") from exc

    def save(self, directory: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(Path(directory) / CONFIG_NAME, text.encode())

    @classmethod
    def load(cls, directory: str | Path) -> ModelConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(
                f"not a pixelreason model directory (no {CONFIG_NAME}): {directory}"
            )
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"corrupt {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"corrupt {path}: expected a JSON object")
        return cls.from_dict(data)


def _llava(
    *,
    vocab_size: int,
    image_size: int,
    patch_size: int,
    vision_hidden: int,
    vision_layers: int,
    vision_heads: int,
    text_hidden: int,
    text_layers: int,
    text_heads: int,
    text_kv_heads: int,
    max_positions: int,
) -> dict[str, Any]:
    """A LLaVA config (CLIP vision tower + 2-layer MLP projector + Llama), written out in full."""
    return {
        "model_type": "llava",
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision_hidden,
            "intermediate_size": 4 * vision_hidden,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "projection_dim": vision_hidden,
        },
        "text_config": {
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": text_hidden,
            "intermediate_size": 4 * text_hidden,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads,
            "num_key_value_heads": text_kv_heads,
            "max_position_embeddings": max_positions,
            "tie_word_embeddings": False,
        },
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu",
        "tie_word_embeddings": False,
    }


def _sam(
    *,
    image_size: int,
    patch_size: int,
    encoder_hidden: int,
    encoder_layers: int,
    encoder_heads: int,
    window_size: int,
    global_attn_indexes: list[int],
    prompt_dim: int,
    decoder_heads: int,
) -> dict[str, Any]:
    """A SAM config (ViT image encoder + prompt encoder + two-way mask decoder)."""
    return {
        "vision_config": {
            "hidden_size": encoder_hidden,
            "output_channels": prompt_dim,
            "num_hidden_layers": encoder_layers,
            "num_attention_heads": encoder_heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "window_size": window_size,
            "global_attn_indexes": global_attn_indexes,
            "mlp_dim": 4 * encoder_hidden,
            "num_pos_feats": prompt_dim // 2,
            # SAM's default (1e-10) suits loading pretrained weights, not training from scratch.
            "initializer_range": 0.02,
        },
        "prompt_encoder_config": {
            "hidden_size": prompt_dim,
            "image_size": image_size,
            "patch_size": patch_size,
            "mask_input_channels": 16,
        },
        "mask_decoder_config": {
            "hidden_size": prompt_dim,
            "mlp_dim": 4 * prompt_dim,
            "num_hidden_layers": 2,
            "num_attention_heads": decoder_heads,
            "iou_head_hidden_dim": prompt_dim,
        },
    }


def tiny() -> ModelConfig:
    """Smallest working model (tests): 16 image tokens, 64-dim LLM, 64-px SAM."""
    return ModelConfig(
        llava=_llava(
            vocab_size=0,  # set from the tokenizer when the model is built
            image_size=32,
            patch_size=8,
            vision_hidden=32,
            vision_layers=2,
            vision_heads=2,
            text_hidden=64,
            text_layers=2,
            text_heads=4,
            text_kv_heads=2,
            max_positions=512,
        ),
        sam=_sam(
            image_size=64,
            patch_size=8,
            encoder_hidden=32,
            encoder_layers=2,
            encoder_heads=2,
            window_size=4,
            global_attn_indexes=[1],
            prompt_dim=32,
            decoder_heads=2,
        ),
        head="lisa",
        backbone_image_size=32,
        sam_image_size=64,
        max_new_tokens=32,
        preset="tiny",
    )


def small() -> ModelConfig:
    """CPU-trainable model (about 10M parameters): 64 image tokens, 256-dim LLM, 128-px SAM."""
    return ModelConfig(
        llava=_llava(
            vocab_size=0,
            image_size=128,
            patch_size=16,
            vision_hidden=128,
            vision_layers=4,
            vision_heads=4,
            text_hidden=256,
            text_layers=4,
            text_heads=8,
            text_kv_heads=4,
            max_positions=1024,
        ),
        sam=_sam(
            image_size=128,
            patch_size=8,
            encoder_hidden=96,
            encoder_layers=4,
            encoder_heads=4,
            window_size=8,
            global_attn_indexes=[1, 3],
            prompt_dim=96,
            decoder_heads=4,
        ),
        head="lisa",
        backbone_image_size=128,
        sam_image_size=128,
        max_new_tokens=64,
        preset="small",
    )


def small_aided() -> ModelConfig:
    """`small` built to learn from scratch (experimental): a conv stem in the vision tower,
    a conv image encoder in place of SAM's ViT (stride 4: a 32 x 32 embedding, 128 x 128
    masks) and vision probes over ReasonWorld's 55 categories + background (trained only
    when a recipe weights the `probe` loss). About 6.7 M parameters."""
    config = small()
    config.sam = _sam(
        image_size=128,
        patch_size=4,
        encoder_hidden=32,  # SAM's ViT settings are unused: the conv encoder replaces it
        encoder_layers=1,
        encoder_heads=1,
        window_size=0,
        global_attn_indexes=[],
        prompt_dim=96,
        decoder_heads=4,
    )
    config.sam[ENCODER_KEY] = "conv"
    config.probe_classes = 56
    config.vision_stem = "conv"
    config.preset = "small-aided"
    return config


def tiny_pixellm() -> ModelConfig:
    """`tiny`'s backbone with PixelLM's SAM-free codebook head (tests)."""
    config = tiny()
    config.sam, config.head, config.preset = None, "pixellm", "tiny-pixellm"
    config.sam_image_size = 0
    config.head_args = {"groups": 2, "tokens_per_group": 3, "channels": 32}
    return config


def small_pixellm() -> ModelConfig:
    """`small`'s backbone with PixelLM's head: 2 groups x 3 codebook tokens over vision layers
    2 and 4, a 64-channel pixel decoder, and no SAM."""
    config = small()
    config.sam, config.head, config.preset = None, "pixellm", "small-pixellm"
    config.head_args = {"groups": 2, "tokens_per_group": 3, "channels": 64}
    config.sam_image_size = 0
    return config


def tiny_pixelllm() -> ModelConfig:
    """`tiny`'s backbone and SAM with PixelLLM's per-word location head (tests)."""
    config = tiny()
    config.head, config.preset = "pixelllm", "tiny-pixelllm"
    config.head_args = {"channels": 32, "location_tokens": 2, "jitter": 0.1}
    return config


def small_pixelllm() -> ModelConfig:
    """`small`'s backbone and SAM (from scratch) with PixelLLM's head: a location MLP beside
    the vocabulary head, a 64-wide location prompt encoder giving 2 placeholder embeddings."""
    config = small()
    config.head, config.preset = "pixelllm", "small-pixelllm"
    config.head_args = {"channels": 64, "location_tokens": 2, "jitter": 0.1}
    return config


def tiny_sam4mllm() -> ModelConfig:
    """`tiny` with SAM4MLLM's head: SAM prompted by box + points the LLM writes as text."""
    config = tiny()
    config.head, config.preset = "sam4mllm", "tiny-sam4mllm"
    # A target's prompt text is about 45 tokens (one per digit).
    config.max_new_tokens = 128
    return config


def small_sam4mllm() -> ModelConfig:
    """`small` with SAM4MLLM's head (PPG: 64 groups of 2 inside + 1 outside point; its SAM is
    trained from scratch with the LLM, where the paper freezes a pretrained one)."""
    config = small()
    config.head, config.preset = "sam4mllm", "small-sam4mllm"
    config.max_new_tokens = 192
    return config


#: Named presets (random initialisation). Every entry is built in a test so none can rot.
PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny,
    "small": small,
    "small-aided": small_aided,
    "tiny-pixellm": tiny_pixellm,
    "small-pixellm": small_pixellm,
    "tiny-pixelllm": tiny_pixelllm,
    "small-pixelllm": small_pixelllm,
    "tiny-sam4mllm": tiny_sam4mllm,
    "small-sam4mllm": small_sam4mllm,
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise CheckpointError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()
