"""The multimodal LLM: a transformers LLaVA-family model (vision tower + projector + causal LM)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    DynamicCache,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LogitsProcessorList,
    PreTrainedModel,
)

from pixelreason.models.presence import BannedSequences

STEMS = ("patch", "conv")

#: The LLM's key and value states of a prompt's first positions, per layer, each
#: (1, kv_heads, positions, head_dim): see `Backbone.prefix_states`.
PrefixStates = tuple[tuple[torch.Tensor, torch.Tensor], ...]


class ConvStem(nn.Module):
    """A convolutional patch embedding ("early convolutions", Xiao et al. 2021): log2(patch)
    3x3 stride-2 convolutions (GroupNorm, GELU) and a 1x1 projection, in place of CLIP's one
    patch-sized stride. Same output grid; ViTs trained from scratch learn faster with it."""

    def __init__(self, hidden: int, patch_size: int) -> None:
        super().__init__()
        steps = patch_size.bit_length() - 1
        if patch_size < 2 or 2**steps != patch_size:
            raise ValueError(f"a conv stem needs a power-of-two patch size, got {patch_size}")
        layers: list[nn.Module] = []
        channels = 3
        for step in range(steps):
            out = max(hidden >> (steps - 1 - step), 8)
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.GroupNorm(min(8, out), out),
                nn.GELU(),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels, hidden, 1)

    @property
    def weight(self) -> torch.Tensor:
        """CLIP's embeddings read the patch embedding's dtype from here."""
        return self.proj.weight

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(pixel_values))


def build_llava(
    config: dict, stem: str = "patch", feature_norm: bool = False
) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA model from a `LlavaConfig` dict, with the given vision
    stem ("patch": CLIP's own; "conv": `ConvStem`), and with `feature_norm` the vision
    features normalised before the projector (`normalise_vision_features`)."""
    if stem not in STEMS:
        raise ValueError(f"unknown vision stem {stem!r}; choose from {STEMS}")
    model = LlavaForConditionalGeneration(LlavaConfig.from_dict(config))
    if stem == "conv":
        vision = model.config.vision_config
        embeddings = model.model.vision_tower.embeddings
        embeddings.patch_embedding = ConvStem(vision.hidden_size, vision.patch_size)
    if feature_norm:
        normalise_vision_features(model)
    return model


def normalise_vision_features(model: LlavaForConditionalGeneration) -> None:
    """Make the projector read the selected vision features through the vision tower's final
    LayerNorm (`post_layernorm`, which LLaVA otherwise leaves to the unused class-token output).

    LLaVA feeds the projector a raw hidden state of the tower (by default the penultimate one),
    fine for a pretrained CLIP. A tower trained from scratch beside the LLM can let that
    residual stream grow without bound: in our first default model the projected image tokens
    reached norms of 6e4, became nearly constant, and object colour and category could no
    longer be read from them (`benchmarks/vision_probe.py`). The norm keeps LLaVA's state-dict
    layout (it is a forward pre-hook on the projector), so checkpoints and warm starts are
    unchanged.
    """
    vision = model.model.vision_tower
    norm = getattr(getattr(vision, "vision_model", vision), "post_layernorm", None)
    if not isinstance(norm, nn.Module):
        raise ValueError(
            f"vision_feature_norm needs a vision tower with a post_layernorm; "
            f"{type(vision).__name__} has none"
        )

    def _normalise(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (norm(args[0]), *args[1:])

    model.model.multi_modal_projector.register_forward_pre_hook(_normalise)


@dataclass
class BackboneOutput:
    """logits (B, T, V) and last-layer hidden states (B, T, D) of a teacher-forced pass."""

    logits: torch.Tensor
    hidden: torch.Tensor


@dataclass
class Generation:
    """Greedy or sampled continuation of one prompt.

    token_ids: (L,) generated ids, without the prompt.
    hidden: (L, D) last-layer state that *predicted* each generated token (the state LISA reads
    the mask embedding from), so nothing needs a second forward pass.
    prompt_states: with `generate_batch(keep_prompt_states=True)`, the LLM's key and value
    states of the prompt's positions but its last, as the batch laid them out (padding
    included), for later passes that start from them.
    """

    token_ids: torch.Tensor
    hidden: torch.Tensor
    prompt_states: PrefixStates | None = None


class Backbone(nn.Module):
    """Wraps `LlavaForConditionalGeneration` so heads never touch its internals.

    Image features are computed once per image (`encode_image`) and scattered into the token
    embeddings at the positions of the image token id (`embed`), with the counts checked, so a
    cached image can be asked many questions.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        # transformers 5.24 takes the key/value cache as `cache` (`past_key_values` deprecated)
        takes = inspect.signature(model.forward).parameters
        self._cache_keyword = "cache" if "cache" in takes else "past_key_values"

    def _with_cache(self, cache: DynamicCache | None) -> dict[str, Any]:
        """The keyword argument that gives the LLM `cache`, in this transformers' name."""
        return {self._cache_keyword: cache}

    @classmethod
    def from_config(cls, config: dict | LlavaConfig) -> Backbone:
        if isinstance(config, dict):
            config = LlavaConfig.from_dict(config)
        return cls(LlavaForConditionalGeneration(config))

    @property
    def config(self) -> LlavaConfig:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.config.text_config.hidden_size

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def num_image_tokens(self) -> int:
        """Image features per image, from the vision config (checked again in `embed`)."""
        vision = self.config.vision_config
        count = (vision.image_size // vision.patch_size) ** 2
        if self.config.vision_feature_select_strategy == "full":
            count += 1
        return count

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, S, S) -> projected image features (B, N, D)."""
        return self.encode_image_layers(pixel_values)[0]

    def encode_image_layers(
        self, pixel_values: torch.Tensor, layers: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Projected features (B, N, D) and, for each hidden-state index in `layers`, the
        vision tower's patch features (B, g*g, Dv) (class token dropped) from the same pass."""
        out = self.model.get_image_features(pixel_values=pixel_values, output_hidden_states=True)
        features = torch.stack(list(out.pooler_output))
        patches = self.grid_size**2
        return features, [out.hidden_states[layer][:, -patches:] for layer in layers]

    @property
    def grid_size(self) -> int:
        """Side of the vision tower's patch grid."""
        vision = self.config.vision_config
        return int(vision.image_size // vision.patch_size)

    @property
    def vision_hidden_size(self) -> int:
        return int(self.config.vision_config.hidden_size)

    @property
    def vision_num_layers(self) -> int:
        return int(self.config.vision_config.num_hidden_layers)

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (B, T, D) with image features placed at the image-token positions.

        input_ids (B, T); image_features (B, N, D), one image per row, or None for text only.
        """
        embeds = self.model.get_input_embeddings()(input_ids)
        is_image = input_ids == self.image_token_id
        counts = is_image.sum(dim=1)
        if image_features is None:
            if counts.any():
                raise ValueError("the text has image tokens but no image features were given")
            return embeds
        if image_features.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"{image_features.shape[0]} images for a batch of {input_ids.shape[0]} texts"
            )
        expected = image_features.shape[1]
        if not bool((counts == expected).all()):
            raise ValueError(
                f"image tokens per row {counts.tolist()} do not match {expected} image features"
            )
        features = image_features.to(embeds.dtype).reshape(-1, embeds.shape[-1])
        return embeds.masked_scatter(is_image.unsqueeze(-1), features)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        past: Sequence[PrefixStates] | None = None,
    ) -> BackboneOutput:
        """Teacher-forced pass: inputs_embeds (B, T, D), attention_mask (B, T).

        `attention_mask=None` means plain causal attention, which is exact for the real tokens of
        a right-padded batch (padding comes after them) and takes the fused attention kernels.
        `past`: per row, the `prefix_states` of the positions before inputs_embeds (the same
        number for every row; with `attention_mask=None` only), which are then not read again:
        the output covers inputs_embeds' positions alone.
        """
        cache = None
        if past is not None:
            if attention_mask is not None:
                raise ValueError("a pass after prefix states takes no attention mask")
            cache = _joined_cache(past, self.model.config)
        out = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            **self._with_cache(cache),
            output_hidden_states=True,
            use_cache=cache is not None,
        )
        return BackboneOutput(logits=out.logits, hidden=out.hidden_states[-1])

    @torch.no_grad()
    def prefix_states(self, inputs_embeds: torch.Tensor) -> list[PrefixStates]:
        """Per row, the LLM's key and value states of prompts' first positions, inputs_embeds
        (B, P, D) without padding, for `generate_batch(past=...)`: the part of a prompt that
        depends on its image alone ("USER: <image> x N") is the same for every question about
        that image, so it is read once per image, not once per question."""
        cache = DynamicCache(config=self.model.config)
        self.model(
            inputs_embeds=inputs_embeds, **self._with_cache(cache), use_cache=True, logits_to_keep=1
        )
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return [  # copies ([row] indexing): a row kept with its image holds no other row
            tuple((keys[[row]], values[[row]]) for keys, values in layers)
            for row in range(inputs_embeds.shape[0])
        ]

    @torch.no_grad()
    def continuation_logprobs(
        self,
        prompt: torch.Tensor,
        continuations: Sequence[torch.Tensor],
        past: PrefixStates | None = None,
    ) -> list[float]:
        """Log-probability of each continuation (token ids, at least one each) after one
        prompt, inputs_embeds (P, D) without padding. The prompt but its last position is read
        once, and its key and value states serve every continuation, each read after that
        last position (right-padded, one pass), so scoring many short continuations costs
        little more than reading the prompt. `past`: the `prefix_states` of the positions
        before `prompt`, which are then not read again (with all but one of them there, the
        scores cost one short pass)."""
        if not continuations or any(len(ids) == 0 for ids in continuations):
            raise ValueError("continuation_logprobs needs at least one token per continuation")
        if not len(prompt):
            raise ValueError("continuation_logprobs needs at least one prompt position")
        if past is None:
            cache = DynamicCache(config=self.model.config)
        else:
            cache = _joined_cache([past], self.model.config)
        if len(prompt) > 1:
            self.model(
                inputs_embeds=prompt[None, :-1],
                **self._with_cache(cache),
                use_cache=True,
                logits_to_keep=1,
            )
        count, length = len(continuations), max(len(ids) for ids in continuations)
        ids = torch.zeros((count, length), dtype=torch.long, device=prompt.device)
        for row, tokens in enumerate(continuations):
            ids[row, : len(tokens)] = tokens
        if cache.get_seq_length():
            cache = DynamicCache(
                [
                    (layer.keys.expand(count, -1, -1, -1), layer.values.expand(count, -1, -1, -1))
                    for layer in cache.layers
                ],
                config=self.model.config,
            )
        else:
            cache = None
        embeds = torch.cat(
            [prompt[-1:].expand(count, 1, -1), self.model.get_input_embeddings()(ids)], 1
        )
        logits = self.model(inputs_embeds=embeds, **self._with_cache(cache), use_cache=True).logits
        logits = logits.float().log_softmax(-1)
        return [
            float(logits[row, : len(tokens)].gather(1, tokens[:, None]).sum())
            for row, tokens in enumerate(continuations)
        ]

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        do_sample: bool = False,
        temperature: float = 1.0,
    ) -> Generation:
        """Continue one prompt, inputs_embeds (1, T, D) (see `generate_batch`)."""
        if inputs_embeds.shape[0] != 1:
            raise ValueError("generate takes one prompt; use generate_batch for several")
        return self.generate_batch(
            inputs_embeds,
            None,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            do_sample=do_sample,
            temperature=temperature,
        )[0]

    @torch.no_grad()
    def generate_batch(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        banned: Sequence[Sequence[Sequence[int]]] | None = None,
        prefix: Sequence[Sequence[int]] | None = None,
        past: Sequence[PrefixStates] | None = None,
        keep_prompt_states: bool = False,
    ) -> list[Generation]:
        """Continue B prompts in one transformers `generate` call.

        inputs_embeds (B, T, D) are LEFT-padded, attention_mask (B, T) is 1 on real positions
        (None: no padding). `generate` derives position ids from the mask's cumulative sum, so
        every prompt starts at position 0 as it would alone, and the mask keeps padding out of
        attention. Each row stops at its first end-of-sequence token (kept, as when alone);
        later steps of a finished row are discarded. `banned`: per row, token sequences the
        answer may not contain (`pixelreason.models.presence.BannedSequences`). `prefix`: per row,
        token ids its answer starts with (any number), written for the model (teacher-forced)
        and returned with the states that predicted them, as if generated; `banned` sees them.
        `past`: per row, the `prefix_states` of its first P positions (the same P for every
        row), which are then not read again; padding there (the mask's zeros, as in a kept
        `prompt_states`) or after them is left out of attention, and each row's real tokens
        keep their positions (`generate` counts them with the mask). `keep_prompt_states`
        (without `prefix`): each generation keeps the states of its prompt's positions but
        the last (`Generation.prompt_states`).
        """
        batch, length = inputs_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones((batch, length), dtype=torch.long)
        if attention_mask.shape != (batch, length):
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} != {(batch, length)}")
        if not bool(attention_mask[:, -1].all()):
            raise ValueError("prompts must be left-padded: the last position must be real")
        forced = [list(ids) for ids in prefix] if prefix is not None else [[]] * batch
        if len(forced) != batch:
            raise ValueError(f"{len(forced)} prefixes for {batch} prompts")
        if past is not None and len(past) != batch:
            raise ValueError(f"{len(past)} prefix states for {batch} prompts")
        if keep_prompt_states and any(forced):
            raise ValueError("prompt states are kept for prompts without a forced prefix only")
        if any(forced):
            kept = 0 if past is None else past[0][0][0].shape[2]  # padding goes after these
            inputs_embeds, attention_mask = self._append(
                inputs_embeds, attention_mask.to(inputs_embeds.device), forced, kept
            )
        cache = None if past is None else _joined_cache(past, self.model.config)
        out = self.model.generate(
            inputs_embeds=inputs_embeds,
            **self._with_cache(cache),
            attention_mask=attention_mask.to(inputs_embeds.device),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=None,
            top_k=None,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            bad_words_ids=[[self.image_token_id]],
            logits_processor=(
                LogitsProcessorList([BannedSequences(banned, forced)]) if banned else None
            ),
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
        sequences = out.sequences
        prompt_states = None
        if keep_prompt_states:
            grown = out.cache if self._cache_keyword == "cache" else out.past_key_values
            layers = [(layer.keys, layer.values) for layer in grown.layers]
            prompt_states = [  # views of the generation's cache, which the caller holds briefly
                tuple(
                    (k[row : row + 1, :, : length - 1], v[row : row + 1, :, : length - 1])
                    for k, v in layers
                )
                for row in range(batch)
            ]
        # hidden_states[step][-1] is the last layer; step 0 covers the whole prompt, and its last
        # position predicted the first new token; each later step adds one position.
        generations = []
        for row, start in enumerate(forced):
            if out.hidden_states:  # the prompt's last positions also predicted the prefix
                first = out.hidden_states[0][-1][row, -1 - len(start) :]
                later = [step[-1][row, -1:] for step in out.hidden_states[1:]]
                states = torch.cat([first, *later])
            else:
                states = inputs_embeds.new_zeros((0, self.hidden_size))
            ids = torch.cat([sequences.new_tensor(start), sequences[row]])
            ends = (ids == eos_token_id).nonzero()
            used = int(ends[0]) + 1 if len(ends) else len(ids)
            used = min(used, states.shape[0])
            generations.append(
                Generation(
                    token_ids=ids[:used],
                    hidden=states[:used],
                    prompt_states=None if prompt_states is None else prompt_states[row],
                )
            )
        return generations

    def _append(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        forced: Sequence[Sequence[int]],
        kept: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's prompt with its `forced` tokens' embeddings after it, left-padded again
        to one length; the new padding goes after the first `kept` positions (those given as
        prefix states), else in front."""
        most = max(len(ids) for ids in forced)
        rows, masks = [], []
        for row, ids in enumerate(forced):
            tokens = torch.tensor([list(ids)], dtype=torch.long, device=inputs_embeds.device)
            gap = most - len(ids)
            rows.append(
                torch.cat(
                    [
                        inputs_embeds[row, :kept],
                        inputs_embeds.new_zeros((gap, inputs_embeds.shape[-1])),
                        inputs_embeds[row, kept:],
                        self.embed(tokens, None)[0],
                    ]
                )
            )
            ones = attention_mask.new_ones(len(ids))
            mask = attention_mask[row]
            masks.append(torch.cat([mask[:kept], mask.new_zeros(gap), mask[kept:], ones]))
        return torch.stack(rows), torch.stack(masks)


def _joined_cache(past: Sequence[PrefixStates], config: object) -> DynamicCache:
    """A new cache (the model appends to it; `past` stays as it is) holding the rows' prefix
    states stacked on the batch dimension."""
    layers = [zip(*rows, strict=True) for rows in zip(*past, strict=True)]
    return DynamicCache(
        [(torch.cat(keys), torch.cat(values)) for keys, values in layers], config=config
    )
