"""Latency of this checkout against another revision, interleaved query by query.

    python benchmarks/latency_ab.py --rev HEAD~1 --world 100

The machine's speed drifts by 20-30% within an hour, so two plain `latency.py` runs of two
versions cannot tell a 10% change. Here each version runs in its own worker process (the other
revision's `src/`, unpacked by `git archive`, first on its PYTHONPATH), both load the default
model, and the parent has them answer the same val queries in turn (cold, then cached; each
query twice per version, the order alternating), so drift falls on both alike. Prints medians
and means per version, and how many answers differ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(model: str, threads: int) -> None:
    """Answer val query indices read from stdin: one JSON line (cold, cached, text) each."""
    import torch

    from pixelreason import Segmenter
    from pixelreason.data.world.samples import generate_sample

    if threads:
        torch.set_num_threads(threads)
    segmenter = Segmenter.from_pretrained(model)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        sample = generate_sample(0, "val", int(line))
        query = sample.conversation[0][0]
        start = time.perf_counter()
        segmenter.set_image(sample.image)
        segmenter.segment(query)
        middle = time.perf_counter()
        text = segmenter.segment(query).text
        end = time.perf_counter()
        reply = {"cold": middle - start, "cached": end - middle, "text": text}
        print(json.dumps(reply), flush=True)


def spawn(source: Path, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, __file__, "--worker", "--model", args.model]
    command += ["--threads", str(args.threads)]
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    if json.loads(process.stdout.readline()).get("ready") is not True:
        raise SystemExit(f"the worker for {source} did not start")
    return process


def ask(process: subprocess.Popen, index: int) -> dict:
    process.stdin.write(f"{index}\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="the git revision to compare against (required)")
    parser.add_argument("--world", type=int, default=100, help="val queries (one image each)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.threads)
        return
    if not args.rev:
        parser.error("--rev is required")
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.rev, "src"], capture_output=True, check=False
        )
        if archive.returncode:
            raise SystemExit(f"git archive {args.rev}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        versions = {args.rev: spawn(Path(tmp) / "src", args), "this": spawn(ROOT / "src", args)}
        for process in versions.values():
            ask(process, 0)  # warm-up
        times = {(name, when): [] for name in versions for when in ("cold", "cached")}
        differ = 0
        for index in range(args.world):
            order = list(versions) if index % 2 == 0 else list(versions)[::-1]
            texts = {}
            for _ in range(2):
                for name in order:
                    reply = ask(versions[name], index)
                    texts[name] = reply["text"]
                    for when in ("cold", "cached"):
                        times[(name, when)].append(reply[when])
            differ += len(set(texts.values())) > 1
        for process in versions.values():
            process.stdin.close()
            process.wait()
    print(f"model: {args.model}; {args.world} val queries, each twice per version, interleaved")
    print(f"| ms | median, {args.rev} | median, this | mean, {args.rev} | mean, this |")
    print("|---|---|---|---|---|")
    for when in ("cold", "cached"):
        cells = [
            f"{1000 * reduce(times[(name, when)]):.1f}"
            for reduce in (statistics.median, statistics.mean)
            for name in versions
        ]
        print(f"| {when} | " + " | ".join(cells) + " |")
    print(f"answers that differ between the versions: {differ} of {args.world}")


if __name__ == "__main__":
    main()
