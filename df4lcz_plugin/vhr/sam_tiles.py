"""Shared segmentation: SAM once per piece of ground, on a fixed grid of 320 m tiles, and each footprint's masks
composed from the tiles it overlaps.

Neighbouring footprints of a 100 m classification share 90 % of their pixels, and training footprints every 50 m
overlap 20–40 times; segmenting each footprint on its own repeats that work. Here SAM runs on the tiles of a
grid fixed in the CRS (edges at multiples of 320 m, so every run over the same imagery meets the same tiles),
each tile exactly as a paper patch: 320 m at 1 m, the paper's AMG settings (``sam.MaskGenerator``).

Composition (``compose``): a footprint (320 m, its corner rounded to the metre grid of the tiles) overlaps at most
2 × 2 tiles. Objects that a tile seam cuts are joined again (``seam_joins``): a mask touching the seam on one side
and one touching it on the other are the same object when their pixels along the seam overlap with IoU ≥ 0.5
(one-to-one, best pairs first). The joins are a property of the tile pair, not of the footprint. Each object is
then clipped to the footprint, and the paper's rules follow: objects under 50 px dropped, the 50 largest kept,
largest first; the box is that of the clipped mask (SAM's XYWH, ``segment_anything.utils.amg``). We chose
seam joins over overlapping tiles: overlap would multiply the SAM work (2× per axis at half a tile) to avoid a
join rule; docs/benchmarks.md gives the measured agreement with per-footprint SAM.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import numpy as np
import numpy.typing as npt

from ..runtime.grid import Bounds
from .sam import MAX_MASKS, MIN_MASK_AREA_PX, PATCH_SIZE_PX, PatchMasks

TILE_M = 320.0
#: Two masks meeting at a seam are one object when their seam pixels overlap at least this much (IoU).
SEAM_IOU = 0.5

#: A tile of the grid: (column i, row j).
Tile = tuple[int, int]
#: A mask of a tile: (tile, index of the mask in the tile's PatchMasks).
Node = tuple[Tile, int]
#: An object being composed: its bool (320, 320) canvas, and (area in px, predicted IoU, stability) of its largest
#: piece.
_Object = tuple[npt.NDArray[np.bool_], tuple[int, float, float]]


def tile_bounds(tile: Tile) -> Bounds:
    """(xmin, ymin, xmax, ymax) in metres of tile (column i, row j): x from 320·i, y down from −320·j."""
    i, j = tile
    return (i * TILE_M, -(j + 1) * TILE_M, (i + 1) * TILE_M, -j * TILE_M)


def footprint_origin(footprint: Bounds) -> tuple[int, int]:
    """(column, row) in whole metres of a footprint's top-left corner in the tiles' frame (x right, rows down)."""
    return int(round(footprint[0])), int(round(-footprint[3]))


def footprint_tiles(footprint: Bounds) -> list[Tile]:
    """The tiles (i, j) a 320 m footprint (xmin, ymin, xmax, ymax in metres) overlaps, row-major (1, 2 or 4)."""
    x0, r0 = footprint_origin(footprint)
    cols = range(x0 // int(TILE_M), (x0 + PATCH_SIZE_PX - 1) // int(TILE_M) + 1)
    rows = range(r0 // int(TILE_M), (r0 + PATCH_SIZE_PX - 1) // int(TILE_M) + 1)
    return [(i, j) for j in rows for i in cols]


def seam_joins(a: PatchMasks, b: PatchMasks, axis: int) -> list[tuple[int, int]]:
    """Pairs (index in a, index in b) of masks joined across the seam between two neighbouring tiles' PatchMasks:
    ``axis`` 1 when b lies right of a, 0 when below. IoU of the seam pixels ≥ SEAM_IOU, one-to-one, best first."""
    if len(a) == 0 or len(b) == 0:
        return []
    edge_a = (a.masks[:, :, -1] if axis == 1 else a.masks[:, -1, :]).astype(np.float32)
    edge_b = (b.masks[:, :, 0] if axis == 1 else b.masks[:, 0, :]).astype(np.float32)
    inter = edge_a @ edge_b.T
    union = edge_a.sum(1)[:, None] + edge_b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    pairs: list[tuple[int, int]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < SEAM_IOU:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


def compose(footprint: Bounds, tiles: Mapping[Tile, PatchMasks], settings: Optional[dict[str, Any]] = None
            ) -> PatchMasks:
    """PatchMasks of ``footprint`` from ``tiles`` {(i, j): PatchMasks of that tile (all its AMG masks)}, which
    must hold every tile of ``footprint_tiles(footprint)``; predicted IoU and stability are those of the object's
    largest piece. Raises KeyError for a missing tile."""
    keys = footprint_tiles(footprint)
    parent = _join_seams(keys, tiles)
    objects: dict[Node, _Object] = {}
    for tile in keys:
        _clip_tile(objects, parent, tile, tiles[tile], footprint_origin(footprint))
    kept = sorted(((int(c.sum()), c, b) for c, b in objects.values()), key=lambda item: -item[0])
    kept = [item for item in kept if item[0] >= MIN_MASK_AREA_PX][:MAX_MASKS]
    if not kept:
        return no_masks(settings)
    return _patch_masks([c for _, c, _ in kept], [b for _, _, b in kept], settings)


def _find(parent: dict[Node, Node], node: Node) -> Node:
    """The root of ``node`` in the union-find forest ``parent`` (a node absent from it is its own root)."""
    while parent.setdefault(node, node) != node:
        node = parent[node]
    return node


def _join_seams(keys: list[Tile], tiles: Mapping[Tile, PatchMasks]) -> dict[Node, Node]:
    """The union-find forest of the masks (tile, index) of the tiles ``keys``, joined across their seams
    (``seam_joins`` with the right and the lower neighbour)."""
    parent: dict[Node, Node] = {}
    for tile in keys:
        for other, axis in (((tile[0] + 1, tile[1]), 1), ((tile[0], tile[1] + 1), 0)):
            if other in keys:
                for i, j in seam_joins(tiles[tile], tiles[other], axis):
                    parent[_find(parent, (other, j))] = _find(parent, (tile, i))
    return parent


def _clip_tile(objects: dict[Node, _Object], parent: dict[Node, Node], tile: Tile, masks: PatchMasks,
               origin: tuple[int, int]) -> None:
    """Add the pieces of ``tile``'s masks inside the footprint whose top-left corner is ``origin`` (column, row in
    whole metres, ``footprint_origin``) to ``objects`` {root: (bool (320, 320) canvas of the footprint, (area in
    px, predicted IoU, stability) of the largest piece)}, each mask on the canvas of its root in ``parent``."""
    side = int(TILE_M)
    x0, r0 = origin
    # The footprint's window on this tile, and where it lands in the footprint.
    c0, q0 = x0 - tile[0] * side, r0 - tile[1] * side
    cs, ce, rs, re = max(c0, 0), min(c0 + PATCH_SIZE_PX, side), max(q0, 0), min(q0 + PATCH_SIZE_PX, side)
    for index in range(len(masks)):
        piece = masks.masks[index, rs:re, cs:ce]
        area = int(piece.sum())
        if area == 0:
            continue
        root = _find(parent, (tile, index))
        canvas, best = objects.get(root, (None, None))
        if canvas is None:
            canvas = np.zeros((PATCH_SIZE_PX, PATCH_SIZE_PX), bool)
        canvas[rs - q0:re - q0, cs - c0:ce - c0] |= piece
        if best is None or area > best[0]:
            best = (area, float(masks.predicted_iou[index]), float(masks.stability[index]))
        objects[root] = (canvas, best)


def _patch_masks(canvases: list[npt.NDArray[np.bool_]], best: list[tuple[int, float, float]],
                 settings: Optional[dict[str, Any]]) -> PatchMasks:
    """PatchMasks of the kept objects' canvases (bool (320, 320) each, largest first) and their largest pieces'
    (area, predicted IoU, stability); the box is that of the canvas (SAM's XYWH)."""
    import torch
    from segment_anything.utils.amg import batched_mask_to_box

    stack = np.stack(canvases)
    x0, y0, x1, y1 = batched_mask_to_box(torch.from_numpy(stack)).numpy().astype(np.float32).T
    bbox = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)  # box_xyxy_to_xywh, for a batch
    return PatchMasks(stack, bbox, np.array([b[1] for b in best], np.float32),
                      np.array([b[2] for b in best], np.float32), settings or {})


def no_masks(settings: Optional[dict[str, Any]] = None) -> PatchMasks:
    """PatchMasks with no mask (a tile without imagery, or a footprint where SAM found nothing)."""
    empty = np.zeros(0, np.float32)
    return PatchMasks(np.zeros((0, PATCH_SIZE_PX, PATCH_SIZE_PX), bool), np.zeros((0, 4), np.float32), empty, empty,
                      settings or {})


def tiles_of(footprints: Iterable[Bounds]) -> list[Tile]:
    """The distinct tiles (i, j) that ``footprints`` overlap, in first-use order."""
    return list(dict.fromkeys(tile for footprint in footprints for tile in footprint_tiles(footprint)))


def pack(patch_masks: PatchMasks) -> dict[str, npt.NDArray[Any]]:
    """The arrays of a tile's PatchMasks for the cache: bit-packed masks (numpy only, no pickles)."""
    return {"masks": np.packbits(patch_masks.masks, axis=-1), "bbox": patch_masks.bbox,
            "predicted_iou": patch_masks.predicted_iou, "stability": patch_masks.stability}


def unpack(arrays: Mapping[str, npt.NDArray[Any]], settings: Optional[dict[str, Any]] = None) -> PatchMasks:
    """PatchMasks of arrays made by ``pack``."""
    masks = np.unpackbits(arrays["masks"], axis=-1, count=PATCH_SIZE_PX).astype(bool)
    return PatchMasks(masks, arrays["bbox"], arrays["predicted_iou"], arrays["stability"], settings or {})
