"""What SAM4MLLM's text prompts cost in training, next to LISA's `<SEG>`, on ReasonWorld.

    PYTHONPATH=src python benchmarks/sam4mllm_costs.py [--batches 4] [--threads 1]

Prints a table: answer tokens per sample, tokens per target prompt, and seconds per batch of 8
for collate (where PPG runs SAM on K point groups per mask) and one forward + backward pass,
for the `small` preset (LISA head) and `small-sam4mllm` with K = 1, 8 and 64 (random weights;
the cost does not depend on them). The first batch is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import time

import torch

from pixelreason.config import preset
from pixelreason.data.mixing import MixConfig, WorldMixture
from pixelreason.models.heads.text_prompts import parse_prompts
from pixelreason.models.segmenter import PixelReasonModel

RATES = {"sem_seg": 6, "refer": 3, "text_qa": 2, "reason": 6}  # recipes/sam4mllm.yaml


def measure(name: str, head_args: dict | None, batches: list) -> dict[str, float]:
    torch.manual_seed(0)
    config = preset(name)
    if head_args is not None:
        config.head_args = head_args
    model = PixelReasonModel.from_config(config)
    tokenizer = model.preprocessor.tokenizer
    collate = forward = 0.0
    answer_tokens, prompt_tokens, prompts = 0, 0, 0
    for index, samples in enumerate(batches):
        start = time.perf_counter()
        batch = model.collate(samples)
        collated = time.perf_counter()
        model(batch).loss.backward()
        done = time.perf_counter()
        if index:
            collate += collated - start
            forward += done - collated
        for labels in batch.labels:
            answer = labels[labels >= 0]
            answer_tokens += len(answer)
            for block in parse_prompts(tokenizer.decode(answer)):
                if block.has_box:
                    prompts += 1
                    text = " " + block.to_text()
                    prompt_tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"])
    counted = max(len(batches) - 1, 1)
    samples = sum(len(b) for b in batches)
    return {
        "answer_tokens": answer_tokens / samples,
        "prompt_tokens": prompt_tokens / max(prompts, 1),
        "collate_s": collate / counted,
        "forward_backward_s": forward / counted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mixture = WorldMixture(MixConfig(rates=RATES))
    batches = [[mixture(8 * b + i) for i in range(8)] for b in range(args.batches)]
    rows = [
        ("small (LISA)", "small", None),
        ("small-sam4mllm, K=1", "small-sam4mllm", {"groups": 1}),
        ("small-sam4mllm, K=8", "small-sam4mllm", {"groups": 8}),
        ("small-sam4mllm, K=64 (preset)", "small-sam4mllm", {"groups": 64}),
    ]
    print(f"batches of 8 ReasonWorld samples, {args.threads} thread(s)\n")
    print("| model | answer tokens/sample | tokens/prompt | collate s/batch | fwd+bwd s/batch |")
    print("|---|---|---|---|---|")
    for label, name, head_args in rows:
        m = measure(name, head_args, batches)
        prompt = f"{m['prompt_tokens']:.1f}" if "sam4mllm" in name else "1 (<SEG>)"
        print(
            f"| {label} | {m['answer_tokens']:.1f} | {prompt} | {m['collate_s']:.3f} "
            f"| {m['forward_backward_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
