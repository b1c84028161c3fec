"""Benchmark of the SAM step: MobileSAM (the default checkpoint) with the paper's AMG settings on real 320 m patches
of the Zürich orthophoto (SWISSIMAGE © swisstopo). Baseline in the same run: today's paper-exact path, one
footprint at a time through segment-anything's own ``SamAutomaticMaskGenerator``. Against it:

1. profile: where one footprint's seconds go (image encoder, mask decoder and its transformer, mask upsampling,
   stability score, boxes, RLE, NMS, small-region removal), for the library and for the exact fast path;
2. exact fast path (``sam.MaskGenerator``): seconds per footprint, and whether its masks are the library's;
3. fast SAM (bfloat16, opt-in): share of the exact masks matched at IoU ≥ 0.5, both ways;
4. shared segmentation (``sam_tiles``) against per-footprint SAM on the real orthophoto: share of per-footprint
   masks matched by a composed mask at IoU ≥ 0.5 (and the reverse), node counts, node-feature differences;
5. shared segmentation at RESOLUTION=100 over a 1280 × 1280 m area: SAM seconds per output cell. SYNTHETIC
   imagery, for timing only: a mosaic of the Zürich orthophoto and its mirror images (no larger real VHR is at
   hand); agreement (4) is measured on the real image only.

Usage: ``python bench/bench_sam.py [--device auto|cpu|cuda] [--footprints N] [--skip-area]``. Prints a JSON report.
"""

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Footprint tops and bottoms 10 m outside the orthophoto (300 m high): coverage 94 %, as in the tests.
ZURICH_TOP = 1248010.0
AREA_M = 1280.0  # 4 × 4 tiles, the grid's edges


def _matched(a, b):
    """Share of the masks of ``a`` with a mask of ``b`` at IoU ≥ 0.5, and their pairs (i, j)."""
    if len(a) == 0:
        return 1.0, []
    flat_a, flat_b = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - inter
    iou = inter / np.maximum(union, 1)
    pairs = [(i, int(iou[i].argmax())) for i in range(len(a)) if len(b) and iou[i].max() >= 0.5]
    return len(pairs) / len(a), pairs


def _timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


class Stages:
    """Seconds spent in named callables, measured by wrapping them (attribute patching, for this bench only)."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)

    def wrap(self, owner, name, label):
        function = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, function) if owner.__dict__.get(name) is timed else None


def _profile(generator, model, rgb, library):
    """(records, total seconds, {stage: seconds}) of one ``generate`` with stage timers around it."""
    import segment_anything.automatic_mask_generator as amg_module
    import torch

    stages = Stages()
    undo = [stages.wrap(generator.predictor, "set_image", "image encoder"),
            stages.wrap(model.mask_decoder, "forward", "mask decoder (library call)"),
            stages.wrap(model.mask_decoder.transformer, "forward", "decoder transformer"),
            stages.wrap(model.mask_decoder.output_upscaling, "forward", "decoder mask upscaling"),
            stages.wrap(model, "postprocess_masks", "mask upsampling 256 → 1024 → crop")]
    # The library's post-processing (the fast path calls the same functions, bound when it is built).
    for name, label in (("calculate_stability_score", "stability score"), ("batched_mask_to_box", "boxes"),
                        ("mask_to_rle_pytorch", "RLE"), ("rle_to_mask", "RLE decode"),
                        ("remove_small_regions", "small-region removal"), ("batched_nms", "NMS")):
        if library:
            undo.append(stages.wrap(amg_module, name, label))
    with torch.inference_mode():
        records, seconds = _timed(lambda: generator.generate(rgb))
    for step in undo:
        step()
    profile = {k: round(v, 2) for k, v in sorted(stages.seconds.items(), key=lambda kv: -kv[1])}
    return records, seconds, {"total": round(seconds, 2), **profile}


def _mosaic(path):
    """SYNTHETIC, timing only: AREA_M × AREA_M of the Zürich orthophoto tiled with its mirror images, on the
    tile grid's edges (LV95), as a GeoTIFF at 0.5 m."""
    from osgeo import gdal

    from df4lcz_plugin import assets

    source = gdal.Open(str(assets.fetch(assets.ZURICH_ORTHO)))
    image = source.ReadAsArray()[:3]
    rows = []
    for r in range(5):
        row = [image[:, ::1 if r % 2 == 0 else -1, ::1 if c % 2 == 0 else -1] for c in range(3)]
        rows.append(np.concatenate(row, axis=2))
    side = int(AREA_M / 0.5)
    mosaic = np.concatenate(rows, axis=1)[:, :side, :side]
    out = gdal.GetDriverByName("GTiff").Create(str(path), side, side, 3, gdal.GDT_Byte)
    out.SetGeoTransform((2679040.0, 0.5, 0.0, 1248000.0, 0.0, -0.5))
    out.SetProjection(source.GetProjection())
    out.WriteRaster(0, 0, side, side, np.ascontiguousarray(mosaic).tobytes())
    out = None
    return path


def _show(name, section):
    """Each section to stderr as soon as it is measured (the JSON report follows at the end)."""
    print(name, json.dumps(section), file=sys.stderr, flush=True)


def main():
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from df4lcz_plugin import assets, sam, sam_tiles
    from df4lcz_plugin.device import resolve_device
    from df4lcz_plugin.graph import DEFAULT_GRAPH_RULE, build_graph
    from df4lcz_plugin.graph_cache import GraphCache
    from df4lcz_plugin.vhr import open_vhr, read_patch
    from df4lcz_plugin.vhr_stream import FootprintGraphs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--footprints", type=int, default=3, help="real footprints for the agreement (4)")
    parser.add_argument("--skip-area", action="store_true", help="leave out the 1280 m area timing (5)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    zurich = assets.fetch(assets.ZURICH_ORTHO)
    source = open_vhr(zurich)
    wkt = source.dataset.GetProjection()
    x_left = source.dataset.GetGeoTransform()[0]
    # Real footprints straddling the tile seam at x = 2679360, from the image's left edge to 117 m right of it.
    footprints = [(x, ZURICH_TOP - 320, x + 320, ZURICH_TOP)
                  for x in np.linspace(x_left, x_left + 117.5, args.footprints).round(1)]
    patches = [read_patch(source, f, wkt)[0] for f in footprints]
    model = sam.load_sam(assets.fetch_member(assets.MOBILE_SAM), device)
    exact = sam.MaskGenerator(model)
    library = SamAutomaticMaskGenerator(model, **exact.settings)
    report = {"device": str(device), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
              "checkpoint": "MobileSAM vit_t", "settings": sam.PAPER_AMG_SETTINGS}

    # 1–2. One footprint: library (baseline) and the exact fast path, with their stages.
    reference, library_s, library_stages = _profile(library, model, patches[0], library=True)
    fast_records, exact_s, exact_stages = _profile(exact._generator, model, patches[0], library=False)
    identical = len(reference) == len(fast_records) and all(
        np.array_equal(a["segmentation"], b["segmentation"]) and a["bbox"] == b["bbox"]
        and a["predicted_iou"] == b["predicted_iou"] and a["stability_score"] == b["stability_score"]
        for a, b in zip(reference, fast_records))
    report["one_footprint"] = section = {
        "amg_masks": len(reference), "kept_masks": len(exact._filter(reference)),
        "baseline_library_seconds": round(library_s, 2), "exact_fast_seconds": round(exact_s, 2),
        "speedup_exact_fast_vs_library": round(library_s / exact_s, 2),
        "exact_fast_masks_identical_to_library": identical,
        "profile_library": library_stages, "profile_exact_fast": exact_stages}
    _show("one_footprint", section)

    # 3. Fast SAM (bfloat16): not identical, measured.
    per_footprint = [exact._filter(reference)] + [exact(p) for p in patches[1:]]
    bf16, bf16_s = _timed(lambda: sam.MaskGenerator(model, fast=True)(patches[0]))
    share, _ = _matched(per_footprint[0].masks, bf16.masks)
    back, _ = _matched(bf16.masks, per_footprint[0].masks)
    report["fast_sam_bfloat16"] = {"seconds": round(bf16_s, 2), "speedup_vs_library": round(library_s / bf16_s, 2),
                                   "exact_masks_matched_iou_0.5": round(share, 3),
                                   "bf16_masks_matched_iou_0.5": round(back, 3)}
    _show("fast_sam_bfloat16", report["fast_sam_bfloat16"])

    # 4. Shared segmentation against per-footprint SAM, on the real orthophoto.
    with tempfile.TemporaryDirectory() as folder:
        graphs = FootprintGraphs(zurich, wkt, device, graph_rule={**DEFAULT_GRAPH_RULE, "segmentation": "tiles"},
                                 cache=GraphCache(Path(folder) / "cache"))
        tiles = graphs._tile_masks(sam_tiles.tiles_of(footprints))
        rows = []
        for footprint, rgb, alone in zip(footprints, patches, per_footprint):
            composed = sam_tiles.compose(footprint, tiles)
            share, pairs = _matched(alone.masks, composed.masks)
            back, _ = _matched(composed.masks, alone.masks)
            xa, xc = build_graph(rgb, alone).x, build_graph(rgb, composed).x
            diff = np.array([np.abs(xa[i] - xc[j]) for i, j in pairs]).reshape(-1, 5)
            rows.append({"footprint_xmin": footprint[0], "nodes_per_footprint": len(alone),
                         "nodes_composed": len(composed), "per_footprint_matched_iou_0.5": round(share, 3),
                         "composed_matched_iou_0.5": round(back, 3),
                         "matched_node_feature_abs_diff_mean": diff.mean(0).round(4).tolist() if len(diff) else None,
                         "matched_node_feature_abs_diff_max": float(diff.max().round(4)) if len(diff) else None})
        report["shared_vs_per_footprint_real"] = {
            "tiles_segmented": graphs.sam_runs, "footprints": rows,
            "per_footprint_matched_iou_0.5_mean": round(float(np.mean([r["per_footprint_matched_iou_0.5"]
                                                                      for r in rows])), 3),
            "composed_matched_iou_0.5_mean": round(float(np.mean([r["composed_matched_iou_0.5"] for r in rows])), 3)}
        _show("shared_vs_per_footprint_real", report["shared_vs_per_footprint_real"])

        # 5. RESOLUTION=100 over a 1280 m area (synthetic mosaic): 100 cells whose footprints lie inside it.
        if not args.skip_area:
            mosaic = _mosaic(Path(folder) / "zurich_mirror_mosaic_SYNTHETIC.tif")
            area = FootprintGraphs(mosaic, wkt, device, graph_rule={**DEFAULT_GRAPH_RULE, "segmentation": "tiles"},
                                   cache=GraphCache(Path(folder) / "area_cache"))
            centres = [(2679040.0 + 160 + 100 * i, 1248000.0 - 160 - 100 * j) for j in range(10) for i in range(10)]
            cells = [(x - 160, y - 160, x + 160, y + 160) for x, y in centres]
            made, area_s = _timed(lambda: area.graphs(cells))
            report["resolution_100_area_SYNTHETIC_mosaic"] = {
                "area_m": [AREA_M, AREA_M], "cells": len(cells), "sam_tiles": area.sam_runs,
                "sam_seconds": round(area.sam_seconds, 1), "total_seconds": round(area_s, 1),
                "sam_seconds_per_cell": round(area.sam_seconds / len(cells), 2),
                "baseline_per_footprint_seconds_per_cell": round(library_s, 2),
                "speedup_per_cell_vs_baseline": round(library_s * len(cells) / area.sam_seconds, 1),
                "city_scale_sam_seconds_per_cell": round(area.sam_seconds / area.sam_runs * (100 / 320) ** 2, 2),
                "mean_nodes": round(float(np.mean([g.num_nodes for g in made if g is not None])), 1)}
    hwm = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    report["peak_rss_mb"] = round(int(hwm.group(1)) / 1024, 1)
    if device.type == "cuda":
        report["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
