"""The knowledge adapter: a LoRA (peft) on the LLM that only the knowledge check reads.

The knowledge check (`pixelreason.models.knowledge`) asks the LLM to state in words what a
query asks about ("A lemon is squeezed to make lemonade."). Fine-tuning the whole model on
facts it knows badly teaches it those facts, but moves the answers it grounds, since the LLM's
states are what the mask head reads. A knowledge adapter separates the two: a low-rank update
of the LLM's linear layers, trained on text alone (`recipes/default-knowledge.yaml`), that the
model puts in place only while it writes or scores a bound statement (one that names an
object of the image) or ranks the image's classes as a statement's subject. Segmentation
answers, their masks and every other check read the LLM as it was trained, and so does the
knowledge check's absence part: trained to answer each shared fact with one kind of object
("What fits in a pocket?" -> "A key ..."), the adapter has a favourite holder of every shared
fact and states it with a confidence that the absence part would take for proof that the
image lacks what was asked (on the ReasonWorld test split, three right answers became
refusals that way). The absence part does ask the adapter's consent: it refuses only where the
adapter's LLM too finds the stated class clearly likelier than the answer's.

A model directory holds its adapter in peft's own format, in `ADAPTER_DIR`
(adapter_config.json, adapter_model.safetensors); `PixelReasonModel.from_pretrained` loads it
where it is there, and `ModelConfig.knowledge_adapter` (on by default) says whether the
knowledge check reads it. An adapter belongs to the weights it was trained on: one trained on
another model would load wherever the shapes agree, and be wrong. So training that moves the
LLM drops the model's adapter (`pixelreason.train.trainer.prepare_for_training`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from pixelreason.errors import CheckpointError
from pixelreason.utils.files import atomic_directory

#: A model directory's knowledge adapter (peft's adapter files inside).
ADAPTER_DIR = "knowledge_adapter"
#: peft's file names.
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter into its base layer and remove it; returns how many merged.
    The merged model saves and loads as a plain model (no peft needed to use it)."""
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
                merged += 1
    return merged


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoraLayer) for m in model.modules())


@dataclass
class KnowledgeAdapter:
    """A LoRA adapter of a language model: peft's config and its tensors, named as peft's
    `get_peft_model_state_dict` names them ("layers.0.self_attn.q_proj.lora_A.weight")."""

    config: LoraConfig
    weights: dict[str, torch.Tensor]

    @classmethod
    def from_model(cls, language_model: nn.Module) -> KnowledgeAdapter:
        """The adapter of a language model that carries one (`inject_adapter_in_model`)."""
        configs = getattr(language_model, "peft_config", None)
        if not configs or not has_lora(language_model):
            raise ValueError("the language model carries no LoRA adapter")
        weights = get_peft_model_state_dict(language_model)
        weights = {name: tensor.detach().cpu() for name, tensor in weights.items()}
        return cls(config=configs["default"], weights=weights)

    @classmethod
    def load(cls, directory: str | Path) -> KnowledgeAdapter:
        """Read an adapter directory (peft's files); CheckpointError where it is not one."""
        directory = Path(directory)
        try:
            config = LoraConfig.from_pretrained(str(directory))
            weights = load_file(str(directory / WEIGHTS_FILE))
        except (SafetensorError, OSError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"cannot read a LoRA adapter from {directory}: {exc}") from exc
        if not isinstance(config, LoraConfig) or not weights:
            raise CheckpointError(f"{directory} holds no LoRA adapter")
        return cls(config=config, weights=weights)

    def save(self, directory: str | Path) -> None:
        """Write the adapter directory (peft's files), atomically."""
        with atomic_directory(directory) as staging:
            self.config.save_pretrained(str(staging))
            (staging / WEIGHTS_FILE).write_bytes(save(self.weights, metadata={"format": "pt"}))

    def merged(self, language_model: nn.Module) -> nn.Module:
        """A copy of `language_model` with the adapter merged into its weights, in eval mode
        and without gradients; CheckpointError where the adapter does not fit it."""
        adapted = copy.deepcopy(language_model)
        config = copy.deepcopy(self.config)
        config.inference_mode = True
        try:
            inject_adapter_in_model(config, adapted)
            result = set_peft_model_state_dict(adapted, self.weights)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"the knowledge adapter does not fit this model: {exc}") from exc
        missing = [k for k in result.missing_keys if "lora_" in k]
        unexpected = [k for k in result.unexpected_keys if "lora_" in k]
        if missing or unexpected:
            names = ", ".join((missing + unexpected)[:3])
            raise CheckpointError(f"the knowledge adapter does not fit this model: {names}")
        merge_lora(adapted)
        return adapted.eval().requires_grad_(False)
