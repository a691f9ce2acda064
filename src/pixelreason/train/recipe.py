"""Training recipes: one YAML file says which model, which data and how to optimise.

model: {preset: small}            # optionally `init: default` (warm start from a trained
                                  # model's shared weights; `init_parts: {PREFIX: MODEL}`
                                  # takes named parts from others), or {from: DIR} to continue, or
                                  # {llava: NAME_OR_DIR, sam: NAME_OR_DIR} for public weights
data: {seed: 0, image_size: 128, rates: {sem_seg: 9, refer: 3, text_qa: 3, reason: 1}}
val: {seed: 1, samples: 50}       # generated ReasonWorld val samples for periodic gIoU
train: {steps: 2000, batch_size: 8, lr: 3e-4, warmup_steps: 100, lora: null, ...}
out: runs/default
task: segment                     # or `pretrain`: the encoders alone on scenes
                                  # (`pixelreason.train.pretrain`), before a segment stage;
                                  # or `colour-probe`: only the colour probe, on a trained
                                  # model's frozen image features (`colour_probe: true`);
                                  # or `probe`: only the category probe, the same way
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from pixelreason.api import Segmenter
from pixelreason.config import ModelConfig, preset
from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.data.world.categories import CATEGORIES, class_labels, colour_labels
from pixelreason.errors import InputError
from pixelreason.eval.evaluate import evaluate, items_from_world
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.registry import load_model
from pixelreason.train.lora import LoraSettings
from pixelreason.train.losses import LossWeights
from pixelreason.train.pretrain import ScenePretraining, SceneStream, pretraining_val
from pixelreason.train.trainer import TrainConfig, TrainResult, train


@dataclass
class Recipe:
    model: dict[str, Any]
    data: MixConfig
    train: TrainConfig
    val: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/train"
    #: "segment" (answers and masks), "pretrain" (the encoders alone, `ScenePretraining`),
    #: "colour-probe" (the colour probe alone, everything else frozen) or "probe" (the
    #: category probe alone, both its parts, everything else frozen).
    task: str = "segment"


TASKS = ("segment", "pretrain", "colour-probe", "probe")


def _dataclass_from(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from exc


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe file; every mistake is one clear InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(raw) - {"model", "data", "val", "train", "out", "task"})
    if unknown:
        raise InputError(f"{path}: unknown sections {unknown}")
    train_raw = dict(raw.get("train") or {})
    if train_raw.get("lora") is not None:
        lora = train_raw["lora"]
        lora = {} if lora is True else lora
        if "targets" in lora:
            lora["targets"] = tuple(lora["targets"])
        train_raw["lora"] = _dataclass_from(LoraSettings, lora, f"{path}: train.lora")
    if "loss" in train_raw:
        train_raw["loss"] = _dataclass_from(LossWeights, train_raw["loss"], f"{path}: train.loss")
    task = raw.get("task", "segment")
    if task not in TASKS:
        raise InputError(f"{path}: task must be one of {list(TASKS)}, got {task!r}")
    if task != "segment" and train_raw.get("lora") is not None:
        raise InputError(f"{path}: task: {task} trains no LoRA adapters; drop train.lora")
    if train_raw.get("save_adapter") and train_raw.get("lora") is None:
        raise InputError(f"{path}: train.save_adapter saves a LoRA adapter; set train.lora")
    if "freeze" in train_raw and not (
        isinstance(train_raw["freeze"], list)
        and all(isinstance(p, str) for p in train_raw["freeze"])
    ):
        raise InputError(f"{path}: train.freeze must be a list of parameter-name prefixes")
    model = raw.get("model") or {"preset": "small"}
    if not isinstance(model, dict) or not ({"preset", "from", "llava"} & set(model)):
        raise InputError(f"{path}: model needs one of preset, from, llava")
    return Recipe(
        model=model,
        data=_dataclass_from(MixConfig, raw.get("data"), f"{path}: data"),
        train=_dataclass_from(TrainConfig, train_raw, f"{path}: train"),
        val=dict(raw.get("val") or {}),
        out=str(raw.get("out", "runs/train")),
        task=task,
    )


#: Keys of a recipe's `model` section that are not `ModelConfig` fields.
SPEC_KEYS = ("preset", "seed", "init", "init_skip", "init_parts", "colour_probe")


def preset_config(spec: dict[str, Any]) -> ModelConfig:
    """The `ModelConfig` of a recipe's `model: {preset: ..., FIELD: VALUE}`: the named preset
    with the other keys (all but `SPEC_KEYS`) overriding its fields."""
    config = preset(spec["preset"])
    overrides = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
    known = {f.name for f in fields(config)} - {"llava", "sam", "preset", "format_version"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"model: unknown preset overrides {unknown}; known: {sorted(known)}")
    for key, value in overrides.items():
        setattr(config, key, value)
    if config.probe_classes == len(CATEGORIES) + 1 and not config.probe_labels:
        config.probe_labels = class_labels()  # the probe learns ReasonWorld's class maps
    colour = spec.get("colour_probe", False)
    if not isinstance(colour, bool):
        raise InputError(f"model: colour_probe must be true or false, got {colour!r}")
    if colour and not config.colour_probe_labels:
        config.colour_probe_labels = colour_labels()  # ReasonWorld's colour-category pairs
    return config


def _init_parts(spec: dict[str, Any]) -> dict[str, str]:
    parts = spec.get("init_parts") or {}
    if not isinstance(parts, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in parts.items()
    ):
        raise InputError("model: init_parts must map parameter-name prefixes to model names")
    return parts


def build_model(spec: dict[str, Any]) -> PixelReasonModel:
    """The recipe's model: a preset (any other keys override its `ModelConfig` fields, e.g.
    `vision_stem: patch`; `init` names a trained model, bundled or a directory, whose shared
    weights it starts from, except those under the name prefixes listed in `init_skip`;
    `init_parts` maps further prefixes to the trained model each takes them from, after `init`,
    e.g. a pretrained vision tower into a trained model), a saved model to continue (`from`)
    or public components."""
    if "preset" in spec:
        config = preset_config(spec)
        skip = spec.get("init_skip") or []
        if not isinstance(skip, list) or not all(isinstance(p, str) for p in skip):
            raise InputError("model: init_skip must be a list of parameter-name prefixes")
        torch.manual_seed(int(spec.get("seed", 0)))
        model = PixelReasonModel.from_config(config)
        if spec.get("init"):
            source, description = load_model(spec["init"])
            counts = model.warm_start(source, skip)
            print(
                f"warm start from {description}: {counts['copied']} tensors copied "
                f"({counts['vocab_rows']} shared vocabulary rows), {counts['fresh']} fresh"
            )
        for prefix, name in _init_parts(spec).items():
            source, description = load_model(name)
            counts = model.warm_start(source, only=[prefix])
            if counts["fresh"]:
                raise InputError(
                    f"model: init_parts: {counts['fresh']} tensors under {prefix!r} do not match "
                    f"{description} (missing there or of another shape)"
                )
            if not counts["copied"]:
                raise InputError(
                    f"model: init_parts: {description} has no weights under {prefix!r}"
                )
            print(f"{prefix}: {counts['copied']} tensors from {description}")
        return model
    if "from" in spec:
        return PixelReasonModel.from_pretrained(spec["from"])
    return PixelReasonModel.from_components(
        spec["llava"], spec.get("sam"), head=spec.get("head", "lisa")
    )


def run_recipe(recipe: Recipe, out: str | Path | None = None) -> TrainResult:
    """Build the model and data of a recipe and train it (resuming if `out` has a checkpoint)."""
    model = build_model(recipe.model)
    samples = int(recipe.val.get("samples", 0))
    if recipe.task == "pretrain":
        return _pretrain(model, recipe, Path(out or recipe.out), samples)
    if recipe.task == "colour-probe":
        return _pretrain(model, recipe, Path(out or recipe.out), samples, alone="colour_probe")
    if recipe.task == "probe":
        return _pretrain(model, recipe, Path(out or recipe.out), samples, alone="probe")
    if recipe.train.loss.presence:
        raise InputError("train.loss.presence is for task: probe and task: pretrain recipes")
    mixture = WorldMixture(recipe.data)
    evaluate_fn = None
    if samples > 0:
        items = items_from_world(
            int(recipe.val.get("seed", recipe.data.seed)), "val", samples, recipe.data.image_size
        )

        def evaluate_fn(current: PixelReasonModel) -> dict[str, float]:
            report, _ = evaluate(Segmenter(current, "training"), items, progress=False)
            return {"giou": report["overall"]["giou"], "ciou": report["overall"]["ciou"]}

    return train(model, mixture, Path(out or recipe.out), recipe.train, evaluate_fn)


def _pretrain(
    model: PixelReasonModel, recipe: Recipe, out: Path, samples: int, alone: str | None = None
) -> TrainResult:
    """A `task: pretrain` recipe: the encoders alone on a stream of scenes; validation reports
    the probe's cell accuracy, its presence AUC and the concept masks' IoU on `val.samples`
    other scenes. With `alone` "colour_probe" (`task: colour-probe`), the colour probe alone on
    colour maps, or "probe" (`task: probe`), the category probe alone: every other weight is
    frozen and the concept masks are off."""
    colour = alone == "colour_probe"
    wrapper = ScenePretraining(model, colour=colour, probe_alone=alone == "probe")
    config = recipe.train
    if alone:
        task = recipe.task
        if config.loss.mask:
            raise InputError(f"task: {task} fits the {alone} alone: set train.loss.mask 0")
        frozen = {name.split(".")[1] for name, _ in wrapper.named_parameters()} - {alone}
        config = dataclasses.replace(config, freeze=sorted(f"model.{n}." for n in frozen))
    evaluate_fn = None
    if samples > 0:
        scenes = pretraining_val(
            int(recipe.val.get("seed", recipe.data.seed)), samples, recipe.data.image_size, colour
        )

        def evaluate_fn(current: ScenePretraining) -> dict[str, float]:
            return current.measure(scenes)

    stream = SceneStream(recipe.data.seed, recipe.data.image_size, colour)
    return train(wrapper, stream, out, config, evaluate_fn)  # type: ignore[arg-type]
