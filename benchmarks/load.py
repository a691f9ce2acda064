"""Load test of `pixelreason serve`: concurrent clients on loopback, with and without batching.

    python benchmarks/load.py [--model random:tiny] [--clients 8] [--requests 64]
                              [--seconds 60] [--batch-sizes 1,8]

For each --batch-sizes value the script starts the server (a subprocess on a free 127.0.0.1
port, --max-batch-size that value; 1 means no batching), sends --requests questions from
--clients concurrent clients (each question uploads the image, so it starts a conversation),
stops early after --seconds, and stops the server. It prints one table row per setting:
throughput, latency percentiles, the batch sizes the server ran and the failed requests.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

QUERY = "What here is rich in vitamin C?"
MAX_CLIENTS = 64
MAX_REQUESTS = 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--image", default="examples/kitchen.png")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64, help="per setting")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per setting")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated --max-batch-size")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--clients must be 1..{MAX_CLIENTS} and --requests 1..{MAX_REQUESTS}")
    image = Path(args.image).read_bytes()
    rows = []
    for size in (int(s) for s in args.batch_sizes.split(",")):
        with running_server(args.model, size, args.batch_wait_ms) as url:
            rows.append((size, *measure(url, image, args.clients, args.requests, args.seconds)))
    print(f"model: {args.model}, clients: {args.clients}, image: {args.image}")
    print(
        "| max batch | requests | req/s | p50 ms | p95 ms | batches run (size x count) | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, done, seconds, latencies, batches, errors in rows:
        ordered = sorted(latencies) or [float("nan")]
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        sizes = ", ".join(f"{k}x{v}" for k, v in sorted(batches.items()))
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "0"
        print(
            f"| {size} | {done} | {done / seconds:.1f} | {1000 * statistics.median(ordered):.0f} "
            f"| {1000 * p95:.0f} | {sizes} | {failed} |"
        )


@contextmanager
def running_server(model: str, max_batch_size: int, batch_wait_ms: float) -> Iterator[str]:
    """`pixelreason serve` in a subprocess on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "pixelreason.cli", "serve", "--model", model]
    command += ["--host", "127.0.0.1", "--port", str(port), "--max-queue", str(MAX_CLIENTS)]
    command += ["--max-batch-size", str(max_batch_size), "--batch-wait-ms", str(batch_wait_ms)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise SystemExit(f"server exited: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("server did not start within 180 s")
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(
    url: str, image: bytes, clients: int, requests: int, limit_s: float
) -> tuple[int, float, list[float], Counter[int], Counter[str]]:
    """Run the clients; return requests answered, seconds, latencies, batch sizes, errors."""
    with httpx.Client(timeout=120) as warm:  # first requests pay one-off costs
        for _ in range(2):
            ask(warm, url, image)
    before = Counter({int(k): v for k, v in health(url).items()})
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    budget = iter(range(requests))
    lock = threading.Lock()
    stop_at = time.monotonic() + limit_s

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if next(budget, None) is None:
                        return
                start = time.perf_counter()
                try:
                    status = ask(http, url, image)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                    else:
                        errors[str(status)] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    seconds = time.perf_counter() - start
    after = Counter({int(k): v for k, v in health(url).items()})
    return len(latencies), seconds, latencies, after - before, errors


def ask(http: httpx.Client, url: str, image: bytes) -> int:
    response = http.post(
        f"{url}/api/segment",
        data={"query": QUERY},
        files={"image": ("image.png", image, "image/png")},
    )
    return response.status_code


def health(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/api/health", timeout=10).json()["batch_sizes"]


if __name__ == "__main__":
    main()
