"""Benchmark of the SAM step: MobileSAM (the default checkpoint) with the paper's AMG settings on real 320 m patches
of the Zürich orthophoto (SWISSIMAGE © swisstopo). Baseline in the same run: today's paper-exact path, one
footprint at a time through segment-anything's own ``SamAutomaticMaskGenerator``. Against it:

1. profile: where one footprint's seconds go (image encoder, mask decoder and its transformer, mask upsampling,
   stability score, boxes, RLE, NMS, small-region removal), for the library and for the exact fast path;
2. exact fast path (``vhr.sam.MaskGenerator``: OpenVINO image encoder, folded decoder ``vhr.sam_decoder``): seconds per footprint on
   each real footprint, whether its masks are the library's, and how far its scores are;
3. fast SAM (bfloat16, opt-in): share of the exact masks matched at IoU ≥ 0.5, both ways;
4a. SAM against itself: per-footprint masks of footprints shifted by a few metres, on their common window (the
   ceiling of any shared segmentation's agreement);
4. shared segmentation (``vhr.sam_tiles``) against per-footprint SAM on the real orthophoto: share of per-footprint
   masks matched by a composed mask at IoU ≥ 0.5 (and the reverse), node counts, node-feature differences;
5. shared segmentation at RESOLUTION=100 over a 1280 × 1280 m area: SAM seconds per output cell. SYNTHETIC
   imagery, for timing only: a mosaic of the Zürich orthophoto and its mirror images (no larger real VHR is at
   hand); agreement (4) is measured on the real image only.

Usage: ``python bench/bench_sam.py [--device auto|cpu|cuda] [--footprints N] [--shifts M ...] [--skip-area]``. Prints a JSON report.
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


def _profile(generator, model, rgb):
    """(records, total seconds, {stage: seconds}) of one ``generate`` with stage timers around it."""
    import segment_anything.automatic_mask_generator as amg_module
    import torch

    stages = Stages()
    undo = [stages.wrap(generator.predictor, "set_image", "image encoder"),
            stages.wrap(model.mask_decoder, "forward", "mask decoder (library call)"),
            stages.wrap(model.mask_decoder.transformer, "forward", "decoder transformer"),
            stages.wrap(model.mask_decoder.output_upscaling, "forward", "decoder mask upscaling"),
            stages.wrap(model, "postprocess_masks", "mask upsampling 256 → 1024 → crop")]
    # The library's post-processing.
    for name, label in (("calculate_stability_score", "stability score"), ("batched_mask_to_box", "boxes"),
                        ("mask_to_rle_pytorch", "RLE"), ("rle_to_mask", "RLE decode"),
                        ("remove_small_regions", "small-region removal"), ("batched_nms", "NMS")):
        undo.append(stages.wrap(amg_module, name, label))
    with torch.inference_mode():
        records, seconds = _timed(lambda: generator.generate(rgb))
    for step in undo:
        step()
    profile = {k: round(v, 2) for k, v in sorted(stages.seconds.items(), key=lambda kv: -kv[1])}
    return records, seconds, {"total": round(seconds, 2), **profile}


def _profile_fast(generator, model, rgb):
    """(PatchMasks of all AMG masks, total seconds, {stage: seconds}) of ``MaskGenerator.many`` on one patch."""
    stages = Stages()
    transformer = generator._generator._transformer
    undo = [stages.wrap(generator, "_encode", f"image encoder ({generator.engine})"),
            stages.wrap(transformer, "layers", "decoder transformer layers (folded)"),
            stages.wrap(transformer, "final", "decoder final attention (folded)"),
            stages.wrap(generator._generator, "_upscaler", "decoder mask upscaling (per token)"),
            stages.wrap(model, "postprocess_masks", "mask upsampling 256 → 1024 → crop")]
    masks, seconds = _timed(lambda: generator.many([rgb], paper_filter=False)[0])
    for step in undo:
        step()
    profile = {k: round(v, 2) for k, v in sorted(stages.seconds.items(), key=lambda kv: -kv[1])}
    profile["the rest"] = round(seconds - sum(stages.seconds.values()), 2)
    return masks, seconds, {"total": round(seconds, 2), **profile}


def _shift_stability(exact, source, wkt, x_left, shifts):
    """SAM's own answer to a shift, on the real orthophoto: per-footprint masks of the footprint at x_left and of
    the one ``shift`` metres right of it, compared where they overlap (masks cut to the common window, < 50 px
    dropped). No shared segmentation can agree with per-footprint SAM better than SAM agrees with itself."""
    from df4lcz_plugin.vhr.imagery import read_patch

    def masks_at(dx):
        return exact(read_patch(source, (x_left + dx, ZURICH_TOP - 320, x_left + dx + 320, ZURICH_TOP), wkt)[0]).masks

    base, rows = masks_at(0), []
    for dx in shifts:
        a, b = base[:, :, dx:], masks_at(dx)[:, :, :320 - dx]
        a, b = (m[m.reshape(len(m), -1).sum(1) >= 50] for m in (a, b))
        rows.append({"shift_m": dx, "matched_iou_0.5": round(_matched(a, b)[0], 3),
                     "shifted_matched_iou_0.5": round(_matched(b, a)[0], 3)})
    return rows


def _mosaic(path, area_m=AREA_M, top_left=(2679040.0, 1248000.0), srs_wkt=None):
    """SYNTHETIC, timing only: area_m × area_m of the Zürich orthophoto tiled with its mirror images, as a GeoTIFF
    at 0.5 m whose top-left corner is ``top_left`` (default: on the tile grid's edges in LV95, the orthophoto's
    CRS) in ``srs_wkt`` (default: the orthophoto's)."""
    from osgeo import gdal

    from df4lcz_plugin.runtime import assets

    source = gdal.Open(str(assets.fetch(assets.ZURICH_ORTHO)))
    image = source.ReadAsArray()[:3]
    side = int(area_m / 0.5)
    rows = []
    for r in range(-(-side // image.shape[1])):
        row = [image[:, ::1 if r % 2 == 0 else -1, ::1 if c % 2 == 0 else -1]
               for c in range(-(-side // image.shape[2]))]
        rows.append(np.concatenate(row, axis=2))
    mosaic = np.concatenate(rows, axis=1)[:, :side, :side]
    out = gdal.GetDriverByName("GTiff").Create(str(path), side, side, 3, gdal.GDT_Byte)
    out.SetGeoTransform((top_left[0], 0.5, 0.0, top_left[1], 0.0, -0.5))
    out.SetProjection(srs_wkt or source.GetProjection())
    out.WriteRaster(0, 0, side, side, np.ascontiguousarray(mosaic).tobytes())
    out = None
    return path


def _show(name, section):
    """Each section to stderr as soon as it is measured (the JSON report follows at the end)."""
    print(name, json.dumps(section), file=sys.stderr, flush=True)


def main():
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from df4lcz_plugin.runtime import assets
    from df4lcz_plugin.vhr import sam, sam_tiles
    from df4lcz_plugin.runtime.device import resolve_device
    from df4lcz_plugin.vhr.graph import DEFAULT_GRAPH_RULE, build_graph
    from df4lcz_plugin.vhr.graph_cache import GraphCache
    from df4lcz_plugin.vhr.imagery import open_vhr, read_patch
    from df4lcz_plugin.vhr.stream import FootprintGraphs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--footprints", type=int, default=3, help="real footprints for the agreement (4)")
    parser.add_argument("--skip-area", action="store_true", help="leave out the 1280 m area timing (5)")
    parser.add_argument("--shifts", type=int, nargs="*", default=[2, 10, 40, 80],
                        help="metres of the per-footprint shift stability (4a)")
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

    # 1–2. Each footprint: library (baseline) and the exact fast path, the first with their stages.
    rows, library_total, exact_total = [], 0.0, 0.0
    for index, rgb in enumerate(patches):
        reference, library_s, library_stages = _profile(library, model, rgb)
        fast, exact_s, exact_stages = _profile_fast(exact, model, rgb)
        reference = exact._filter(reference, paper_filter=False)
        library_total, exact_total = library_total + library_s, exact_total + exact_s
        rows.append({"footprint_xmin": footprints[index][0], "amg_masks": len(reference),
                     "baseline_library_seconds": round(library_s, 2), "exact_fast_seconds": round(exact_s, 2),
                     "masks_identical": reference.masks.shape == fast.masks.shape
                     and bool((reference.masks == fast.masks).all()) and np.array_equal(reference.bbox, fast.bbox),
                     "max_abs_diff_predicted_iou": float(np.abs(reference.predicted_iou - fast.predicted_iou).max()),
                     "max_abs_diff_stability": float(np.abs(reference.stability - fast.stability).max())})
        if index == 0:
            profiles = {"profile_library": library_stages, "profile_exact_fast": exact_stages}
    report["one_footprint"] = section = {
        "encoder": exact.engine, "footprints": rows,
        "speedup_exact_fast_vs_library": round(library_total / exact_total, 2),
        "all_masks_identical": all(r["masks_identical"] for r in rows), **profiles}
    library_s = library_total / len(patches)
    _show("one_footprint", section)

    # 3. Fast SAM (bfloat16): not identical, measured.
    per_footprint = [exact(p) for p in patches]
    bf16, bf16_s = _timed(lambda: sam.MaskGenerator(model, fast=True)(patches[0]))
    share, _ = _matched(per_footprint[0].masks, bf16.masks)
    back, _ = _matched(bf16.masks, per_footprint[0].masks)
    report["fast_sam_bfloat16"] = {"seconds": round(bf16_s, 2), "speedup_vs_library": round(rows[0]["baseline_library_seconds"] / bf16_s, 2),
                                   "exact_masks_matched_iou_0.5": round(share, 3),
                                   "bf16_masks_matched_iou_0.5": round(back, 3)}
    _show("fast_sam_bfloat16", report["fast_sam_bfloat16"])

    # 4a. The ceiling of any shared segmentation: per-footprint SAM against itself, shifted.
    report["per_footprint_shift_stability_real"] = _shift_stability(exact, source, wkt, x_left, args.shifts)
    _show("per_footprint_shift_stability_real", report["per_footprint_shift_stability_real"])

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
                "baseline_per_footprint_seconds_per_cell": round(library_s, 2),  # mean of section 1
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
