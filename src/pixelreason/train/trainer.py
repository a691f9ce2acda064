"""Training on `accelerate`: one CPU process here, `accelerate launch` on many GPUs unchanged.

Data comes from a function `sample(index) -> SegSample` that is deterministic in the global
sample index, so a resumed run sees exactly the samples an uninterrupted run would have seen,
and each process of a multi-GPU run takes its own indices. Checkpoints are written atomically
(model weights as safetensors, optimizer/scheduler/RNG state loaded with weights_only=True).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from pixelreason.data.schema import SegSample
from pixelreason.errors import CheckpointError, InputError
from pixelreason.models.adapter import KnowledgeAdapter
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.train.lora import LoraSettings, apply_lora, language_model, merge_lora
from pixelreason.train.losses import LossWeights
from pixelreason.utils.files import atomic_directory, atomic_write_bytes

CHECKPOINT_DIR = "checkpoint"
FINAL_DIR = "model"
STATE_NAME = "trainer_state.pt"
WEIGHTS_NAME = "weights.safetensors"

SampleFn = Callable[[int], SegSample]
EvalFn = Callable[[PixelReasonModel], dict[str, float]]


@dataclass
class TrainConfig:
    """Optimisation settings; LISA's recipe is AdamW lr 3e-4, no weight decay, 100 warmup
    steps then linear decay, gradient clipping at 1.0, batch 2 x accumulation 10 per GPU."""

    steps: int = 1000
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    clip_grad: float = 1.0
    log_every: int = 10
    save_every: int = 100
    eval_every: int = 0
    seed: int = 0
    lora: LoraSettings | None = None
    #: With `lora`: the final directory gets the adapter alone, in peft's format (a knowledge
    #: adapter, `pixelreason.models.adapter`), not the model with the adapter merged in.
    save_adapter: bool = False
    loss: LossWeights = field(default_factory=LossWeights)
    mixed_precision: str = "no"
    #: Parameter-name prefixes kept frozen (e.g. pretrained encoders, as LISA freezes CLIP
    #: and SAM's image encoder); each must name at least one parameter.
    freeze: list[str] = field(default_factory=list)
    #: Processes that generate and collate batches ahead of the model (0: in the training
    #: process). Batches arrive in index order either way, so runs are identical.
    num_workers: int = 0


@dataclass
class TrainResult:
    steps: int
    final_dir: Path
    history: list[dict[str, Any]]


def prepare_for_training(model: PixelReasonModel, config: TrainConfig) -> None:
    """LoRA and LISA's trainable set when `config.lora` is set; full training otherwise;
    then the parameters under `config.freeze` are frozen. A knowledge adapter of a model whose
    LLM is trained is dropped: it fits the weights it was trained on."""
    if config.lora is not None:
        apply_lora(model, config.lora)
    else:
        model.requires_grad_(True)
    for prefix in config.freeze:
        matched = [p for name, p in model.named_parameters() if name.startswith(prefix)]
        if not matched:
            raise InputError(f"train.freeze: no parameter name starts with {prefix!r}")
        for parameter in matched:
            parameter.requires_grad_(False)
    if getattr(model, "knowledge_adapter", None) is not None and any(
        p.requires_grad for p in language_model(model).parameters()
    ):  # it was trained on the LLM's present weights, which this training moves
        model.set_knowledge_adapter(None)
        print("training the LLM: the model's knowledge adapter is dropped (train a new one)")


def train(
    model: PixelReasonModel,
    sample: SampleFn,
    out_dir: str | Path,
    config: TrainConfig,
    evaluate: EvalFn | None = None,
) -> TrainResult:
    """Train `model` for `config.steps` optimizer steps, resuming from `out_dir` if a
    checkpoint is there. Writes out_dir/{checkpoint/, model/, history.json, curve.png}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    prepare_for_training(model, config)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if accelerator.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matrix units for float32 weights
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    start_step, history = 0, []
    if (out / CHECKPOINT_DIR).is_dir():
        start_step, history = _load_checkpoint(out / CHECKPOINT_DIR, model, optimizer, scheduler)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: PixelReasonModel = accelerator.unwrap_model(wrapped)
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = config.batch_size * config.grad_accum * world

    batches = iter(_batch_loader(sample, unwrapped.collate, config, start_step, world, rank))
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    window_start, window_samples, waited = time.perf_counter(), 0, 0.0
    for step in range(start_step, config.steps):
        wrapped.train()
        parts = {"loss": 0.0, "text": 0.0, "bce": 0.0, "dice": 0.0, "refine": 0.0}
        for micro in range(config.grad_accum):
            asked = time.perf_counter()
            batch = next(batches).to(accelerator.device)
            waited += time.perf_counter() - asked
            last = micro == config.grad_accum - 1
            with accelerator.no_sync(wrapped) if not last else nullcontext():
                output = wrapped(batch, config.loss)
                accelerator.backward(output.loss / config.grad_accum)
            for key in parts:
                value = float(output.loss.detach()) if key == "loss" else getattr(output, key)
                parts[key] += value / config.grad_accum
            # The head's own terms (PixelLLM's "point") are logged beside the shared ones.
            for key, value in output.head.items():
                parts[key] = parts.get(key, 0.0) + value / config.grad_accum
        if config.clip_grad > 0:
            accelerator.clip_grad_norm_(trainable, config.clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window_samples += per_step
        done = step + 1
        bar.update(1)
        if done % config.log_every == 0 or done == config.steps:
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            entry = {
                "step": done,
                **{k: round(v, 5) for k, v in parts.items()},
                "lr": scheduler.get_last_lr()[0],
                "samples_per_s": round(window_samples / elapsed, 2),
                # Share of the time spent waiting for (or making) batches: near 1 means the
                # data, not the model, bounds throughput (raise num_workers).
                "data_share": round(min(waited / elapsed, 1.0), 3),
            }
            history.append(entry)
            bar.set_postfix(
                loss=f"{parts['loss']:.3f}", sps=entry["samples_per_s"], data=entry["data_share"]
            )
            window_start, window_samples, waited = time.perf_counter(), 0, 0.0
        if evaluate is not None and config.eval_every and done % config.eval_every == 0:
            if accelerator.is_main_process:
                wrapped.eval()
                metrics = evaluate(unwrapped)
                history.append({"step": done, **{f"val_{k}": v for k, v in metrics.items()}})
                bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            accelerator.wait_for_everyone()
            window_start, waited = time.perf_counter(), 0.0
        if done % config.save_every == 0 or done == config.steps:
            if accelerator.is_main_process:
                _save_checkpoint(
                    out / CHECKPOINT_DIR, unwrapped, optimizer, scheduler, done, history
                )
                write_history(out, history)
            accelerator.wait_for_everyone()
            window_start, waited = time.perf_counter(), 0.0  # throughput counts training only
    bar.close()
    final = out / FINAL_DIR
    if accelerator.is_main_process:
        unwrapped.eval()
        if config.save_adapter:
            KnowledgeAdapter.from_model(language_model(unwrapped)).save(final)
        else:
            merge_lora(unwrapped)
            unwrapped.save_pretrained(final)
        write_history(out, history)
    accelerator.wait_for_everyone()
    return TrainResult(steps=config.steps, final_dir=final, history=history)


class _Batches(torch.utils.data.Dataset):
    """Global sample indices -> one collated batch (run in DataLoader workers)."""

    def __init__(self, sample: SampleFn, collate: Callable[[list[SegSample]], Any]) -> None:
        self.sample, self.collate = sample, collate

    def __getitem__(self, indices: list[int]) -> Any:
        return self.collate([self.sample(i) for i in indices])


def _batch_indices(
    config: TrainConfig, start_step: int, world: int, rank: int
) -> Iterator[list[int]]:
    """This process's sample indices, one list per micro-batch, from `start_step` on."""
    for step in range(start_step, config.steps):
        for micro in range(config.grad_accum):
            first = ((step * config.grad_accum + micro) * world + rank) * config.batch_size
            yield list(range(first, first + config.batch_size))


def _unchanged(batch: Any) -> Any:
    return batch


def _batch_loader(
    sample: SampleFn,
    collate: Callable[[list[SegSample]], Any],
    config: TrainConfig,
    start_step: int,
    world: int,
    rank: int,
) -> Any:
    """Batches in index order: made here, or by `config.num_workers` worker processes."""
    indices, batches = _batch_indices(config, start_step, world, rank), _Batches(sample, collate)
    if config.num_workers <= 0:
        return map(batches.__getitem__, indices)
    return torch.utils.data.DataLoader(
        batches,
        sampler=indices,
        batch_size=None,
        collate_fn=_unchanged,
        num_workers=config.num_workers,
        prefetch_factor=4,
    )


def _save_checkpoint(
    directory: Path,
    model: PixelReasonModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    history: list[dict[str, Any]],
) -> None:
    with atomic_directory(directory) as staging:
        save_model(model, str(staging / WEIGHTS_NAME))
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, staging / STATE_NAME)
        (staging / "history.json").write_text(json.dumps(history))


def _load_checkpoint(
    directory: Path,
    model: PixelReasonModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[int, list[dict[str, Any]]]:
    try:
        missing, unexpected = load_model(model, directory / WEIGHTS_NAME, strict=False)
        state = torch.load(directory / STATE_NAME, weights_only=True)
        history = json.loads((directory / "history.json").read_text())
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {directory}: {exc}") from exc
    if unexpected:
        raise CheckpointError(
            f"checkpoint {directory} does not match this model/config (e.g. {unexpected[0]}); "
            "use a new output directory or the same config"
        )
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), history


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """history.json and curve.png (training loss, and validation metrics when present)."""
    atomic_write_bytes(out / "history.json", json.dumps(history, indent=1).encode())
    plot_curves(history, out / "curve.png")


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_rows = [h for h in history if "loss" in h]
    val_keys = sorted({k for h in history for k in h if k.startswith("val_")})
    if not train_rows:
        return
    columns = 2 if val_keys else 1
    figure, axes = plt.subplots(1, columns, figsize=(6 * columns, 4), squeeze=False)
    for key in ("loss", "text", "bce", "dice", "point", "probe"):
        rows = [h for h in train_rows if key in h]
        values = [h[key] for h in rows]
        if any(math.isfinite(v) and v > 0 for v in values):
            marker = "o" if len(rows) < 0.1 * len(train_rows) else None  # sparse terms as points
            axes[0][0].plot([h["step"] for h in rows], values, marker=marker, label=key)
    axes[0][0].set_yscale("log")
    axes[0][0].set_xlabel("step")
    axes[0][0].set_title("training loss")
    axes[0][0].legend()
    for key in val_keys:
        rows = [h for h in history if key in h]
        axes[0][1].plot([h["step"] for h in rows], [h[key] for h in rows], marker="o", label=key)
    if val_keys:
        axes[0][1].set_xlabel("step")
        axes[0][1].set_title("validation")
        axes[0][1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
