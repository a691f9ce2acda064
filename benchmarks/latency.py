"""Per-query latency (cold image vs cached image) and peak memory of a model on this machine.

    python benchmarks/latency.py [--model default] [--runs 20] [--threads N]
    python benchmarks/latency.py --world 100   # 100 ReasonWorld val queries, one image each
    python benchmarks/latency.py --world 100 --compare-reuse   # with and without reuse
    python benchmarks/latency.py --world 100 --compare-knowledge   # knowledge check off / on
    python benchmarks/latency.py --world 100 --compare-int8   # float32 LLM / int8 LLM
    python benchmarks/latency.py --world 100 --compare-half-steps   # float32 / float16 steps

Cold = set_image + segment (both vision encoders + generation + masks); cached = segment on
an image already set. Prints a table; timings are medians over --runs of one query on one
image, or with --world N over N different val-split queries (each timed once cold, once
cached). A query costs more where the presence or request check changes its answer (a second
decoding, or a teacher-forced pass over a rewritten answer): the output says how many did.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from pixelreason import Segmenter
from pixelreason.data.world.samples import generate_sample

QUERY = "What here is rich in vitamin C?"
#: Checks that decode an answer again where they change it.
CHANGES = ("presence_check", "request_check", "knowledge_check", "knowledge_ranking")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--image", default="examples/kitchen.png")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--world",
        type=int,
        default=0,
        help="time N ReasonWorld val-split queries (each on its own image) instead of --image",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--int8", action="store_true", help="the LLM's linear layers in int8")
    parser.add_argument(
        "--compare-int8",
        action="store_true",
        help="time each query on the model with a float32 LLM and on a copy with an int8 one "
        "(`--int8`), interleaved",
    )
    parser.add_argument(
        "--half-steps",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="float16 decoding steps (default: the loader's choice, on for a CPU with AVX2)",
    )
    parser.add_argument(
        "--compare-half-steps",
        action="store_true",
        help="time each query on the model with float32 decoding steps and on a copy with "
        "half steps (`pixelreason.models.quantize.half_steps`), interleaved",
    )
    parser.add_argument(
        "--compare-reuse",
        action="store_true",
        help="time each query with and without the model's reuse of work between decodings "
        "(`PixelReasonModel.reuse_states`), interleaved, so that the machine's drift cancels",
    )
    parser.add_argument(
        "--compare-knowledge",
        action="store_true",
        help="time each query with the knowledge check off and on (the model's "
        "`knowledge_start`), interleaved",
    )
    parser.add_argument(
        "--compare-instances",
        action="store_true",
        help="time each query with the instance question off and on (the model's "
        "`instance_question`), interleaved",
    )
    parser.add_argument(
        "--compare-snap",
        action="store_true",
        help="time each query with region snap off and on (the model's `snap_scale`), interleaved",
    )
    parser.add_argument(
        "--compare-mask-names",
        action="store_true",
        help="time each query with mask names off and on (the model's `mask_names`), interleaved",
    )
    parser.add_argument(
        "--compare-relations",
        action="store_true",
        help="time each query with relations off and on (the model's `relations`), interleaved",
    )
    parser.add_argument(
        "--compare-group-members",
        action="store_true",
        help="time each query with group members off and on (the model's `group_members`), "
        "interleaved",
    )
    parser.add_argument(
        "--compare-knowledge-ranking",
        action="store_true",
        help="time each query with the knowledge check's ranking part off and on (the model's "
        "`knowledge_ranking`), interleaved",
    )
    parser.add_argument(
        "--compare-knowledge-adapter",
        action="store_true",
        help="interleave runs with the knowledge check's statements read by the LLM itself "
        "and by its knowledge adapter (where the model has one)",
    )
    parser.add_argument(
        "--compare-colour-pixels",
        action="store_true",
        help="time each query with pixel colours and colour requests off and on (the model's "
        "`colour_pixels` and `colour_requests`), interleaved",
    )
    parser.add_argument(
        "--snap-scale",
        type=float,
        default=None,
        help="override the model's region snap (0: off; default: the model's setting)",
    )
    parser.add_argument(
        "--instance-question",
        default=None,
        help="override the model's instance question ('': off; default: the model's setting)",
    )
    parser.add_argument(
        "--knowledge-start",
        default=None,
        help="override the model's knowledge check ('': off; default: the model's setting)",
    )
    parser.add_argument(
        "--presence-threshold",
        type=float,
        default=None,
        help="override the model's presence check (0: off; default: the model's setting)",
    )
    parser.add_argument(
        "--colour-threshold",
        type=float,
        default=None,
        help="override the model's colour check (0: off; default: the model's setting)",
    )
    parser.add_argument(
        "--request-threshold",
        type=float,
        default=None,
        help="override the model's request check (0: off; default: the model's setting)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = Segmenter.from_pretrained(args.model, int8=args.int8, half_steps=args.half_steps)
    checks = ("presence_threshold", "colour_threshold", "request_threshold", "knowledge_start")
    for check in (*checks, "instance_question", "snap_scale"):
        if getattr(args, check) is not None:
            setattr(segmenter.model.config, check, getattr(args, check))
    if args.world:
        queries = [generate_sample(0, "val", index) for index in range(args.world)]
        cases = [(sample.image, sample.conversation[0][0]) for sample in queries]
    else:
        cases = [(args.image, QUERY)] * args.runs
    segmenter.set_image(cases[0][0])
    segmenter.segment(cases[0][1])  # warm-up
    model = segmenter.model
    for flag, name, options in (
        ("compare_int8", "int8", {"int8": True}),
        ("compare_half_steps", "half steps", {"half_steps": True}),
    ):
        if getattr(args, flag):
            full = Segmenter.from_pretrained(args.model, half_steps=False)
            small = Segmenter.from_pretrained(args.model, **options)
            for other in (full, small):
                other.model.config = model.config  # the same checks
                other.set_image(cases[0][0])
                other.segment(cases[0][1])
            compare(lambda on, a=small, b=full: a if on else b, cases, name)
            return
    if args.compare_reuse:

        def reuse(on: bool) -> None:
            model.reuse_states = on

        compare(_with(segmenter, reuse), cases, "reuse")
        return
    if args.compare_colour_pixels:
        pixels = _switch(model.config, "colour_pixels", False)
        requests = _switch(model.config, "colour_requests", False)

        def colours(on: bool) -> None:
            pixels(on)
            requests(on)

        compare(_with(segmenter, colours), cases, "pixel colours")
        return
    for flag, setting, name, off in (
        ("compare_knowledge", "knowledge_start", "knowledge check", ""),
        ("compare_instances", "instance_question", "instance question", ""),
        ("compare_snap", "snap_scale", "region snap", 0.0),
        ("compare_mask_names", "mask_names", "mask names", False),
        ("compare_relations", "relations", "relations", False),
        ("compare_group_members", "group_members", "group members", False),
        ("compare_knowledge_ranking", "knowledge_ranking", "knowledge ranking", False),
        ("compare_knowledge_adapter", "knowledge_adapter", "knowledge adapter", False),
    ):
        if getattr(args, flag):
            compare(_with(segmenter, _switch(model.config, setting, off)), cases, name)
            return
    cold, cached, tokens, redecoded = [], [], [], 0
    for image, query in tqdm(cases, desc="queries", disable=len(cases) < 50):
        start = time.perf_counter()
        segmenter.set_image(image)
        result = segmenter.segment(query)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = segmenter.segment(query)
        cached.append(time.perf_counter() - start)
        tokens.append(result.extras["num_tokens"])
        redecoded += any(key in result.extras for key in CHANGES)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in segmenter.model.parameters()) / 1e6
    print(f"model: {segmenter.description}")
    uncounted = " (float ones; the LLM's int8 weights not counted)" if args.int8 else ""
    print(f"parameters: {params:.2f} M{uncounted}, torch threads: {torch.get_num_threads()}")
    print("| measure | median | p90 |")
    print("|---|---|---|")
    for name, values in (("cold image (ms)", cold), ("cached image (ms)", cached)):
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"| {name} | {1000 * statistics.median(values):.1f} | {1000 * p90:.1f} |")
    print(f"| generated tokens | {statistics.median(tokens):.0f} | |")
    print(f"| peak RSS (MiB) | {peak_mib:.0f} | |")
    if args.world:
        print(f"queries: {len(cases)} ReasonWorld val samples (seed 0), one image each")
        print(
            f"answers the presence, request or knowledge check changed: {redecoded} of {len(cases)}"
        )
        return
    print(f"answer: {result.text}")
    config = segmenter.model.config
    checks = (  # (extras key, threshold, what it did when it acted, when it did not)
        ("presence_check", config.presence_threshold, "decoded twice", "one decoding"),
        ("colour_check", config.colour_threshold, "rewritten", "no change"),
        ("request_check", config.request_threshold, "changed", "no change"),
        ("knowledge_check", repr(config.knowledge_start), "decoded again", "no change"),
        ("knowledge_ranking", config.knowledge_ranking, "decoded again", "no change"),
    )
    for key, threshold, acted, idle in checks:
        extras = result.extras.get(key)
        state = f"{acted}; first {extras['rejected']!r}" if extras else idle
        print(f"{key.replace('_', ' ')} ({threshold}): {state}")


def _switch(config: object, setting: str, off: object) -> Callable[[bool], None]:
    """Turns a setting of `config` off (to `off`) and back on to its value."""
    value = getattr(config, setting)

    def switch(on: bool) -> None:
        setattr(config, setting, value if on else off)

    return switch


def _with(segmenter: Segmenter, switch: Callable[[bool], None]) -> Callable[[bool], Segmenter]:
    """`segmenter`, with `switch(on)` applied first."""

    def pick(on: bool) -> Segmenter:
        switch(on)
        return segmenter

    return pick


def compare(pick: Callable[[bool], Segmenter], cases: list, name: str) -> None:
    """Each query cold and cached, twice on `pick(False)` and twice on `pick(True)`
    (off, on, on, off), and a table of medians and means of each."""
    times: dict[tuple[str, bool], list[float]] = {}
    for image, query in tqdm(cases, desc="queries", disable=len(cases) < 50):
        for on in (False, True, True, False):
            segmenter = pick(on)
            start = time.perf_counter()
            segmenter.set_image(image)
            segmenter.segment(query)
            middle = time.perf_counter()
            segmenter.segment(query)
            times.setdefault(("cold", on), []).append(middle - start)
            times.setdefault(("cached", on), []).append(time.perf_counter() - middle)
    segmenter = pick(True)
    print(f"model: {segmenter.description}; {len(cases)} queries, each 2x each way")
    print(f"| ms | median, {name} off | median, on | mean, off | mean, on |")
    print("|---|---|---|---|---|")
    for when in ("cold", "cached"):
        off, on = times[(when, False)], times[(when, True)]
        cells = [statistics.median(off), statistics.median(on), statistics.mean(off)]
        cells.append(statistics.mean(on))
        print(f"| {when} | " + " | ".join(f"{1000 * value:.1f}" for value in cells) + " |")


if __name__ == "__main__":
    main()
