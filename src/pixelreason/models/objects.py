"""Object cuts: the lines where two objects touch, so that touching objects come apart.

A mask's regions (`pixelreason.models.instances.regions_of`) are its connected components,
and two objects that touch are one component: "the lemon <SEG> and the lemon <SEG>" over two
lemons side by side, or "the light bulb <SEG>" spilled onto the banana it touches. Colour
edges cannot part them (every ReasonWorld shape, and every part of an object, has a darker
outline), and a distance-transform watershed cuts objects with parts apart (the README's
tried-and-dropped rows). What tells a flower's stem (part of it) from a second flower beside
it is the shape of the things, which a small network learns from ReasonWorld's scenes, whose
objects' visible pixels are known: `ObjectCuts`, a three-level U-Net (230 K parameters at 24
channels) over the RGB pixels, predicts the *contact band*, the pixels of an object with a
pixel of another object among their eight neighbours (`contact_band`). Its training is a
separate fit on generated scenes (`fit_world`, `pixelreason fit-object-cuts`), like the pixel
colour counts, and its weights are kept beside the model's (`FILE_NAME`).

A mask cut along the band (`cut_regions`) falls into pieces, and each pixel of the band goes
to the nearest piece. The band is not perfect: the bundled default's (3000 steps of 16
scenes) parts 81% of the touching pairs of objects in 200 fresh scenes into pieces of at
least a tenth of the larger, and also cuts 12% of single objects (3% fall apart by occlusion
alone), a flower from its stem. So the segmenter uses the pieces only where an answer needs
them (`needed_regions`, `foreign_pieces`; `ModelConfig.object_cuts`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from scipy import ndimage
from torch import nn
from tqdm.auto import tqdm

from pixelreason.errors import CheckpointError
from pixelreason.utils.files import atomic_write_bytes

#: The cuts' file in a model directory.
FILE_NAME = "object_cuts.safetensors"
#: Channels of the network's first level (the second has twice, the third three times).
CHANNELS = 24
#: Weight of the band's pixels in the binary cross-entropy: the band is ~2% of a scene.
POS_WEIGHT = 5.0
#: Pieces of a cut mask smaller than this many pixels are crumbs of the band, not objects.
MIN_PIECE = 4
#: A class's mask is cut into pieces of at least this share of its largest piece, where it
#: has fewer regions than the answer has targets of the class (`needed_regions`).
CUT_SHARE = 0.3
#: A single target's mask is cut into pieces of at least this share of its largest, and
#: keeps those whose pixels read as its class within `SPILL_MARGIN` nats (`foreign_pieces`).
SPILL_SHARE = 0.1
SPILL_MARGIN = 1.0
_EIGHT = np.ones((3, 3), bool)


def _conv(inputs: int, outputs: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=dilation, dilation=dilation),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class PixelNet(nn.Module):
    """A three-level U-Net from RGB pixels to `outputs` logits per pixel, the body of the
    object cuts and of the category map (`pixelreason.models.category_map`)."""

    #: The kind written in a saved file's metadata, so one net's file is not read as another.
    KIND = "pixel net"

    def __init__(self, channels: int = CHANNELS, outputs: int = 1) -> None:
        super().__init__()
        c = channels
        self.channels = channels
        self.outputs = outputs
        self.e1 = nn.Sequential(_conv(3, c), _conv(c, c))
        self.e2 = nn.Sequential(_conv(c, 2 * c), _conv(2 * c, 2 * c))
        # dilations widen the lowest level's view to whole objects (about 40 pixels)
        self.e3 = nn.Sequential(_conv(2 * c, 3 * c), _conv(3 * c, 3 * c, 2), _conv(3 * c, 3 * c, 4))
        self.d2 = nn.Sequential(_conv(5 * c, 2 * c))
        self.d1 = nn.Sequential(_conv(3 * c, c))
        self.out = nn.Conv2d(c, outputs, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, H, W) RGB in [0, 1], H and W multiples of 4 -> (B, outputs, H, W)
        logits."""
        first = self.e1(pixels)
        second = self.e2(F.max_pool2d(first, 2))
        third = self.e3(F.max_pool2d(second, 2))
        up = self.d2(torch.cat([second, F.interpolate(third, scale_factor=2.0)], 1))
        return self.out(self.d1(torch.cat([first, F.interpolate(up, scale_factor=2.0)], 1)))

    @torch.no_grad()
    def logits_of(self, pixels: np.ndarray) -> torch.Tensor:
        """(outputs, h, w) float logits of (h, w, 3) uint8 RGB pixels (padded to multiples of
        4 and cropped back), on the CPU."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"{self.KIND} needs (h, w, 3) uint8 RGB pixels, got {pixels.shape}")
        height, width = pixels.shape[:2]
        inputs = torch.tensor(pixels).permute(2, 0, 1)[None].float() / 255.0
        pad_h, pad_w = -height % 4, -width % 4
        inputs = F.pad(inputs, (0, pad_w, 0, pad_h), mode="replicate")
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        logits = self(inputs.to(device=param.device, dtype=param.dtype))
        self.train(was_training)
        return logits[0, :, :height, :width].float().cpu()

    def _metadata(self) -> dict[str, str]:
        return {"channels": str(self.channels), "outputs": str(self.outputs), "kind": self.KIND}

    def save_file(self, path: str | Path) -> None:
        """Write the weights to `path` (safetensors), atomically."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(Path(path), save(tensors, metadata=self._metadata()))

    @classmethod
    def _read(cls, path: str | Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        """A file's metadata and tensors; CheckpointError where it is not this kind's."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            kind = metadata.get("kind", ObjectCuts.KIND)  # files before kinds were cuts
            if kind != cls.KIND:
                raise ValueError(f"it holds a {kind} network, not a {cls.KIND} one")
            return metadata, load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {cls.KIND} from {path}: {exc}") from exc


class ObjectCuts(PixelNet):
    """`PixelNet` with one output: the contact band's logits."""

    KIND = "object cuts"

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__(channels, 1)

    def cut_map(self, pixels: np.ndarray) -> np.ndarray:
        """(h, w) bool contact band of (h, w, 3) uint8 RGB pixels."""
        return (self.logits_of(pixels)[0] > 0).numpy()

    def save(self, directory: str | Path) -> None:
        """Write `FILE_NAME` in `directory`, atomically."""
        self.save_file(Path(directory) / FILE_NAME)

    @classmethod
    def load(cls, path: str | Path) -> ObjectCuts:
        """Read a file written by `save`; CheckpointError where it is not one."""
        metadata, tensors = cls._read(path)
        try:
            model = cls(int(metadata["channels"]))
            model.load_state_dict(tensors)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read object cuts from {path}: {exc}") from exc
        return model.eval()


def contact_band(masks: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W) bool: the pixels of one of the (H, W) bool object masks (visible pixels, not
    overlapping) with a pixel of another among their eight neighbours."""
    if not len(masks):
        raise ValueError("contact_band needs at least one mask")
    ids = np.zeros(masks[0].shape, np.int32)
    for k, mask in enumerate(masks):
        ids[mask] = k + 1
    padded = np.pad(ids, 1)
    height, width = ids.shape
    band = np.zeros(ids.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            band |= (ids > 0) & (near > 0) & (near != ids)
    return band


def cut_regions(mask: np.ndarray, cuts: np.ndarray, min_share: float) -> list[np.ndarray]:
    """The pieces of (H, W) bool `mask` cut along (H, W) bool `cuts`, largest first: the
    connected components (8-neighbour) of the mask off the cuts of at least `MIN_PIECE` pixels
    and `min_share` of the largest, each grown over the rest of the mask (the band, crumbs) by
    nearest pixel. Fewer than two such pieces: the mask's own connected components."""
    labels, count = ndimage.label(mask & ~cuts, structure=_EIGHT)
    if count >= 2:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        least = max(MIN_PIECE, min_share * float(sizes.max()))
        kept = [k + 1 for k in range(count) if sizes[k] >= least]
        if len(kept) >= 2:
            distances = np.stack([ndimage.distance_transform_edt(labels != k) for k in kept])
            nearest = np.asarray(kept)[distances.argmin(axis=0)]
            pieces = [mask & (nearest == k) for k in kept]
            return sorted(pieces, key=lambda piece: -int(piece.sum()))
    labels, count = ndimage.label(mask, structure=_EIGHT)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return [labels == k + 1 for k in np.argsort(-areas, kind="stable")]


def needed_regions(
    mask: np.ndarray, cuts: np.ndarray | None, wanted: int, min_share: float
) -> list[np.ndarray]:
    """A mask's regions, largest first, for `wanted` targets: its connected components where
    `min_share` of the largest or more, or no `cuts`, give it `wanted` or more; else its pieces
    cut along `cuts` (`cut_regions` at `CUT_SHARE`). Cutting only where the regions are too
    few keeps the band's false cuts (a flower from its stem) out of masks that need none: on
    300 several-target queries of the seed-23 stream, with a first, shorter-trained network,
    multi-target IoU 0.685 -> 0.6905 this way (17 answers better, 9 worse) and 0.6904 with
    every region of every mask cut (55 better, 49 worse)."""
    labels, count = ndimage.label(mask, structure=_EIGHT)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    plain = [labels == k + 1 for k in np.argsort(-areas, kind="stable")]
    major = int((areas >= min_share * areas.max()).sum()) if count else 0
    if cuts is None or major >= wanted or not count:
        return plain
    return cut_regions(mask, cuts, CUT_SHARE)


def foreign_pieces(
    mask: np.ndarray,
    cuts: np.ndarray,
    bins: np.ndarray,
    log_probs: np.ndarray,
    own: Sequence[int],
    margin: float = SPILL_MARGIN,
) -> np.ndarray | None:
    """What a single target's mask keeps of its pieces, or None where it keeps them all.

    The mask is cut along `cuts` (`cut_regions` at `SPILL_SHARE`); each piece is read by the
    pixel colour reader (`pixelreason.models.pixel_colours`: `bins` (H, W) the pixels' colour
    bins, `log_probs` (L, B) each label's log-probability of each bin) as the mean
    log-likelihood of its pixels under every label; a piece stays where the best of the
    target's own labels (`own`: its "COLOUR CATEGORY", or every colour of its category) is
    within `margin` nats of the best label of all, and the piece that reads most as the
    target always stays.

    Returns:
        (H, W) bool: the pieces kept, or None (the mask is one piece, or every piece stays).
    """
    pieces = cut_regions(mask, cuts, SPILL_SHARE)
    if len(pieces) < 2:
        return None
    reads = np.stack([log_probs[:, bins[piece]].mean(axis=1) for piece in pieces])  # (P, L)
    mine = reads[:, list(own)].max(axis=1)
    kept = mine >= reads.max(axis=1) - margin
    kept[int(mine.argmax())] = True  # the piece that reads most as the target always stays
    if kept.all():
        return None
    return np.any([piece for piece, keep in zip(pieces, kept, strict=True) if keep], axis=0)


def world_batch(
    rng: np.random.Generator, size: int, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` fresh ReasonWorld scenes: (count, 3, size, size) pixels in [0, 1] and their
    (count, 1, size, size) contact bands."""
    from pixelreason.data.world.scene import generate_scene

    images, bands = [], []
    for _ in range(count):
        scene = generate_scene(rng, size=size)
        objects = [o.mask for o in scene.objects if o.mask.any()]
        images.append(np.asarray(scene.image.convert("RGB"), dtype=np.float32) / 255.0)
        bands.append(contact_band(objects) if objects else np.zeros((size, size), bool))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return pixels, torch.from_numpy(np.stack(bands))[:, None].float()


def band_loss(logits: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (B, 1, H, W) logits against the band, its pixels weighted by
    `POS_WEIGHT`."""
    weight = torch.tensor(POS_WEIGHT, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, band, pos_weight=weight)


def fit_world(
    steps: int,
    *,
    batch: int = 16,
    size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    channels: int = CHANNELS,
    start: ObjectCuts | None = None,
    progress: bool = True,
) -> tuple[ObjectCuts, list[dict[str, float]]]:
    """Train `ObjectCuts` (or go on training `start`) for `steps` steps of `batch` fresh
    ReasonWorld scenes (AdamW, one-cycle schedule peaking at `lr`). Returns the model (in eval
    mode) and its history: per 100 steps and at the end, the step, the training loss and the
    band's precision and recall on 64 held-out scenes."""

    def scores(logits: torch.Tensor, band: torch.Tensor) -> dict[str, float]:
        found, true = logits > 0, band > 0
        hits = float((found & true).sum())
        return {
            "precision": hits / max(1.0, float(found.sum())),
            "recall": hits / max(1.0, float(true.sum())),
        }

    model = start if start is not None else ObjectCuts(channels)
    history = fit_pixels(
        model, steps, world_batch, band_loss, scores,
        batch=batch, size=size, lr=lr, seed=seed, desc="object cuts", progress=progress,
    )  # fmt: skip
    return model, history


def fit_pixels(
    model: PixelNet,
    steps: int,
    make_batch: Callable[[np.random.Generator, int, int], tuple[torch.Tensor, torch.Tensor]],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scores_of: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
    *,
    batch: int,
    size: int,
    lr: float,
    seed: int,
    desc: str,
    progress: bool = True,
    snapshot: Callable[[list[dict[str, float]]], None] | None = None,
) -> list[dict[str, float]]:
    """The training loop of a `PixelNet` on fresh scenes, in place: `steps` steps of `batch`
    scenes of `size` pixels from `make_batch(rng, size, count)` (pixels, targets), AdamW on
    `loss_of(logits, targets)` with a one-cycle schedule peaking at `lr`; the model is left in
    eval mode. Returns the history: per 100 steps and at the end, the step, the training loss
    and `scores_of(logits, targets)` on 64 held-out scenes. `snapshot(history)`, where given,
    is called after each of them (to write the model so far)."""
    if steps < 1 or batch < 1:
        raise ValueError(f"{desc} need steps >= 1 and batch >= 1, got {steps}, {batch}")
    optimiser = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng([seed, 104729])
    held_pixels, held_targets = make_batch(np.random.default_rng([seed, 7]), size, 64)
    history: list[dict[str, float]] = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        model.train()
        pixels, targets = make_batch(rng, size, batch)
        loss = loss_of(model(pixels), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{desc}' loss is {loss.item()} at step {step}")
        if step % 100 == 0 or step == steps - 1:
            model.eval()
            with torch.no_grad():
                scores = scores_of(model(held_pixels), held_targets)
            history.append({"step": step, "loss": loss.item(), **scores})
            bar.set_postfix(loss=f"{loss.item():.3f}", **{k: f"{v:.2f}" for k, v in scores.items()})
            if snapshot is not None:
                snapshot(history)
    model.eval()
    return history


def save_history(
    directory: str | Path, history: list[dict[str, float]], name: str = "object_cuts"
) -> None:
    """Write a fit's history beside its network (`<name>-history.json`), atomically."""
    text = json.dumps(history, indent=1) + "\n"
    atomic_write_bytes(Path(directory) / f"{name}-history.json", text.encode())
