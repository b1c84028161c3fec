"""The VHR stream of a loaded model: patch footprint → SAM masks → object graph → GCN → P_VHR.

``FootprintGraphs`` gives the object graph of a footprint from the graph cache (``graph_cache``), else runs SAM
(loaded only when a graph is missing) and stores the result, so that no footprint is segmented twice: a
re-run, another α or model, or a run after a cancel reuses every graph already made. Classification and
training both read graphs through it.

Segmentation mode, recorded in the graph rule (``"segmentation"``) and so in the model card and the cache keys:
``tiles`` (shared segmentation, ``sam_tiles``: SAM once per 320 m tile of a fixed grid, each footprint composed
from its tiles; the tiles are cached too, so classification, training and the object graphs share them) or
``footprint`` (the paper's: one SAM run per footprint; a rule without the key, as in older models).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..runtime import assets
from . import sam_tiles
from .graph import DEFAULT_GRAPH_RULE, ObjectGraph, build_graph, segmentation_of
from .graph_cache import GraphCache, file_identity
from .sam import PAPER_AMG_SETTINGS, MaskGenerator, PatchMasks, load_sam
from .imagery import MIN_COVERAGE, Bounds, VHRError, open_vhr, overlaps, read_patch

if TYPE_CHECKING:
    import torch

    from ..models.registry import LoadedModel
    from ..runtime.feedback import Feedback

#: A tile (column i, row j) of the shared-segmentation grid (``sam_tiles``).
Tile = tuple[int, int]

#: Decoded SAM tiles kept in memory (a few MB each): a row of footprints reuses its neighbours' tiles.
TILES_IN_MEMORY = 32

#: Footprints per SAM call on a CUDA GPU (the image encoder batched over their crops).
SAM_BATCH_CUDA = 4
#: Cells whose graphs are asked for at once (cache lookups, then SAM on the misses).
CHUNK_CELLS = 16


class FootprintGraphs:
    """Object graphs of 320 m footprints of a VHR raster, cached on disk; ``sam_runs`` counts SAM calls and
    ``sam_seconds`` their time, ``cache_hits`` the graphs read from the cache.

    source_id: identity of the imagery for the cache key (default: the file's path, size and mtime; a web layer
    passes its URI). Raises VHRError for unusable imagery, sam.SAMError for a bad checkpoint (when SAM runs).
    """

    def __init__(self, vhr_path: Path | str, srs_wkt: str, device: torch.device | str = "cpu",
                 checkpoint: Path | str | None = None, amg_settings: dict[str, Any] | None = None,
                 graph_rule: dict[str, Any] | None = None, source_id: str | None = None,
                 cache: GraphCache | None = None, fast: bool = False) -> None:
        self.source = open_vhr(vhr_path)
        self.srs_wkt = srs_wkt
        self.device = device
        self.checkpoint = checkpoint or assets.fetch_member(assets.MOBILE_SAM)
        self.settings = {**PAPER_AMG_SETTINGS, **(amg_settings or {})}
        self.segmentation = segmentation_of(graph_rule or DEFAULT_GRAPH_RULE)
        # The mode always written out: a card without it (footprint) and an explicit footprint share cache keys.
        self.rule = {**(graph_rule or DEFAULT_GRAPH_RULE), "segmentation": self.segmentation}
        self.fast = fast
        # Footprints per SAM call: the image encoder batched over them pays on a GPU; on the CPU it measured no
        # faster (bench/bench_sam.py), so one at a time.
        self.batch = SAM_BATCH_CUDA if str(device).startswith("cuda") else 1
        self.source_id = source_id or file_identity(vhr_path)
        self.cache = cache or GraphCache()
        self._sha256 = assets.sha256_of(self.checkpoint)
        self._generator: MaskGenerator | None = None
        self._tiles: OrderedDict[Tile, PatchMasks] = OrderedDict()
        self.sam_runs = self.cache_hits = 0
        self.sam_seconds = 0.0

    def _sam_settings(self) -> dict[str, Any]:
        return {**self.settings, "fast_sam": True} if self.fast else self.settings  # other masks, other key

    def key(self, footprint: Bounds) -> str:
        return GraphCache.key(self.source_id, footprint, self.srs_wkt, self._sha256, self._sam_settings(), self.rule)

    def tile_key(self, tile: Tile) -> str:
        """Cache key of the SAM masks of a shared-segmentation tile (no graph rule: masks only)."""
        return GraphCache.key(self.source_id, sam_tiles.tile_bounds(tile), self.srs_wkt, self._sha256,
                              self._sam_settings(), {"sam_tile_m": sam_tiles.TILE_M})

    def sam_runs_needed(self, footprints: Sequence[Bounds]) -> int:
        """SAM runs that the graphs of ``footprints`` still need at most: footprints not in the cache, or, with
        shared segmentation, the distinct tiles of those footprints not in the cache."""
        missing = [f for f in footprints if self.key(f) not in self.cache]
        if self.segmentation == "footprint":
            return len(missing)
        return sum(self.tile_key(t) not in self.cache for t in sam_tiles.tiles_of(missing))

    def graph(self, footprint: Bounds) -> ObjectGraph | None:
        """The ObjectGraph of ``footprint`` (xmin, ymin, xmax, ymax in ``srs_wkt``), or None when the imagery
        covers less than MIN_COVERAGE of it. A graph may have zero nodes (SAM found no object)."""
        return self.graphs([footprint])[0]

    def graphs(self, footprints: Sequence[Bounds],
               on_sam: Callable[[], object] | None = None) -> list[ObjectGraph | None]:
        """``graph`` of each footprint; those not in the cache go through SAM ``batch`` footprints at a time.
        ``on_sam()`` is called after each SAM call (progress, time estimate, cancel)."""
        results: list[ObjectGraph | None] = []
        todo: list[tuple[int, str, npt.NDArray[np.uint8]]] = []
        for index, footprint in enumerate(footprints):
            key = self.key(footprint)
            graph = self.cache.get(key)
            if graph is not None:
                self.cache_hits += 1
                results.append(graph)
                continue
            rgb, coverage = read_patch(self.source, footprint, self.srs_wkt)
            results.append(None)
            if coverage >= MIN_COVERAGE:
                todo.append((index, key, rgb))
        if self.segmentation == "tiles":
            tiles = self._tile_masks(sam_tiles.tiles_of([footprints[index] for index, _, _ in todo]), on_sam)
            for index, key, rgb in todo:
                masks = sam_tiles.compose(footprints[index], tiles, self.settings)
                results[index] = built = build_graph(rgb, masks, self.rule)
                self.cache.put(key, built)
            return results
        for start in range(0, len(todo), self.batch):
            chunk = todo[start:start + self.batch]
            for (index, key, rgb), masks in zip(chunk, self._segment([rgb for _, _, rgb in chunk])):
                results[index] = built = build_graph(rgb, masks, self.rule)
                self.cache.put(key, built)
            if on_sam is not None:
                on_sam()
        return results

    def _tile_masks(self, tiles: Sequence[Tile],
                    on_sam: Callable[[], object] | None = None) -> dict[Tile, PatchMasks]:
        """{tile: PatchMasks of all its AMG masks}: from memory, the cache, or SAM (``batch`` tiles per call)."""
        found: dict[Tile, PatchMasks] = {}
        todo: list[Tile] = []
        for tile in tiles:
            if tile in self._tiles:
                self._tiles.move_to_end(tile)
                found[tile] = self._tiles[tile]
                continue
            arrays = self.cache.get_arrays(self.tile_key(tile))
            if arrays is not None:
                found[tile] = sam_tiles.unpack(arrays, self.settings)
            else:
                todo.append(tile)
        patches = [(tile, *read_patch(self.source, sam_tiles.tile_bounds(tile), self.srs_wkt)) for tile in todo]
        for tile, rgb, coverage in patches:
            if coverage == 0:  # no imagery, no objects: no SAM (cached too, so that cost estimates know it)
                found[tile] = sam_tiles.no_masks(self.settings)
                self.cache.put_arrays(self.tile_key(tile), sam_tiles.pack(found[tile]))
        segment = [(tile, rgb) for tile, rgb, coverage in patches if coverage > 0]
        for start in range(0, len(segment), self.batch):
            chunk = segment[start:start + self.batch]
            for (tile, _), masks in zip(chunk, self._segment([rgb for _, rgb in chunk], paper_filter=False)):
                self.cache.put_arrays(self.tile_key(tile), sam_tiles.pack(masks))
                found[tile] = masks
            if on_sam is not None:
                on_sam()
        for tile in tiles:
            self._tiles[tile] = found[tile]
            self._tiles.move_to_end(tile)
        while len(self._tiles) > max(TILES_IN_MEMORY, len(tiles)):
            self._tiles.popitem(last=False)
        return found

    def _segment(self, rgbs: Sequence[npt.NDArray[np.uint8]], paper_filter: bool = True) -> list[PatchMasks]:
        import torch

        started = time.perf_counter()
        if self._generator is None:
            self._generator = MaskGenerator(load_sam(self.checkpoint, self.device), fast=self.fast, **self.settings)
        torch.manual_seed(0)  # AMG is deterministic; the seed guards any stochastic kernel
        masks = self._generator.many(rgbs, paper_filter)
        self.sam_runs += len(rgbs)
        self.sam_seconds += time.perf_counter() - started
        return masks


class VHRStream:
    """P_VHR (17,) of 320 m footprints, or None where the imagery covers < 90 % or SAM finds no object.

    model: a LoadedModel with a ``vhr`` stream; its card gives the AMG settings and the graph rule.
    checkpoint: SAM checkpoint (default: MobileSAM from the asset loader).
    Raises VHRError (bad raster, no overlap with ``bounds``), sam.SAMError.
    """

    def __init__(self, model: LoadedModel, vhr_path: Path | str, srs_wkt: str, bounds: Bounds,
                 device: torch.device | str, checkpoint: Path | str | None = None, source_id: str | None = None,
                 fast: bool = False) -> None:
        card = model.card.stream("vhr")
        self.graphs = FootprintGraphs(vhr_path, srs_wkt, device, checkpoint, card["sam"]["amg"], card["graph_rule"],
                                      source_id, fast=fast)
        if not overlaps(self.graphs.source, bounds, srs_wkt):
            raise VHRError("The VHR raster does not overlap the extent; draw the extent over the imagery.")
        self.gcn = model.modules["vhr"]
        self.device = device

    def probabilities(self, footprints: Sequence[Bounds],
                      on_sam: Callable[[], object] | None = None) -> list[npt.NDArray[np.float32] | None]:
        """P_VHR float32 (17,) of each footprint, or None (coverage < 90 %, or no object)."""
        import torch

        out: list[npt.NDArray[np.float32] | None] = []
        for graph in self.graphs.graphs(footprints, on_sam):
            if graph is None or graph.num_nodes == 0:
                out.append(None)
                continue
            with torch.inference_mode():
                p = self.gcn(torch.from_numpy(graph.x).to(self.device),
                             torch.from_numpy(graph.edge_index).to(self.device),
                             torch.from_numpy(graph.edge_weight).to(self.device),
                             torch.zeros(graph.num_nodes, dtype=torch.long, device=self.device))
            out.append(p[0].float().cpu().numpy())
        return out


class FusionCost:
    """Tells the user what a fused run costs before the long work starts, then a time estimate as it goes.

    footprints: every cell's footprint; the SAM runs still needed are those not in the cache (cells without
    imagery or Sentinel-2 data need none, so it is an upper bound).
    """

    def __init__(self, graphs: FootprintGraphs, footprints: Sequence[Bounds], resolution_m: float,
                 feedback: Feedback) -> None:
        self.graphs, self.feedback = graphs, feedback
        self.cached = sum(graphs.key(f) in graphs.cache for f in footprints)
        self.remaining = graphs.sam_runs_needed(footprints)
        self._next_report = 1
        message = f"Fused run: {len(footprints)} cells, {self.cached} object graphs already in the cache, "
        if graphs.segmentation == "tiles":
            message += (f"shared segmentation: up to {self.remaining} SAM tiles of 320 m to segment (each piece of "
                        "ground once; cells without imagery need none).")
        else:
            message += f"up to {self.remaining} SAM runs (cells without imagery need none)."
            if resolution_m < 320:
                message += (f" RESOLUTION=320, the paper's scene level, needs about {(320 / resolution_m) ** 2:.0f}× "
                            f"fewer SAM runs than {resolution_m:g} m.")
        feedback.info(message)

    def sam_done(self) -> None:
        """After each SAM call: an estimate after SAM runs 1, 2, 4, 8, …; then the cancel check."""
        runs = self.graphs.sam_runs
        if runs >= self._next_report:
            self._next_report *= 2
            per_run = self.graphs.sam_seconds / runs
            remaining = max(0, self.remaining - runs)
            self.feedback.info(f"SAM: {runs} run(s) at {per_run:.1f} s each; at most {remaining} more, "
                               f"≈ {remaining * per_run / 60:.0f} min left at most.")
        self.feedback.check_canceled()


def fill_graph_cache(vhr_path: Path | str, sentinel2_path: Path | str, bounds: Bounds | None, resolution: float,
                     device: torch.device | str = "cpu", checkpoint: Path | str | None = None,
                     amg_settings: dict[str, Any] | None = None, graph_rule: dict[str, Any] | None = None,
                     source_id: str | None = None, feedback: Feedback | None = None,
                     fast: bool = False) -> dict[str, int]:
    """Put the object graphs of exactly the footprints that ``classify`` would use (the grid of
    ``sentinel2_path`` at ``resolution`` m over ``bounds``) into the graph cache, so that SAM runs once (overnight,
    or on a GPU machine) and every later classification or training with the same imagery, checkpoint and
    settings reuses them. Returns {"cells", "sam_runs", "graph_cache_hits"}.

    Raises InputError, GridError, VHRError, sam.SAMError, Canceled.
    """
    from ..runtime.feedback import Feedback
    from ..runtime.grid import make_grid
    from ..sentinel2.checks import open_sentinel2

    feedback = feedback or Feedback()
    ds = open_sentinel2(sentinel2_path)
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), bounds, resolution)
    graphs = FootprintGraphs(vhr_path, ds.GetProjection(), device, checkpoint, amg_settings, graph_rule, source_id,
                             fast=fast)
    footprints = [grid.patch_bounds(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    cost = FusionCost(graphs, footprints, grid.resolution, feedback)
    for start in range(0, len(footprints), CHUNK_CELLS):
        feedback.check_canceled()
        graphs.graphs(footprints[start:start + CHUNK_CELLS], cost.sam_done)
        feedback.progress(min(1.0, (start + CHUNK_CELLS) / len(footprints)))
    return {"cells": len(footprints), "sam_runs": graphs.sam_runs, "graph_cache_hits": graphs.cache_hits}
