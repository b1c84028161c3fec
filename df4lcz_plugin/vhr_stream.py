"""The VHR stream of a loaded model: patch footprint → SAM masks → object graph → GCN → P_VHR.

``FootprintGraphs`` gives the object graph of a footprint from the graph cache (``graph_cache``), else runs SAM
(loaded only when a graph is missing) and stores the result, so that no footprint is segmented twice: a
re-run, another α or model, or a run after a cancel reuses every graph already made. Classification and
training both read graphs through it.
"""

import time

from . import assets
from .graph import DEFAULT_GRAPH_RULE, build_graph
from .graph_cache import GraphCache, file_identity
from .sam import PAPER_AMG_SETTINGS, MaskGenerator, load_sam
from .vhr import MIN_COVERAGE, VHRError, open_vhr, overlaps, read_patch


class FootprintGraphs:
    """Object graphs of 320 m footprints of a VHR raster, cached on disk; ``sam_runs`` counts SAM calls and
    ``sam_seconds`` their time, ``cache_hits`` the graphs read from the cache.

    source_id: identity of the imagery for the cache key (default: the file's path, size and mtime; a web layer
    passes its URI). Raises VHRError for unusable imagery, sam.SAMError for a bad checkpoint (when SAM runs).
    """

    def __init__(self, vhr_path, srs_wkt, device="cpu", checkpoint=None, amg_settings=None, graph_rule=None,
                 source_id=None, cache=None):
        self.source = open_vhr(vhr_path)
        self.srs_wkt = srs_wkt
        self.device = device
        self.checkpoint = checkpoint or assets.fetch_member(assets.MOBILE_SAM)
        self.settings = {**PAPER_AMG_SETTINGS, **(amg_settings or {})}
        self.rule = graph_rule or DEFAULT_GRAPH_RULE
        self.source_id = source_id or file_identity(vhr_path)
        self.cache = cache or GraphCache()
        self._sha256 = assets.sha256_of(self.checkpoint)
        self._generator = None
        self.sam_runs = self.cache_hits = 0
        self.sam_seconds = 0.0

    def key(self, footprint):
        return GraphCache.key(self.source_id, footprint, self.srs_wkt, self._sha256, self.settings, self.rule)

    def graph(self, footprint):
        """The ObjectGraph of ``footprint`` (xmin, ymin, xmax, ymax in ``srs_wkt``), or None when the imagery
        covers less than MIN_COVERAGE of it. A graph may have zero nodes (SAM found no object)."""
        key = self.key(footprint)
        graph = self.cache.get(key)
        if graph is not None:
            self.cache_hits += 1
            return graph
        rgb, coverage = read_patch(self.source, footprint, self.srs_wkt)
        if coverage < MIN_COVERAGE:
            return None
        import torch

        started = time.perf_counter()
        if self._generator is None:
            self._generator = MaskGenerator(load_sam(self.checkpoint, self.device), **self.settings)
        torch.manual_seed(0)  # AMG is deterministic; the seed guards any stochastic kernel
        graph = build_graph(rgb, self._generator(rgb), self.rule)
        self.sam_runs += 1
        self.sam_seconds += time.perf_counter() - started
        self.cache.put(key, graph)
        return graph


class VHRStream:
    """P_VHR (17,) of 320 m footprints, or None where the imagery covers < 90 % or SAM finds no object.

    model: a LoadedModel with a ``vhr`` stream; its card gives the AMG settings and the graph rule.
    checkpoint: SAM checkpoint (default: MobileSAM from the asset loader).
    Raises VHRError (bad raster, no overlap with ``bounds``), sam.SAMError.
    """

    def __init__(self, model, vhr_path, srs_wkt, bounds, device, checkpoint=None, source_id=None):
        card = model.card.stream("vhr")
        self.graphs = FootprintGraphs(vhr_path, srs_wkt, device, checkpoint, card["sam"]["amg"], card["graph_rule"],
                                      source_id)
        if not overlaps(self.graphs.source, bounds, srs_wkt):
            raise VHRError("The VHR raster does not overlap the extent; draw the extent over the imagery.")
        self.gcn = model.modules["vhr"]
        self.device = device

    def probabilities(self, footprint):
        import torch

        graph = self.graphs.graph(footprint)
        if graph is None or graph.num_nodes == 0:
            return None
        with torch.inference_mode():
            p = self.gcn(torch.from_numpy(graph.x).to(self.device),
                         torch.from_numpy(graph.edge_index).to(self.device),
                         torch.from_numpy(graph.edge_weight).to(self.device),
                         torch.zeros(graph.num_nodes, dtype=torch.long, device=self.device))
        return p[0].float().cpu().numpy()


class FusionCost:
    """Tells the user what a fused run costs before the long work starts, then a time estimate as it goes.

    footprints: every cell's footprint; the SAM runs still needed are those not in the cache (cells without
    imagery or Sentinel-2 data need none, so it is an upper bound).
    """

    def __init__(self, graphs, footprints, resolution_m, feedback):
        self.graphs, self.feedback = graphs, feedback
        self.cached = sum(graphs.key(f) in graphs.cache for f in footprints)
        self.remaining = len(footprints) - self.cached
        self._next_report = 1
        message = (f"Fused run: {len(footprints)} cells, {self.cached} object graphs already in the cache, up to "
                   f"{self.remaining} SAM runs (cells without imagery need none).")
        if resolution_m < 320:
            message += (f" RESOLUTION=320, the paper's scene level, needs about {(320 / resolution_m) ** 2:.0f}× "
                        f"fewer SAM runs than {resolution_m:g} m.")
        feedback.info(message)

    def cell_done(self, was_cached):
        """Count one visited cell; report an estimate after SAM runs 1, 2, 4, 8, … ."""
        if not was_cached:
            self.remaining -= 1
        runs = self.graphs.sam_runs
        if runs >= self._next_report:
            self._next_report *= 2
            per_run = self.graphs.sam_seconds / runs
            self.feedback.info(f"SAM: {runs} run(s) at {per_run:.1f} s each; at most {self.remaining} more, "
                               f"≈ {self.remaining * per_run / 60:.0f} min left at most.")


def fill_graph_cache(vhr_path, sentinel2_path, bounds, resolution, device="cpu", checkpoint=None, amg_settings=None,
                     graph_rule=None, source_id=None, feedback=None):
    """Put the object graphs of exactly the footprints that ``classify`` would use (the grid of
    ``sentinel2_path`` at ``resolution`` m over ``bounds``) into the graph cache, so that SAM runs once (overnight,
    or on a GPU machine) and every later classification or training with the same imagery, checkpoint and
    settings reuses them. Returns {"cells", "sam_runs", "graph_cache_hits"}.

    Raises InputError, GridError, VHRError, sam.SAMError, Canceled.
    """
    from .feedback import Feedback
    from .grid import make_grid
    from .sentinel2_input import open_sentinel2

    feedback = feedback or Feedback()
    ds = open_sentinel2(sentinel2_path)
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), bounds, resolution)
    graphs = FootprintGraphs(vhr_path, ds.GetProjection(), device, checkpoint, amg_settings, graph_rule, source_id)
    footprints = [grid.patch_bounds(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    cost = FusionCost(graphs, footprints, grid.resolution, feedback)
    for index, footprint in enumerate(footprints):
        feedback.check_canceled()
        hits = graphs.cache_hits
        graphs.graph(footprint)
        cost.cell_done(graphs.cache_hits > hits)
        feedback.progress((index + 1) / len(footprints))
    return {"cells": len(footprints), "sam_runs": graphs.sam_runs, "graph_cache_hits": graphs.cache_hits}
