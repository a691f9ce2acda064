"""Writing ReasonWorld splits in the ReasonSeg format, and the command line for it.

    python -m pixelreason.data.world.export OUT_DIR --seed 0 --train 239 --val 200 \
        --test 779 --zeroshot 200

Each split folder holds `<id>.png` + `<id>.json`. The JSON keeps the reference keys (`text`,
`is_sentence`, `shapes`) readable by any ReasonSeg tool; targets are polygons labelled "target"
with an extra `target_index` per shape so per-target masks can be rebuilt, and extra top-level
keys carry `kind`, `answer`, `conversation`, `target_names`, `fact_ids` and, for multi-turn
samples, `history_polygons` (the earlier turns' masks, kept out of `shapes` because the
reference rule would paint them as targets).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from pixelreason.data.formats.muse import SEG_PLACEHOLDER, MuseQuestion, MuseRecord, save_muse
from pixelreason.data.formats.reasonseg import ReasonSegSample, Shape, save_sample
from pixelreason.data.world.polygons import mask_to_polygons
from pixelreason.data.world.samples import SPLITS, WorldSample, generate_sample, stream
from pixelreason.tokens import SEG_TOKEN

__all__ = [
    "DEFAULT_SIZES",
    "export_muse",
    "export_reasonseg",
    "main",
    "stream",
    "to_muse",
    "to_reasonseg",
]

# The split sizes of the real ReasonSeg benchmark, plus a zero-shot split.
DEFAULT_SIZES: dict[str, int] = {"train": 239, "val": 200, "test": 779, "zeroshot": 200}


def to_reasonseg(sample: WorldSample) -> ReasonSegSample:
    """The ReasonSeg record of a generated sample (image path left empty until saved)."""
    shapes = [
        Shape("target", polygon, extra={"target_index": k})
        for k, mask in enumerate(sample.target_masks)
        for polygon in mask_to_polygons(mask)
    ]
    if sample.ignore_mask is not None:
        shapes += [Shape("ignore", polygon) for polygon in mask_to_polygons(sample.ignore_mask)]
    extra: dict[str, object] = {
        "kind": sample.kind,
        "answer": sample.answer,
        "conversation": [[user, assistant] for user, assistant in sample.conversation],
        "target_names": list(sample.target_names),
        "fact_ids": list(sample.fact_ids),
    }
    if sample.history_masks:
        extra["history_polygons"] = [
            [[[list(p) for p in poly] for poly in mask_to_polygons(m)] for m in turn]
            for turn in sample.history_masks
        ]
    return ReasonSegSample(
        id=sample.id,
        image_path=Path(),
        texts=list(sample.texts),
        is_sentence=sample.is_sentence,
        shapes=shapes,
        extra=extra,
    )


def iter_split_samples(seed: int, split: str, count: int, size: int) -> Iterator[WorldSample]:
    for index in range(count):
        yield generate_sample(seed, split, index, size=size)


def export_reasonseg(
    out_dir: str | Path,
    seed: int,
    sizes: Mapping[str, int] = DEFAULT_SIZES,
    image_size: int = 128,
    image_format: str = "png",
    progress: bool = True,
) -> dict[str, Path]:
    """Writes each split of `sizes` to `out_dir/<split>/`; returns the split folders.

    PNG is the default because JPEG artefacts would blur the one-pixel outlines and thin parts
    that the masks are exact to.
    """
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; expected some of {SPLITS}")
    root = Path(out_dir)
    folders = {}
    total = sum(sizes.values())
    with tqdm(total=total, disable=not progress, unit="sample") as bar:
        for split, count in sizes.items():
            folder = root / split
            folder.mkdir(parents=True, exist_ok=True)
            bar.set_description(split)
            for sample in iter_split_samples(seed, split, count, image_size):
                save_sample(to_reasonseg(sample), sample.image, folder, image_format=image_format)
                bar.update(1)
            folders[split] = folder
    return folders


def to_muse(sample: WorldSample, image: str) -> MuseRecord:
    """The MUSE record of a generated sample: its self-contained phrasing, the answer with
    `{seg}` per target, and one annotation per target (ignore pixels are not targets)."""
    question = MuseQuestion(
        question=sample.texts[0],
        text_answer=sample.answer.replace(SEG_TOKEN, SEG_PLACEHOLDER),
        masks=list(sample.target_masks),
        categories=list(sample.target_names),
    )
    size = sample.image.height, sample.image.width
    return MuseRecord(image, *size, [question], extra={"id": sample.id, "kind": sample.kind})


def export_muse(
    out_dir: str | Path,
    seed: int,
    sizes: Mapping[str, int] = DEFAULT_SIZES,
    image_size: int = 128,
    progress: bool = True,
) -> dict[str, Path]:
    """Writes `out_dir/muse_<split>.json` per split and the images under `out_dir/images/`;
    returns the JSON files. The samples are the same as `export_reasonseg`'s."""
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    files = {}
    with tqdm(total=sum(sizes.values()), disable=not progress, unit="sample") as bar:
        for split, count in sizes.items():
            bar.set_description(f"muse {split}")
            records = []
            for sample in iter_split_samples(seed, split, count, image_size):
                name = f"images/{split}_{sample.id}.png"
                sample.image.save(root / name)
                records.append(to_muse(sample, name))
                bar.update(1)
            files[split] = root / f"muse_{split}.json"
            save_muse(records, files[split])
    return files


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pixelreason.data.world.export",
        description="Write ReasonWorld splits in the ReasonSeg format.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    for split in SPLITS:
        parser.add_argument(f"--{split}", type=int, default=DEFAULT_SIZES[split], metavar="N")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png")
    parser.add_argument("--format", choices=("reasonseg", "muse"), default="reasonseg")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = {split: getattr(args, split) for split in SPLITS if getattr(args, split) > 0}
    if args.format == "muse":
        files = export_muse(
            args.out_dir, args.seed, sizes, image_size=args.image_size, progress=args.progress
        )
        for split, file in files.items():
            print(f"{split}: {sizes[split]} records in {file}")
        return 0
    folders = export_reasonseg(
        args.out_dir,
        args.seed,
        sizes,
        image_size=args.image_size,
        image_format=args.image_format,
        progress=args.progress,
    )
    for split, folder in folders.items():
        print(f"{split}: {sizes[split]} samples in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
