"""Exact conversion of a binary mask to polygons for the ReasonSeg format.

The reference mask rule fills each polygon and draws its 1-px outline. A polygon whose vertices
sit on pixel centres of the region's own boundary pixels therefore paints back exactly that
region, as long as the region has no holes. To handle holes (a mug handle, a partly covered
object) the mask is cut into "strips": maximal vertical stacks of row runs in which each run
touches exactly one run above and one below. A strip is simply connected and its outline can be
walked with axis-aligned steps that never leave the strip, so mask -> polygons -> mask is exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_to_polygons"]

Run = tuple[int, int]  # first and last column, inclusive


def _row_runs(row: np.ndarray) -> list[Run]:
    padded = np.concatenate(([False], row, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _overlap(a: Run, b: Run) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _strips(mask: np.ndarray) -> list[list[tuple[int, int, int]]]:
    """Chains of (y, x0, x1) runs, each chain one run per consecutive row."""
    finished: list[list[tuple[int, int, int]]] = []
    open_chains: list[tuple[Run, list[tuple[int, int, int]]]] = []
    for y in range(mask.shape[0]):
        runs = _row_runs(mask[y])
        below_count = [sum(_overlap(r, prev) for r in runs) for prev, _ in open_chains]
        next_open: list[tuple[Run, list[tuple[int, int, int]]]] = []
        continued = set()
        for run in runs:
            above = [k for k, (prev, _) in enumerate(open_chains) if _overlap(run, prev)]
            # Continue a chain only on a one-to-one link; merges and splits start new chains.
            if len(above) == 1 and below_count[above[0]] == 1:
                chain = open_chains[above[0]][1]
                continued.add(above[0])
            else:
                chain = []
            chain.append((y, run[0], run[1]))
            next_open.append((run, chain))
        finished.extend(c for k, (_, c) in enumerate(open_chains) if k not in continued)
        open_chains = next_open
    finished.extend(c for _, c in open_chains)
    return finished


def _strip_polygon(strip: list[tuple[int, int, int]]) -> list[tuple[float, float]]:
    left: list[tuple[int, int]] = []
    for k, (y, x0, _) in enumerate(strip):
        left.append((x0, y))
        if k + 1 < len(strip):
            ny, nx0, _ = strip[k + 1]
            # Step through the corner pixel that lies in both rows' runs.
            if nx0 > x0:
                left.append((nx0, y))
            elif nx0 < x0:
                left.append((x0, ny))
    right: list[tuple[int, int]] = []
    for k in range(len(strip) - 1, -1, -1):
        y, _, x1 = strip[k]
        right.append((x1, y))
        if k > 0:
            py, _, px1 = strip[k - 1]
            if px1 > x1:
                right.append((x1, py))
            elif px1 < x1:
                right.append((px1, y))
    ring = left + right
    # Drop vertices in the middle of straight axis-aligned runs; they add nothing.
    simplified = []
    for i, point in enumerate(ring):
        prev, nxt = ring[i - 1], ring[(i + 1) % len(ring)]
        # Only a vertex strictly between its neighbours on one line is redundant; a spike
        # (out and back along the same line) carries a 1-px wide part and must stay.
        between_x = prev[1] == point[1] == nxt[1] and min(prev[0], nxt[0]) < point[0] < max(
            prev[0], nxt[0]
        )
        between_y = prev[0] == point[0] == nxt[0] and min(prev[1], nxt[1]) < point[1] < max(
            prev[1], nxt[1]
        )
        if not (between_x or between_y) or len(ring) <= 3:
            simplified.append(point)
    simplified = simplified or ring
    return [(float(x), float(y)) for x, y in simplified]


def mask_to_polygons(mask: np.ndarray) -> list[list[tuple[float, float]]]:
    """Polygons whose reference rasterisation (fill + 1-px outline) reproduces `mask`.

    Args:
        mask: HxW bool.

    Returns:
        Polygons as lists of (x, y) pixel coordinates; empty for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    return [_strip_polygon(strip) for strip in _strips(mask)]
