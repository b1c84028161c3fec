"""Compute the tiles of ``classify.classify`` on a Dask cluster (``distributed``), resumable from a work folder.

Each tile is one task: it reads its own window of the Sentinel-2 raster, runs the model on its worker and writes
the tile's GeoTIFF into the work folder (``tile_store``). The raster and the model are opened once per worker
thread (run workers with one thread each: inference uses the cores), not per task. A worker that dies loses only
its tile, which the scheduler gives to another; a tile whose task raises is retried ``retries`` times, then
reported by its extent while the other tiles go on. Tiles already in the work folder from a killed run of the
same manifest are not computed again. Every worker must see the raster and the model at the same paths (a shared
file system) and import this package (the plugin folder and its ``.deps/py<XY>`` on its PYTHONPATH).

With ``classify --stac`` there is no raster: each task fetches its tile's part of the fetch plan from the STAC
API's COGs into a local scratch folder (``fetch.fetch_part``, through the worker's own window cache), with a margin
of ``PART_MARGIN_PX`` pixels, and classifies it; no input file is shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, ContextManager, Iterator, Union

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from ..runtime.assets import sha256_of
from .classify import GDAL_CACHE_BYTES, Runner, Tile, TileJob, TileResult, compute_tile, tile_result
from ..runtime.grid import PATCH_PX, OutputGrid
from ..runtime.device import resolve_device
from ..models.backends import sentinel2_runner
from ..models.registry import read_card
from ..sentinel2.checks import own_mask_band
from ..sentinel2.cog_windows import Grid, WindowCache
from ..sentinel2.fetch import FetchPlan, fetch_part
from .tile_store import TileStore, load_tile, save_tile, tile_engine
from ..runtime.feedback import Feedback, TileClock

gdal.UseExceptions()

#: Retries of a task that raised, before its tile is reported as failed.
RETRIES = 2
#: Pixels fetched around a tile's patches with ``--stac``: at least 2, so that bilinear resampling and the mask's
#: dilation see what they see in the whole stack; even, so that the part starts on the 20 m bands' pixel grid.
PART_MARGIN_PX = 4
#: Failed tiles listed in the error; the rest are counted.
LISTED_FAILURES = 20
_worker = threading.local()  # the raster and the runner of this worker thread


class TileError(RuntimeError):
    """Tiles failed on the cluster after their retries; the finished ones are kept in the work folder."""


def _worker_state(job: TileJob) -> tuple[dict[str, Any], bool]:
    """(state dict, whether it was made now): this worker thread's open raster, mask band and runner for
    ``job``, made on its first tile."""
    key = (job.sentinel2_path, job.model_path, job.settings)
    state: dict[str, Any] | None = getattr(_worker, "state", None)
    if state is not None and state["key"] == key:
        return state, False
    gdal.SetCacheMax(GDAL_CACHE_BYTES)
    ds = gdal.Open(job.sentinel2_path) if job.stac is None else None  # --stac: each tile fetches its own part
    settings = job.settings
    runner, engine = sentinel2_runner(read_card(job.model_path), settings.backend, resolve_device(settings.device),
                                      settings.precision, settings.threads, settings.tta)
    _worker.state = {"key": key, "ds": ds, "mask": ds and own_mask_band(ds), "runner": runner, "engine": engine}
    return _worker.state, True


def _fetched_tile(job: TileJob, plan: FetchPlan, tile: Tile,
                  runner: Runner) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """``compute_tile`` of ``tile`` on its part of ``plan`` (``job.stac``), fetched into a scratch folder of this
    worker."""
    top, left = job.grid.patch_origin(tile[0], tile[1])
    bottom = top + (tile[2] - 1) * job.grid.cell_px + PATCH_PX + PART_MARGIN_PX
    right = left + (tile[3] - 1) * job.grid.cell_px + PATCH_PX + PART_MARGIN_PX
    row0, col0 = max(top - PART_MARGIN_PX, 0) // 2 * 2, max(left - PART_MARGIN_PX, 0) // 2 * 2
    row1, col1 = min(bottom, plan.grid.height), min(right, plan.grid.width)
    x0, y0, pixel = plan.grid.bounds[0], plan.grid.bounds[3], plan.grid.pixel_m
    part = Grid(plan.grid.epsg, (x0 + col0 * pixel, y0 - row1 * pixel, x0 + col1 * pixel, y0 - row0 * pixel))
    with tempfile.TemporaryDirectory(prefix="df4lcz_tile_") as scratch:
        path = os.path.join(scratch, "stack.tif")
        fetch_part(plan, part, path, WindowCache())
        ds = gdal.Open(path)
        # The part's pixel (0, 0) is the whole grid's (row0, col0).
        shifted = dataclasses.replace(job, grid=dataclasses.replace(job.grid, row0_px=job.grid.row0_px - row0,
                                                                    col0_px=job.grid.col0_px - col0))
        result = compute_tile(shifted, ds, runner, tile, own_mask_band(ds))
        ds = None  # closed before its folder goes
    return result


def run_tile(job: TileJob, tile: Tile, folder: str) -> bool:
    """The Dask task: compute ``tile`` of ``job`` and write its GeoTIFF into the tiles ``folder``. Returns whether
    this task loaded the model (the worker's first tile)."""
    state, loaded = _worker_state(job)
    if job.stac is None:
        probs, masked = compute_tile(job, state["ds"], state["runner"], tile, state["mask"])
    else:
        probs, masked = _fetched_tile(job, job.stac, tile, state["runner"])
    save_tile(folder, job, tile, tile_result(probs, masked, job.probabilities), state["engine"])
    return loaded


def manifest(job: TileJob, tiles: list[Tile]) -> dict[str, Any]:
    """What the tiles of a run depend on: the job, the tiling, the input files (size, modification time; all the
    files of a VRT mosaic) and the model's weights (sha256)."""
    card = read_card(job.model_path)
    inputs: list[list[Any]] | dict[str, Any]
    if job.stac is None:
        files = gdal.Open(job.sentinel2_path).GetFileList() or [job.sentinel2_path]
        inputs = [[path, os.stat(path).st_size, os.stat(path).st_mtime_ns] for path in files]
    else:
        inputs = job.stac.describe()
    return {
        "format": 1,
        "job": _manifest_job(job),
        "tiles_sha256": hashlib.sha256(json.dumps(tiles).encode()).hexdigest(),
        "inputs": inputs,
        "model_weights_sha256": card.data.get("weights_sha256") or sha256_of(card.weights_path),
    }


def _manifest_job(job: TileJob) -> dict[str, Any]:
    """The manifest's ``job``: what of ``job`` and its settings the tiles depend on, under the keys of manifest
    format 1 (a flat TileJob), so that a work folder of an earlier version resumes. Settings that do not change a
    tile (palette, threads, tile size: the tiling is hashed apart) are left out, so changing them keeps the tiles."""
    settings = job.settings
    return {"sentinel2_path": job.sentinel2_path, "projection": job.projection,
            "grid": dataclasses.asdict(job.grid), "model_path": job.model_path, "backend": settings.backend,
            "device": settings.device, "precision": settings.precision, "batch_size": settings.batch_size,
            "scale": job.scale, "nodata_values": job.nodata_values, "zero_is_nodata": job.zero_is_nodata,
            "max_masked_px": settings.max_masked_px, "probabilities": job.probabilities,
            "stac": job.stac is not None, "tta": settings.tta}


class DaskTiles:
    """The ``executor`` of ``classify.classify`` that runs the tiles on the Dask cluster of ``client``.

    work_dir: the run's work folder (``tile_store.TileStore``). retries: of a tile whose task raised. The
    workers' CPU inference threads are the job's ``settings.threads``. After a call, ``engines`` lists the
    back-ends the tiles ran on and ``summary`` the run's workers, resumed tiles, model loads and computed cells;
    ``clear()`` deletes the work folder's tiles once the map is written.
    """

    def __init__(self, client: Any, work_dir: Union[str, Path], retries: int = RETRIES) -> None:
        self.client, self.work_dir, self.retries = client, work_dir, retries
        self.store: TileStore | None = None
        self.engines: list[str] = []
        self.summary: dict[str, Any] = {}

    def __call__(self, job: TileJob, tiles: list[Tile], feedback: Feedback) -> Iterator[tuple[Tile, TileResult]]:
        """Compute every tile of ``tiles`` not yet in the work folder, then return an iterator of (tile,
        TileResult) read back from it in the order of ``tiles``. Raises TileError naming each failed tile."""
        from distributed import as_completed

        store = self.store = TileStore(self.work_dir, manifest(job, tiles), feedback)
        todo = [tile for tile in tiles if not store.has(tile)]
        cells = job.grid.rows * job.grid.cols
        clock = TileClock(feedback, len(tiles), cells, len(tiles) - len(todo),
                          cells - sum(t[2] * t[3] for t in todo))
        workers = len(self.client.nthreads())
        feedback.info(f"{len(tiles) - len(todo)} of {len(tiles)} tiles already in {self.work_dir}; {len(todo)} to "
                      f"compute on {workers} Dask worker(s). Dashboard: {self.client.dashboard_link}")
        run = uuid.uuid4().hex[:8]
        futures = {self.client.submit(run_tile, job, tile, str(store.tiles),
                                      key=f"lcz-tile-{tile[0]}-{tile[1]}-{run}", retries=self.retries): tile
                   for tile in todo}
        failed: list[tuple[Tile, BaseException]] = []
        loads = 0
        try:
            for future in as_completed(futures):
                tile = futures.pop(future)
                if future.status == "error":
                    failed.append((tile, future.exception()))
                    continue
                loads += future.result()
                clock.tile_done(tile[2] * tile[3])
                feedback.check_canceled()
        finally:
            self.client.cancel(list(futures))  # on cancel or interrupt, what is left stops
        if failed:
            raise TileError(self._failures(job.grid, failed, len(tiles)))
        computed = sum(t[2] * t[3] for t in todo)
        self.engines = sorted({engine for tile in tiles if (engine := tile_engine(store.tiles, tile))})
        self.summary = {"workers": workers, "tiles_resumed": len(tiles) - len(todo), "model_loads": loads,
                        "computed_cells": computed}
        return ((tile, load_tile(store.tiles, tile)) for tile in tiles)

    def writing(self, job: TileJob) -> ContextManager[None]:
        """Nothing of its own to put in place with the map: its work folder is emptied by ``clear``."""
        return contextlib.nullcontext()

    def _failures(self, grid: OutputGrid, failed: list[tuple[Tile, BaseException]], total: int) -> str:
        """The TileError's message: each failed tile by its rows, columns and extent, and how to resume."""
        lines = [f"  rows {row}–{row + rows - 1}, cols {col}–{col + cols - 1}, --extent "
                 f"{' '.join(f'{v:.1f}' for v in grid.bounds(row, col, rows, cols))}: "
                 f"{type(error).__name__}: {error}" for (row, col, rows, cols), error in sorted(failed)]
        more = len(lines) - LISTED_FAILURES
        listed = "\n".join(lines[:LISTED_FAILURES]) + (f"\n  … and {more} more" if more > 0 else "")
        return (f"{len(failed)} of {total} tiles failed {self.retries + 1} times (extents in the raster's CRS, "
                f"xmin ymin xmax ymax); the {total - len(failed)} others are kept in {self.work_dir}, and running "
                f"the same command again computes only the missing ones:\n{listed}")

    def clear(self) -> None:
        """Delete the tiles and the manifest of the work folder (after the map has been written)."""
        if self.store is not None:
            self.store.clear()
