"""The `pixelreason` command line: thin wrappers around `pixelreason.api`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelreason import __version__

if TYPE_CHECKING:
    from pixelreason.config import ModelConfig

EXIT_USAGE = 2

DESCRIPTION = """\
pixelreason answers implicit questions about an image ("what here is rich in vitamin C?")
with text plus one segmentation mask per object the answer refers to.
"""

EPILOG = """\
examples:
  pixelreason segment examples/kitchen.png "What here is rich in vitamin C?" --out out/
  pixelreason chat examples/kitchen.png
  pixelreason segment photo.jpg "the mug left of the plant" --model path/to/model_dir
  pixelreason serve --port 8000        # web page and HTTP API on http://127.0.0.1:8000/

models: "default" and "default-pixellm" (bundled), "random:PRESET" (untrained), or a
directory written by save_pretrained / `pixelreason train`.
Bad input exits with status 2 and a one-line message; set PIXELREASON_DEBUG=1 for tracebacks.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixelreason",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pixelreason {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    seg = commands.add_parser(
        "segment",
        help="answer one question about an image and write its masks",
        description="Answer QUERY about IMAGE; print the answer and write one PNG mask per "
        "target (mask_K.png), an overlay (overlay.png) and result.json (text, COCO RLE masks, "
        "boxes, scores) into --out.",
    )
    seg.add_argument("image", help="image file (PNG, JPEG, WebP, BMP, TIFF, GIF)")
    seg.add_argument("query", help="the question or instruction, in quotes")
    seg.add_argument(
        "--out",
        default="pixelreason-out",
        help="directory for masks, overlay and JSON (default: %(default)s)",
    )
    seg.add_argument(
        "--box",
        default=None,
        metavar="X0,Y0,X1,Y1",
        help="a location prompt in pixels, for models that read one (pixelllm: "
        '"What is in this box?"); default: none (the whole image)',
    )
    _model_options(seg)

    chat = commands.add_parser(
        "chat",
        help="talk about an image in the terminal (multi-turn)",
        description="Multi-turn conversation about IMAGE. Type a question and press Enter; "
        "/reset starts a new conversation, /quit (or Ctrl-D) leaves. With --out, each turn's "
        "overlay, masks and JSON go to OUT/turn_N.",
    )
    chat.add_argument("image", help="image file")
    chat.add_argument("--out", default=None, help="also save each turn's results here")
    _model_options(chat)
    trainer = commands.add_parser(
        "train",
        help="train a model from YAML recipes (resumes if interrupted)",
        description="Train by RECIPE (see recipes/*.yaml). Progress bar with loss and "
        "throughput; checkpoints under OUT/checkpoint are written atomically and a rerun "
        "resumes from them; the final model goes to OUT/model, the curve to OUT/curve.png. "
        "Several recipes run in order, as stages: a stage whose `init` names the previous "
        "stage's OUT/model continues from it, and a rerun resumes at the unfinished stage. "
        "A recipe with `task: pretrain` trains the image encoders alone on generated scenes "
        "(recipes/pretrain.yaml), before a stage that starts from them. "
        "Runs on one CPU process, or on many GPUs with `accelerate launch -m pixelreason.cli`.",
    )
    trainer.add_argument("recipe", nargs="+", help="YAML recipe files, run in this order")
    trainer.add_argument(
        "--out", default=None, help="output directory (default: the recipe's; one recipe only)"
    )
    trainer.add_argument(
        "--steps", type=int, default=None, help="override train.steps (one recipe only)"
    )

    evaluator = commands.add_parser(
        "eval",
        help="gIoU/cIoU of a model on a ReasonSeg-format split",
        description="Evaluate MODEL on DATA_DIR/SPLIT (ReasonSeg format) with the benchmark's "
        "rules: gIoU, cIoU, short/long and per-kind breakdown, no-target accuracy, multi-target "
        "score. Writes OUT/report.json and OUT/grid.png (best and worst overlays).",
    )
    evaluator.add_argument("model", help="model name or directory")
    evaluator.add_argument("data_dir", help="folder with one sub-folder per split")
    evaluator.add_argument("--split", default="val", help="split folder name (default: val)")
    evaluator.add_argument("--limit", type=int, default=None, help="only the first N samples")
    evaluator.add_argument("--out", default=None, help="report folder (default: DATA_DIR/eval)")
    evaluator.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    _int8_option(evaluator)
    _presence_option(evaluator)

    _serve_parser(commands)

    colours = commands.add_parser(
        "fit-colours",
        help="count a model's pixel colours on ReasonWorld scenes (for --colour-pixels)",
        description="Count, for each of MODEL_DIR's colour probe labels ('red apple', ...), "
        "how often its objects' visible pixels fall into each RGB bin, on --scenes ReasonWorld "
        "training scenes, and write the counts beside the weights (pixel_colours.safetensors) "
        "with colour_pixels on: mask names and 'same colour' relations then read a mask's "
        "colour off the pixels inside it. Seconds per thousand scenes.",
    )
    colours.add_argument("model_dir", help="a model directory with ReasonWorld's colour labels")
    colours.add_argument(
        "--scenes", type=int, default=2000, help="scenes to count (default: %(default)s)"
    )
    colours.add_argument("--seed", type=int, default=0, help="scene seed (default: %(default)s)")

    _fit_parser(
        commands,
        "fit-object-cuts",
        "train a model's object cuts on ReasonWorld scenes (touching objects told apart)",
        "Train the object-cut network (pixelreason.models.objects) on fresh ReasonWorld scenes "
        "to find the pixels where two objects touch, and write it beside MODEL_DIR's weights "
        "(object_cuts.safetensors, with object_cuts-history.json) with object_cuts on: "
        "several-target answers then part touching objects of one class, and a single "
        "target's mask drops a touching object of another class. About 0.8 s a step on a "
        "2-core CPU.",
        steps=3000,
    )
    _fit_parser(
        commands,
        "fit-category-map",
        "train a model's category map on ReasonWorld scenes (each pixel's category)",
        "Train the category map (pixelreason.models.category_map) on fresh ReasonWorld scenes "
        "to read the category of every pixel, and write it beside MODEL_DIR's weights "
        "(category_map.safetensors, with category_map-history.json) with category_map on: a "
        "single target's mask that lies off the category its answer names then moves onto "
        "that category's region, relations take their candidates from its regions, and a "
        "request for a class the answer missed grounds its region. The network so far is "
        "written every 100 steps, so a killed fit keeps its work (run again to train afresh). "
        "About 1.5 s a step on a 2-core CPU.",
        steps=2000,
    )

    world = commands.add_parser(
        "world",
        help="export ReasonWorld splits in the ReasonSeg or MUSE format",
        description="Generate ReasonWorld (deterministic by --seed) into OUT_DIR/{train,val,"
        "test,zeroshot} as ReasonSeg-format image + JSON pairs, or (--format muse) as "
        "OUT_DIR/muse_<split>.json + OUT_DIR/images/ for multi-target training (PixelLM).",
    )
    world.add_argument("out_dir")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--format", choices=("reasonseg", "muse"), default="reasonseg")
    for split, size in (("train", 239), ("val", 200), ("test", 779), ("zeroshot", 200)):
        world.add_argument(f"--{split}", type=int, default=size, help=f"samples (default {size})")
    return parser


SERVE_DESCRIPTION = """\
Serve MODEL over HTTP: a web page at / (drop an image, ask, see each target's mask, continue
the conversation, download masks) and a JSON API with its OpenAPI spec at /docs:

  POST /api/segment   form fields: image (file) or conversation_id, query, [method],
                      [overlay=true]; answers text, COCO RLE masks, boxes, scores
  GET  /api/models    the model, its methods and the limits below
  GET  /api/health    queue length and batch sizes so far

Questions that arrive together are answered in one batch (up to --max-batch-size, waiting at
most --batch-wait-ms for company). When --max-queue questions wait, new ones get 503; a
question not answered within --timeout gets 504. Conversations live in memory only.
"""

SERVE_EPILOG = """\
The server listens on 127.0.0.1 (this machine only) unless --host says otherwise. It has no
authentication: use --host 0.0.0.0 only on a network you trust.
"""


def _serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="web page and HTTP API (batched, with limits)",
        description=SERVE_DESCRIPTION,
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_options(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default: %(default)s, reachable from this machine only)",
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    limits = serve.add_argument_group("batching and limits")
    limits.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        help="most questions answered in one batch; 1 turns batching off (default: %(default)s)",
    )
    limits.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="how long a question waits for others to share its batch (default: %(default)s)",
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="questions that may wait; more are refused with 503 (default: %(default)s)",
    )
    limits.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds before a question is given up with 504 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-upload-mb",
        type=float,
        default=16.0,
        help="largest image file accepted, in MiB (default: %(default)s)",
    )
    limits.add_argument(
        "--max-megapixels",
        type=float,
        default=40.0,
        help="largest image accepted, in millions of pixels (default: %(default)s)",
    )
    limits.add_argument(
        "--max-conversations",
        type=int,
        default=256,
        help="conversations kept in memory; the least recently used go first "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--conversation-ttl",
        type=float,
        default=1800.0,
        help="seconds an idle conversation is kept (default: %(default)s)",
    )


def _presence_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--presence-threshold",
        type=float,
        default=None,
        metavar="P",
        help="presence check: an answer that grounds a class the model's vision probe finds in "
        "no image cell with probability >= P is decoded again without that class's names; 0 "
        "turns it off (default: the model's setting, 0.1 for the bundled default)",
    )
    parser.add_argument(
        "--colour-threshold",
        type=float,
        default=None,
        metavar="P",
        help="colour check (models with a colour probe): an answer that grounds 'COLOUR "
        "CATEGORY' the colour probe finds in no cell with probability >= P, while it finds that "
        "category in other colours, gets the colour it finds most for that category; 0 turns it "
        "off (default: the model's setting, 0.1 for the bundled default)",
    )
    parser.add_argument(
        "--request-threshold",
        type=float,
        default=None,
        metavar="P",
        help="request check (models with a probe): a query for one class by name ('the red "
        "mug') is answered in words when the probe does not find that class, and its refusal "
        "is decoded again when the probes find it (the colour probe the colour and class the "
        "query names) with probability >= P; 0 turns it off (default: the model's setting)",
    )
    parser.add_argument(
        "--knowledge-start",
        default=None,
        metavar="WORDS",
        help="knowledge check (models with a probe): the LLM states, from these first words of "
        "a text answer, what the query asks about ('A lemon tastes very sour.'), and an answer "
        "grounding another object is decoded again for the stated one where the statement "
        "restates the query, and one that the LLM states a missing object for says that the "
        "image does not show it; '' turns it off (default: the model's setting, ' A' for the "
        "bundled default)",
    )
    parser.add_argument(
        "--instance-overlap",
        type=float,
        default=None,
        metavar="IOU",
        help="instance split: masks of one answer that overlap with IoU >= IOU ('the orange "
        "<SEG> and the orange <SEG>' decoded twice as both oranges) each take one separate "
        "region of their union; 0 turns it off (default: the model's setting, 0.5 unless "
        "its config says otherwise)",
    )
    parser.add_argument(
        "--instance-question",
        default=None,
        metavar="TEXT",
        help="instance question (models with probe labels): an answer grounding one class "
        "with several targets asks the model TEXT about the class ({plural}: its plural name) "
        "and the targets take the regions of that mask, one instance each; '' turns it off "
        "(default: the model's setting, 'Where are the {plural}?' for the bundled default)",
    )
    parser.add_argument(
        "--instance-spare",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with the instance question, regions beyond the class's targets become targets "
        "of their own ('... and the orange <SEG>'), not parts of one (default: the model's "
        "setting, on for the bundled default)",
    )
    parser.add_argument(
        "--mask-names",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mask names (models with probe labels): a target the answer names by no class "
        "('Sure, it is <SEG>.') is named by the class the probe reads inside its final mask, "
        "and each target named 'COLOUR CATEGORY' gets the colour the colour probe reads there "
        "(default: the model's setting, on for the bundled default)",
    )
    parser.add_argument(
        "--object-cuts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="object cuts (models with them, written by `pixelreason fit-object-cuts`): "
        "touching objects of one class become separate targets where an answer needs more "
        "regions than its class's mask has, and a single target's mask drops a touching "
        "object whose pixels read as another class (default: the model's setting, on for "
        "the bundled default)",
    )
    parser.add_argument(
        "--category-map",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the category map (models with one, written by `pixelreason fit-category-map`): "
        "a single target's mask that lies off the pixels of the category its answer names "
        "moves onto that category's region, relations take their candidates from its regions, "
        "and a request for a class the answer missed grounds its region (default: the model's "
        "setting, on for the bundled default)",
    )
    parser.add_argument(
        "--colour-pixels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mask names and 'same colour' relations read each mask's colour off the image's "
        "pixels inside it (models with pixel colours, written by `pixelreason fit-colours`) "
        "rather than off the colour probe (default: the model's setting, on for the bundled "
        "default)",
    )
    parser.add_argument(
        "--relations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="relations (models with probe labels and the instance question): a question about "
        "positions or sizes ('the cup left of the plant', 'the biggest fruit', '... What is "
        "closest to it?') asks the model where the candidates and the reference are and picks "
        "among their regions by geometry (default: the model's setting, on for the bundled "
        "default)",
    )
    parser.add_argument(
        "--group-members",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="group members (models with probe labels and the instance question): an answer "
        "that grounds two or more targets also grounds the classes the LLM finds about as "
        "likely to start it ('Where are the kitchen items?': the cup beside the bottle it "
        "names) (default: the model's setting, on for the bundled default)",
    )
    parser.add_argument(
        "--knowledge-ranking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the knowledge check's ranking part (models with a knowledge start): an answer to "
        "a query that asks for no class by name and about no relation ('What here is squeezed "
        "to make lemonade?') follows the class of the image the LLM finds clearly likeliest "
        "to start its statement (' A lemon'), or, where the query states its fact, likeliest as "
        "the subject of that statement after the text question ('What is squeezed to make "
        "lemonade?'); a several-target answer to such a query also drops the classes whose "
        "statement is far less likely (default: the model's setting, on for the bundled "
        "default)",
    )
    parser.add_argument(
        "--knowledge-adapter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the knowledge check's statements about the image's objects, and its ranking "
        "part, read the model's knowledge adapter, a LoRA on its LLM trained on text, where "
        "the model has one; answers and masks never do (default: on)",
    )
    parser.add_argument(
        "--snap-scale",
        type=float,
        default=None,
        metavar="S",
        help="region snap: the final masks follow the image's colour regions (Felzenszwalb's "
        "graph segmentation at scale S; larger gives larger regions), for images whose objects "
        "differ from their surroundings in colour; 0 turns it off (default: the model's "
        "setting, 300 for the bundled default)",
    )


def _set_checks(model: Any, args: argparse.Namespace) -> None:
    """The inference checks' settings given on the command line, checked."""
    from pixelreason.errors import InputError

    options = ("presence_threshold", "colour_threshold", "request_threshold", "instance_overlap")
    for option in options:
        threshold = getattr(args, option)
        if threshold is None:
            continue
        if not 0 <= threshold <= 1:
            flag = "--" + option.replace("_", "-")
            raise InputError(f"{flag} must be between 0 and 1, got {threshold}")
        setattr(model.config, option, threshold)
    if args.knowledge_start is not None:
        if len(args.knowledge_start) > 40:
            raise InputError("--knowledge-start takes a few words, at most 40 characters")
        model.config.knowledge_start = args.knowledge_start
    if args.instance_question is not None:
        question = args.instance_question
        try:
            filled = question.format(name="mug", plural="mugs")
        except (KeyError, IndexError, ValueError):
            filled = question  # other fields or stray braces
        if len(question) > 200 or (question and (filled == question or "mugs" not in filled)):
            raise InputError(
                "--instance-question takes a question with {plural} in it "
                "('Where are the {plural}?'), at most 200 characters, or '' for off"
            )
        model.config.instance_question = question
    if args.instance_spare is not None:
        model.config.instance_spare = args.instance_spare
    if args.mask_names is not None:
        model.config.mask_names = args.mask_names
    if args.relations is not None:
        model.config.relations = args.relations
    if args.group_members is not None:
        model.config.group_members = args.group_members
    if args.knowledge_ranking is not None:
        model.config.knowledge_ranking = args.knowledge_ranking
    if args.knowledge_adapter is not None:
        if args.knowledge_adapter and model.knowledge_language_model is None:
            raise InputError("--knowledge-adapter: this model has no knowledge adapter")
        model.config.knowledge_adapter = args.knowledge_adapter
    fitted = (  # options that need a fit's file beside the weights
        ("colour_pixels", model.pixel_colours, "pixel colours", "fit-colours"),
        ("object_cuts", model.cut_net, "object cuts", "fit-object-cuts"),
        ("category_map", model.category_net, "a category map", "fit-category-map"),
    )
    for name, fit, what, command in fitted:
        wanted = getattr(args, name)
        if wanted is None:
            continue
        if wanted and fit is None:
            option = "--" + name.replace("_", "-")
            raise InputError(f"{option} needs a model with {what} (`pixelreason {command}`)")
        setattr(model.config, name, wanted)
    if args.snap_scale is not None:
        if not 0 <= args.snap_scale <= 1e5:
            raise InputError(f"--snap-scale must be between 0 and 100000, got {args.snap_scale}")
        model.config.snap_scale = args.snap_scale


def _int8_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--int8",
        action="store_true",
        help="the LLM's linear layers in int8 (CPU only): faster decoding on a CPU; answers are "
        "close to, not the same as, float32's (see the README's results)",
    )
    parser.add_argument(
        "--half-steps",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decoding steps multiply by float16 copies of the LLM's weights, for speed (on by "
        "default on a CPU with AVX2 or better; prompts and the vocabulary head stay float32; "
        "--no-half-steps: float32 throughout)",
    )


def _model_options(parser: argparse.ArgumentParser) -> None:
    from pixelreason.config import METHOD_MODELS

    parser.add_argument(
        "--model",
        default=None,
        help="model name or directory (default: the bundled model of --method, else 'default')",
    )
    parser.add_argument(
        "--method",
        choices=sorted(METHOD_MODELS),
        default=None,
        help="segmentation method: alone it picks that method's bundled model "
        "(lisa: default, pixellm: default-pixellm, ...); with --model it checks the model's",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)"
    )
    _int8_option(parser)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="longest answer in tokens (default: the model's setting)",
    )
    _presence_option(parser)


def cmd_segment(args: argparse.Namespace) -> int:
    from pixelreason.api import Segmenter, save_result
    from pixelreason.imaging import load_image
    from pixelreason.processing import validate_query

    # Check the cheap inputs before loading the model.
    query = validate_query(args.query)
    box = _parse_box(args.box)
    image = load_image(args.image)
    segmenter = Segmenter.from_pretrained(
        args.model,
        method=args.method,
        device=args.device,
        int8=args.int8,
        half_steps=args.half_steps,
    )
    _set_checks(segmenter.model, args)
    _note_model(segmenter.description)
    segmenter.set_image(image)
    result = segmenter.segment(query, max_new_tokens=args.max_new_tokens, location=box)
    written = save_result(
        result,
        image,
        args.out,
        extra={"image": str(args.image), "query": query, "model": segmenter.description},
    )
    print(result.text)
    _print_prompts(result)
    print(
        f"{len(result.masks)} target(s); wrote {', '.join(p.name for p in written.values())} "
        f"to {Path(args.out)}"
    )
    return 0


def _print_prompts(result: Any) -> None:
    """SAM4MLLM: the SAM prompt behind each mask, as written and in pixels."""
    for index, prompt in enumerate(result.extras.get("sam_prompts") or []):
        box = ", ".join(f"{v:.0f}" for v in prompt["box"])
        points = " ".join(
            f"{'in' if label else 'out'}({x:.0f},{y:.0f})" for x, y, label in prompt["points"]
        )
        print(f"  target {index + 1}: {prompt['text']}  ->  box({box}) {points} px".rstrip())


def _parse_box(text: str | None) -> list[float] | None:
    from pixelreason.errors import InputError

    if text is None:
        return None
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise InputError(f"--box needs four comma-separated numbers X0,Y0,X1,Y1, got {text!r}")
    return box


def cmd_chat(args: argparse.Namespace) -> int:
    from pixelreason.api import Segmenter, save_result
    from pixelreason.errors import InputError
    from pixelreason.imaging import load_image

    image = load_image(args.image)
    segmenter = Segmenter.from_pretrained(
        args.model,
        method=args.method,
        device=args.device,
        int8=args.int8,
        half_steps=args.half_steps,
    )
    _set_checks(segmenter.model, args)
    _note_model(segmenter.description)
    segmenter.set_image(image)
    print("Ask about the image. /reset starts over, /quit leaves.")
    turn = 0
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        command = line.strip()
        if command in ("/quit", "/exit"):
            return 0
        if command == "/reset":
            segmenter.reset()
            print("(new conversation)")
            continue
        if not command:
            continue
        try:
            result = segmenter.chat(command, max_new_tokens=args.max_new_tokens)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            continue
        turn += 1
        print(f"pixelreason> {result.text}  [{len(result.masks)} mask(s)]")
        _print_prompts(result)
        if args.out:
            save_result(result, image, Path(args.out) / f"turn_{turn}", extra={"query": command})


def cmd_train(args: argparse.Namespace) -> int:
    from pixelreason.errors import InputError
    from pixelreason.train.recipe import load_recipe, run_recipe

    if len(args.recipe) > 1 and (args.out is not None or args.steps is not None):
        raise InputError("--out and --steps apply to one recipe; set them in each stage's file")
    # Every file is checked before the first stage starts, so a typo in the last stage does
    # not surface hours later.
    recipes = [load_recipe(path) for path in args.recipe]
    for number, (path, recipe) in enumerate(zip(args.recipe, recipes, strict=True), start=1):
        if len(recipes) > 1:
            print(f"stage {number}/{len(recipes)}: {path}")
        if args.steps is not None:
            recipe.train.steps = args.steps
        result = run_recipe(recipe, args.out)
        print(f"trained {result.steps} steps; model in {result.final_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from pixelreason.api import Segmenter
    from pixelreason.data.formats.reasonseg import DatasetFormatError
    from pixelreason.errors import InputError
    from pixelreason.eval.evaluate import evaluate, items_from_reasonseg, result_grid

    split_dir = Path(args.data_dir) / args.split
    if not split_dir.is_dir():
        raise InputError(f"split folder not found: {split_dir}")
    segmenter = Segmenter.from_pretrained(
        args.model, device=args.device, int8=args.int8, half_steps=args.half_steps
    )
    _set_checks(segmenter.model, args)
    _note_model(segmenter.description)
    try:
        items = list(items_from_reasonseg(split_dir, args.limit))
    except DatasetFormatError as exc:
        raise InputError(str(exc)) from exc
    report, records = evaluate(segmenter, items)
    report.update(data=str(split_dir), split=args.split)
    out = Path(args.out) if args.out else Path(args.data_dir) / "eval" / args.split
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    result_grid(records, out / "grid.png")
    overall = report["overall"]
    print(
        f"{args.split}: gIoU {overall['giou']:.4f}  cIoU {overall['ciou']:.4f}  "
        f"({report['count']} samples)"
    )
    for name in ("short", "long"):
        if report[name]:
            print(f"  {name}: gIoU {report[name]['giou']:.4f} ({report[name]['count']})")
    print(f"report: {out / 'report.json'}, grid: {out / 'grid.png'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pixelreason.errors import InputError
    from pixelreason.registry import load_model
    from pixelreason.server import SegmentService, ServerConfig, create_app

    config = ServerConfig(
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_queue=args.max_queue,
        request_timeout_s=args.timeout,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        max_conversations=args.max_conversations,
        conversation_ttl_s=args.conversation_ttl,
        max_new_tokens=args.max_new_tokens,
    )
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    model, description = load_model(
        args.model,
        method=args.method,
        device=args.device,
        int8=args.int8,
        half_steps=args.half_steps,
    )
    _set_checks(model, args)
    _note_model(description)
    service = SegmentService(model, description, config, model_name=str(args.model or description))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"note: listening on {args.host}, not only this machine; there is no authentication.",
            file=sys.stderr,
        )
    print(f"pixelreason: web page and API on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_fit_colours(args: argparse.Namespace) -> int:
    from pixelreason.config import ModelConfig
    from pixelreason.errors import InputError
    from pixelreason.models.pixel_colours import fit_world

    if not 1 <= args.scenes <= 1_000_000:
        raise InputError(f"--scenes must be between 1 and 1000000, got {args.scenes}")
    config = ModelConfig.load(args.model_dir)
    if not config.colour_probe_labels:
        raise InputError(f"{args.model_dir} has no colour probe labels to count")
    try:
        reader = fit_world(config.colour_probe_labels, args.scenes, seed=args.seed)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    # the counts first: a config that sets colour_pixels is never left without them
    reader.save(args.model_dir)
    config.colour_pixels = True
    config.save(args.model_dir)
    print(f"counted {args.scenes} scenes; colour_pixels on in {args.model_dir}")
    return 0


def _fit_parser(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str, steps: int
) -> None:
    """A `fit-*` command that trains a network on fresh ReasonWorld scenes beside a model."""
    fit = commands.add_parser(name, help=summary, description=description)
    fit.add_argument("model_dir", help="a model directory")
    fit.add_argument("--steps", type=int, default=steps, help="steps (default: %(default)s)")
    fit.add_argument("--batch", type=int, default=16, help="scenes a step (default: %(default)s)")
    fit.add_argument("--seed", type=int, default=0, help="scene seed (default: %(default)s)")


def _fit_config(args: argparse.Namespace) -> ModelConfig:
    """The config of a `fit-*` command's model directory, after checking --steps and --batch."""
    from pixelreason.config import ModelConfig
    from pixelreason.errors import InputError

    if not 1 <= args.steps <= 1_000_000 or not 1 <= args.batch <= 4096:
        raise InputError(f"--steps and --batch must be positive, got {args.steps}, {args.batch}")
    return ModelConfig.load(args.model_dir)


def cmd_fit_object_cuts(args: argparse.Namespace) -> int:
    from pixelreason.models.objects import fit_world, save_history

    config = _fit_config(args)
    model, history = fit_world(args.steps, batch=args.batch, seed=args.seed)
    # the weights first: a config that sets object_cuts is never left without them
    model.save(args.model_dir)
    save_history(args.model_dir, history)
    config.object_cuts = True
    config.save(args.model_dir)
    last = history[-1]
    print(
        f"trained {args.steps} steps: band precision {last['precision']:.3f}, recall "
        f"{last['recall']:.3f} on 64 held-out scenes; object_cuts on in {args.model_dir}"
    )
    return 0


def cmd_fit_category_map(args: argparse.Namespace) -> int:
    from pixelreason.models.category_map import CategoryMap, fit_world
    from pixelreason.models.objects import save_history

    config = _fit_config(args)

    def snapshot(net: CategoryMap, history: list[dict[str, float]]) -> None:
        net.save(args.model_dir)
        save_history(args.model_dir, history, "category_map")

    _, history = fit_world(args.steps, batch=args.batch, seed=args.seed, snapshot=snapshot)
    # the weights are written (by the last snapshot) before the config turns them on
    config.category_map = True
    config.save(args.model_dir)
    last = history[-1]
    print(
        f"trained {args.steps} steps: {last['objects']:.3f} of object pixels and "
        f"{last['background']:.3f} of background pixels classed right on 64 held-out scenes; "
        f"category_map on in {args.model_dir}"
    )
    return 0


def cmd_world(args: argparse.Namespace) -> int:
    from pixelreason.data.world.export import main as export_main

    argv = [args.out_dir, "--seed", str(args.seed), "--format", args.format]
    for split in ("train", "val", "test", "zeroshot"):
        argv += [f"--{split}", str(getattr(args, split))]
    return export_main(argv)


def _note_model(description: str) -> None:
    if "UNTRAINED" in description:
        print(
            f"note: using an {description}; no trained default model is bundled yet.",
            file=sys.stderr,
        )


COMMANDS = {
    "segment": cmd_segment,
    "chat": cmd_chat,
    "train": cmd_train,
    "eval": cmd_eval,
    "world": cmd_world,
    "fit-colours": cmd_fit_colours,
    "fit-object-cuts": cmd_fit_object_cuts,
    "fit-category-map": cmd_fit_category_map,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    from pixelreason.errors import PixelReasonError

    try:
        return COMMANDS[args.command](args)
    except PixelReasonError as exc:
        if os.environ.get("PIXELREASON_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, with a way to get the traceback
        if os.environ.get("PIXELREASON_DEBUG"):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (PIXELREASON_DEBUG=1 shows more)",
            file=sys.stderr,
        )
        return 1


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
