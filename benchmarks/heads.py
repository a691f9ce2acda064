"""Side-by-side comparison of segmentation methods on one ReasonWorld split.

    python benchmarks/heads.py [--models default default-pixellm ...] [--split test] [--limit N]

By default it compares the bundled model of every method (LISA, PixelLM, SAM4MLLM, PixelLLM).

For each model: quality on the split under the benchmark's exact rules (gIoU, cIoU, the
MUSE-style multi-target Hungarian score, no-target accuracy), parameters (all and the mask
head's), FLOPs per query counted with torch's FLOP counter (the whole query: both vision
encoders, generation and masks; and the mask head alone: its image encoder plus its decoder),
and the median latency of a query on a new image. Prints a markdown table; `--json` also
writes the numbers.

FLOPs count matrix multiplications and convolutions (torch.utils.flop_counter), averaged
over the first `--flop-samples` queries of the split, since answers differ in length.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from pixelreason import Segmenter
from pixelreason.config import METHOD_MODELS
from pixelreason.errors import PixelReasonError
from pixelreason.eval.evaluate import EvalItem, evaluate, items_from_reasonseg, items_from_world

SPLIT_SIZES = {"val": 200, "test": 779, "zeroshot": 200}


class FlopMeter:
    """Counts FLOPs of whole queries and, separately, of the mask head's two entry points."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self.head = segmenter.model.head
        self.head_flops = 0

    def _counted(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with FlopCounterMode(display=False) as counter:
                result = function(*args, **kwargs)
            self.head_flops += counter.get_total_flops()
            return result

        return wrapper

    @contextlib.contextmanager
    def _head_counted(self) -> Iterator[None]:
        originals = self.head.encode_image, self.head.forward
        self.head.encode_image = self._counted(originals[0])  # type: ignore[method-assign]
        self.head.forward = self._counted(originals[1])  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.head.encode_image, self.head.forward

    def query(self, item: EvalItem) -> tuple[int, int]:
        """(total, head) FLOPs of asking `item` on its image from scratch."""
        self.head_flops = 0
        with FlopCounterMode(display=False) as counter, self._head_counted():
            self.segmenter.set_image(item.image)
            self.segmenter.segment(item.query)
        return counter.get_total_flops(), self.head_flops


def load_items(args: argparse.Namespace) -> list[EvalItem]:
    if args.data:
        return list(items_from_reasonseg(Path(args.data) / args.split, args.limit))
    count = args.limit or SPLIT_SIZES[args.split]
    return items_from_world(args.seed, args.split, count, args.image_size)


def measure(name: str, items: list[EvalItem], flop_samples: int) -> dict[str, Any]:
    segmenter = Segmenter.from_pretrained(name)
    # Inference only; the FLOP counter's module tracker needs tensors without grad.
    segmenter.model.requires_grad_(False)
    report, _ = evaluate(segmenter, items, progress=sys.stderr.isatty())
    meter = FlopMeter(segmenter)
    flops = [meter.query(item) for item in items[:flop_samples]]
    model = segmenter.model
    return {
        "model": name,
        "method": model.config.head,
        "gIoU": report["overall"].get("giou"),
        "cIoU": report["overall"].get("ciou"),
        "multi_target": report["multi_target"]["hungarian_iou"],
        "no_target_accuracy": report["no_target_accuracy"]["value"],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "head_params_m": sum(p.numel() for p in model.head.parameters()) / 1e6,
        "gflops_query": statistics.mean(f[0] for f in flops) / 1e9,
        "gflops_head": statistics.mean(f[1] for f in flops) / 1e9,
        "latency_ms": report["latency_ms_median"],
        "count": report["count"],
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| model | method | gIoU | cIoU | multi-target | no-target acc | params (M) | "
        "head params (M) | GFLOPs/query | head GFLOPs/query | median latency (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['method']} | {_fmt(row['gIoU'])} | {_fmt(row['cIoU'])} | "
            f"{_fmt(row['multi_target'])} | {_fmt(row['no_target_accuracy'], 2)} | "
            f"{row['params_m']:.2f} | {row['head_params_m']:.2f} | "
            f"{row['gflops_query']:.3f} | {row['gflops_head']:.3f} | {row['latency_ms']:.1f} |"
        )
    base = rows[0]
    if len(rows) > 1:
        print()
    for row in rows[1:]:
        if row["gflops_head"] and row["gflops_query"]:
            print(
                f"{base['model']} / {row['model']}: head FLOPs "
                f"x{base['gflops_head'] / row['gflops_head']:.1f}, "
                f"query FLOPs x{base['gflops_query'] / row['gflops_query']:.2f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(METHOD_MODELS.values()),
        help="models to compare, first is the reference (default: each method's bundled model)",
    )
    parser.add_argument("--split", choices=sorted(SPLIT_SIZES), default="test")
    parser.add_argument(
        "--data", help="a ReasonSeg-format folder (default: generate ReasonWorld directly)"
    )
    parser.add_argument("--seed", type=int, default=0, help="ReasonWorld seed (default 0)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--limit", type=int, help="first N samples only")
    parser.add_argument("--flop-samples", type=int, default=20)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    try:
        items = load_items(args)
        rows = [measure(name, items, args.flop_samples) for name in args.models]
    except PixelReasonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(items)} samples, ReasonWorld {args.split} split, torch threads "
        f"{torch.get_num_threads()}\n"
    )
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
