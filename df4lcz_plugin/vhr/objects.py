"""SAM objects and their graphs over an extent of VHR imagery (the ``df4lcz:buildobjectgraphs`` engine).

The extent is cut into 320 m patches from its top-left corner; each patch goes through the SAM step
(``sam.MaskGenerator``) and graph construction (``graph.build_graph``). Masks lying mostly (> 50 %) outside the
VHR coverage are dropped before the 50-largest rule, so raster edges give no "no-data objects".

Graph file (``.npz``, open format, numpy only; no pickles):
- ``x`` float32 (N, 5): node features [R, G, B, cx, cy] in [0, 1] (see ``graph.py``);
- ``edge_index`` int64 (2, E): edges of all patches, node indices global to ``x``;
- ``edge_weight`` float32 (E,): D^-1/2 A D^-1/2 weights;
- ``node_patch`` int64 (N,): patch id of each node; ``patch_id`` int64 (P,); ``patch_bounds`` float64 (P, 4):
  xmin, ymin, xmax, ymax of each patch in ``crs_wkt``; ``patch_coverage`` float32 (P,);
- ``crs_wkt`` str; ``settings_json`` str: the AMG settings, the graph rule and the checkpoint's sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from osgeo import gdal, ogr, osr

from ..runtime.feedback import Feedback
from .graph import DEFAULT_GRAPH_RULE, ObjectGraph, build_graph
from ..runtime.ogr_memory import memory_datasource
from ..runtime.outputs import atomic_output
from .sam import PATCH_SIZE_PX, MaskGenerator, PatchMasks, load_sam
from .imagery import Bounds, VHRError, open_vhr, overlaps, read_patch

if TYPE_CHECKING:
    import torch

PATCH_M = 320.0


@dataclass
class PatchObjects:
    """One patch: its id, bounds, coverage, kept masks and graph."""

    patch_id: int
    bounds: Bounds
    coverage: float
    masks: PatchMasks
    graph: ObjectGraph


def patch_bounds(bounds: Bounds, patch_m: float = PATCH_M) -> list[Bounds]:
    """320 m patches covering ``bounds`` (xmin, ymin, xmax, ymax), row-major from the top-left corner."""
    xmin, ymin, xmax, ymax = bounds
    cols, rows = int(np.ceil((xmax - xmin) / patch_m - 1e-9)), int(np.ceil((ymax - ymin) / patch_m - 1e-9))
    return [(xmin + c * patch_m, ymax - (r + 1) * patch_m, xmin + (c + 1) * patch_m, ymax - r * patch_m)
            for r in range(rows) for c in range(cols)]


def _drop_outside_coverage(patch_masks: PatchMasks, coverage_mask: npt.NDArray[np.bool_]) -> PatchMasks:
    keep = [i for i, m in enumerate(patch_masks.masks) if coverage_mask[m].mean() > 0.5]
    return PatchMasks(patch_masks.masks[keep], patch_masks.bbox[keep], patch_masks.predicted_iou[keep],
                      patch_masks.stability[keep], patch_masks.settings)


def extract_objects(vhr_path: Path | str, bounds: Bounds, srs_wkt: str, checkpoint: Path | str,
                    device: torch.device | str = "cpu", amg_settings: dict[str, Any] | None = None,
                    graph_rule: dict[str, Any] | None = None, feedback: Feedback | None = None,
                    fast: bool = False) -> list[PatchObjects]:
    """SAM objects and graphs of every 320 m patch of ``bounds`` (in ``srs_wkt``, metres).

    ``fast``: SAM under bfloat16 autocast (``sam.MaskGenerator``). Returns a list of PatchObjects. Raises VHRError
    (bad raster, no overlap), sam.SAMError, feedback.Canceled.
    """
    import torch

    feedback = feedback or Feedback()
    source = open_vhr(vhr_path)
    if not overlaps(source, bounds, srs_wkt):
        raise VHRError("The VHR raster does not overlap the extent; draw the extent over the imagery.")
    generator = MaskGenerator(load_sam(checkpoint, device), fast=fast, **(amg_settings or {}))
    patches = patch_bounds(bounds)
    results = []
    for patch_id, footprint in enumerate(patches):
        feedback.check_canceled()
        rgb, coverage = read_patch(source, footprint, srs_wkt)
        if coverage == 0:
            continue
        torch.manual_seed(0)  # AMG is deterministic; the seed guards any stochastic kernel
        masks = _drop_outside_coverage(generator(rgb), rgb.any(axis=2))
        results.append(PatchObjects(patch_id, footprint, coverage, masks, build_graph(rgb, masks, graph_rule)))
        feedback.progress((patch_id + 1) / len(patches))
    return results


def mask_polygons(mask: npt.NDArray[np.bool_], footprint: Bounds, srs_wkt: str) -> ogr.Geometry:
    """OGR (multi)polygon of a (320, 320) bool mask placed on ``footprint`` (1 m pixels), via GDAL Polygonize."""
    xmin, _, _, ymax = footprint
    size = (footprint[2] - footprint[0]) / PATCH_SIZE_PX
    raster = gdal.GetDriverByName("MEM").Create("", PATCH_SIZE_PX, PATCH_SIZE_PX, 1, gdal.GDT_Byte)
    raster.SetGeoTransform((xmin, size, 0, ymax, 0, -size))
    raster.GetRasterBand(1).WriteArray(mask.astype(np.uint8))
    srs = osr.SpatialReference()
    srs.ImportFromWkt(srs_wkt)
    source = memory_datasource()  # must outlive the layer (GDAL bindings)
    layer = source.CreateLayer("m", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    band = raster.GetRasterBand(1)
    gdal.Polygonize(band, band, layer, 0)
    union = ogr.Geometry(ogr.wkbMultiPolygon)
    for feature in layer:
        union.AddGeometry(feature.GetGeometryRef())
    return union


def write_graph_file(path: Path | str, patches: list[PatchObjects], srs_wkt: str,
                     settings: dict[str, Any]) -> Path | str:
    """Write the ``.npz`` graph file (format in the module docstring) via a temporary file."""
    offsets = np.cumsum([0] + [p.graph.num_nodes for p in patches])
    arrays = {
        "x": np.concatenate([p.graph.x for p in patches] or [np.zeros((0, 5), np.float32)]).astype(np.float32),
        "edge_index": np.concatenate([p.graph.edge_index + o for p, o in zip(patches, offsets)]
                                     or [np.zeros((2, 0), np.int64)], axis=1).astype(np.int64),
        "edge_weight": np.concatenate([p.graph.edge_weight for p in patches] or [np.zeros(0, np.float32)]),
        "node_patch": np.concatenate([np.full(p.graph.num_nodes, p.patch_id) for p in patches]
                                     or [np.zeros(0, np.int64)]).astype(np.int64),
        "patch_id": np.array([p.patch_id for p in patches], np.int64),
        "patch_bounds": np.array([p.bounds for p in patches], np.float64).reshape(-1, 4),
        "patch_coverage": np.array([p.coverage for p in patches], np.float32),
        "crs_wkt": np.array(srs_wkt),
        "settings_json": np.array(json.dumps(settings)),
    }
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return path


def default_settings(amg_settings: dict[str, Any] | None, graph_rule: dict[str, Any] | None,
                     checkpoint_sha256: str) -> dict[str, Any]:
    """The settings recorded in graph files and model cards."""
    from .sam import PAPER_AMG_SETTINGS

    return {"amg": {**PAPER_AMG_SETTINGS, **(amg_settings or {})}, "graph_rule": graph_rule or DEFAULT_GRAPH_RULE,
            "checkpoint_sha256": checkpoint_sha256, "patch_m": PATCH_M, "patch_px": PATCH_SIZE_PX}
