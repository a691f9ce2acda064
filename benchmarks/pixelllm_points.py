"""How well a PixelLLM-head model's per-token points localise targets, teacher-forced.

    python benchmarks/pixelllm_points.py [--model default-pixelllm] [--samples 48]

On fresh ReasonWorld referring and reasoning samples, compares the point the location MLP
gives each answer token that names a target with that target's point: the model's L1, the L1
of always answering the targets' mean (what a collapsed head scores), the spread of both, and
their correlation per axis. Prints a markdown table.
"""

from __future__ import annotations

import argparse

import torch

from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.processing import IGNORE_INDEX
from pixelreason.registry import load_model


def located_points(model_name: str, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted, true) points (N, 2) of every located answer token of `samples` samples."""
    model, _ = load_model(model_name)
    if model.config.head != "pixelllm":
        raise SystemExit(f"error: {model_name} has a {model.config.head} head, not pixelllm")
    mix = WorldMixture(MixConfig(seed=seed, image_size=128, rates={"refer": 1, "reason": 1}))
    items = [mix(i) for i in range(samples)]
    captured: list[torch.Tensor] = []
    locate = model.head.locate

    def capture(states: torch.Tensor) -> torch.Tensor:
        captured.append(locate(states))
        return captured[-1]

    model.head.locate = capture  # type: ignore[method-assign]
    predicted, true = [], []
    with torch.no_grad():
        for start in range(0, samples, 8):
            batch = model.collate(items[start : start + 8])
            captured.clear()
            model._teacher_forced(batch, with_probe=False)
            targets = {key: value[:, 1:] for key, value in batch.targets.items()}
            located = targets["located"] & (batch.labels[:, 1:] != IGNORE_INDEX)
            predicted.append(captured[0][located][:, :2])
            true.append(targets["points"][located].float())
    return torch.cat(predicted), torch.cat(true)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--model", default="default-pixelllm")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--seed", type=int, default=123, help="ReasonWorld stream seed")
    args = parser.parse_args()
    predicted, true = located_points(args.model, args.samples, args.seed)
    mean_l1 = (true - true.mean(0)).abs().mean().item()
    corr = [torch.corrcoef(torch.stack([predicted[:, a], true[:, a]]))[0, 1].item() for a in (0, 1)]
    spread, true_spread = predicted.std(0).tolist(), true.std(0).tolist()
    print(f"{len(true)} located tokens in {args.samples} samples, model {args.model}\n")
    print("| L1 model | L1 constant mean | std x, y (model) | std x, y (truth) | corr x | corr y |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {(predicted - true).abs().mean().item():.3f} | {mean_l1:.3f} | "
        f"{spread[0]:.3f}, {spread[1]:.3f} | {true_spread[0]:.3f}, {true_spread[1]:.3f} | "
        f"{corr[0]:.2f} | {corr[1]:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
