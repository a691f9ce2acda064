"""Average two models' weights (WiSE-FT): a fine-tuned model and the one it started from.

    python scripts/average_models.py BASE FINETUNED OUT [--weight 0.5]   # BASE may be "default"

Writes OUT with BASE's config, tokenizer and pixel colours and, for every floating-point
weight, (1 - weight) * BASE + weight * FINETUNED. A fine-tune that learns something new
(zero-shot facts) but moves every other answer a little often keeps much of the first and
little of the second half way between (Wortsman et al., "Robust fine-tuning of zero-shot
models", 2022). The two models must have the same architecture (same weight names and
shapes); the rest of FINETUNED's directory (its config's inference settings) is not used.
"""

from __future__ import annotations

import argparse
import sys

import torch

from pixelreason.errors import PixelReasonError
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.registry import load_model


def average(base: PixelReasonModel, tuned: PixelReasonModel, weight: float) -> int:
    """Move `base`'s floating-point weights to (1 - weight) * base + weight * tuned, in
    place; returns how many tensors changed. Refuses models of other shapes (ValueError)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--weight must be in [0, 1], got {weight}")
    mine, theirs = base.state_dict(), tuned.state_dict()
    if mine.keys() != theirs.keys():
        odd = sorted(mine.keys() ^ theirs.keys())
        raise ValueError(f"the models' weights differ in name (e.g. {odd[0]})")
    changed = 0
    seen: set[int] = set()  # tensors shared under several names (SAM's positional embedding)
    with torch.no_grad():
        for name, tensor in mine.items():
            other = theirs[name]
            if tensor.shape != other.shape:
                raise ValueError(
                    f"{name} has shape {tuple(tensor.shape)} in one model and "
                    f"{tuple(other.shape)} in the other"
                )
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            if tensor.is_floating_point() and not torch.equal(tensor, other):
                tensor.lerp_(other.to(tensor.dtype), weight)
                changed += 1
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "base", help="the model the fine-tune started from (a directory or a bundled name)"
    )
    parser.add_argument("tuned", help="the fine-tuned model")
    parser.add_argument("out", help="where to write the average")
    parser.add_argument(
        "--weight", type=float, default=0.5, help="the fine-tuned model's share (default: 0.5)"
    )
    args = parser.parse_args(argv)
    try:
        base, _ = load_model(args.base)
        tuned, _ = load_model(args.tuned)
        changed = average(base, tuned, args.weight)
    except (PixelReasonError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base.save_pretrained(args.out)
    print(f"averaged {changed} tensors (weight {args.weight}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
