"""Classify LCZ over an extent of a Sentinel-2 stack: tile, batch, infer, write the styled LCZ raster.

One engine for every caller: ``classify`` plans the grid and its tiles, each tile is computed by ``compute_tile``
and ``tile_result``, and ``map_writer`` writes the results. Who computes the tiles is the only difference: this
process, one after another (``df4lcz:classifylcz``, the command line without workers), or a Dask cluster
(``dask_tiles.DaskTiles``, the command line with ``--workers``/``--scheduler``).

Memory is bounded by one tile: at most 64 × 64 output cells and a Sentinel-2 window of at most ``TILE_PX`` pixels a
side, whatever the RESOLUTION (``tile_cells``), never by the extent; GDAL's block cache is capped at
``GDAL_CACHE_BYTES`` during the run. Patches are strided views of the tile window; only one batch is copied.
"""

import contextlib
import json
import time
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from ..lcz import legend
from ..sentinel2.clouds import MAX_CLOUD_PERCENT
from ..runtime.feedback import Feedback, TileClock
from ..runtime.grid import PATCH_PX, OutputGrid, make_grid
from ..runtime.kill_points import kill_point
from .fusion import fuse
from ..lcz.lcz_raster import SOURCE_FUSED, SOURCE_NODATA, SOURCE_S2, probability_percent
from .map_writer import open_map
from ..models.backends import sentinel2_runner
from ..models.registry import LoadedModel, load_model
from ..sentinel2.processing_level import card_level, level_warning, stack_level
from ..sentinel2.checks import InputError, check_values, open_sentinel2, own_mask_band, valid_pixels
from ..vhr.stream import CHUNK_CELLS, FusionCost, VHRStream

gdal.UseExceptions()

#: Largest side in pixels of a tile's Sentinel-2 window: 2048² × 10 bands × 4 bytes ≤ 168 MB at any RESOLUTION.
TILE_PX = 2048
#: GDAL's block cache during a run: its default (5 % of RAM) grew a long run from 0.99 to 1.78 GB.
GDAL_CACHE_BYTES = 256 << 20
#: Above this share of cells under the mask, the run suggests a composite.
CLOUD_WARNING_SHARE = 0.3


def _patch_counts(pixels, row_idx, col_idx):
    """int (rows, cols): True pixels of ``pixels`` (H, W) in the 32×32 patch at each (row_idx, col_idx)."""
    integral = np.pad(pixels.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r, c = row_idx[:, None], col_idx[None, :]
    return (integral[r + PATCH_PX, c + PATCH_PX] - integral[r, c + PATCH_PX]
            - integral[r + PATCH_PX, c] + integral[r, c])


def _read_window(ds, row, col, height, width, band=None):
    """Read (bands, height, width) from ``ds``, uint16 for 8/16-bit unsigned rasters, else float32 (so that
    signed and float values keep their sign); pixels outside the raster are 0 (no data). With ``band`` (a GDAL
    band, such as a mask band), read that one band instead: uint8 (height, width)."""
    unsigned = ds.GetRasterBand(1).DataType in (gdal.GDT_Byte, gdal.GDT_UInt16)
    shape = (height, width) if band else (ds.RasterCount, height, width)
    out = np.zeros(shape, dtype=np.uint8 if band else np.uint16 if unsigned else np.float32)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, ds.RasterYSize), min(col + width, ds.RasterXSize)
    if r1 > r0 and c1 > c0:
        out[..., r0 - row:r1 - row, c0 - col:c1 - col] = (band or ds).ReadAsArray(c0, r0, c1 - c0, r1 - r0)
    return out


def tile_cells(cell_px):
    """Cells per tile side (at most 64) so that a tile's window, (n − 1) × cell_px + 32 pixels, stays within
    TILE_PX."""
    return max(1, min(64, (TILE_PX - PATCH_PX) // cell_px + 1))


def iter_tiles(grid, size):
    """(row, col, rows, cols) of each tile of at most ``size × size`` cells, row-major."""
    for row in range(0, grid.rows, size):
        for col in range(0, grid.cols, size):
            yield row, col, min(size, grid.rows - row), min(size, grid.cols - col)


def predict_tile(ds, grid, tile, runner, scale, batch_size, nodata_values, on_batch, zero_is_nodata=True,
                 mask_band=None, max_masked_px=0):
    """Class probabilities (17, rows, cols) float32 of one tile, NaN where the cell is not classified, and bool
    (rows, cols) of the cells left out for the mask.

    A cell is not classified when its patch holds a no-data pixel in any band, or when more than
    ``max_masked_px`` of its pixels with data are masked by ``mask_band`` (clouds and shadows of the stack).
    runner: a ``models.backends`` runner, float32 (B, 10, 32, 32) → float32 (B, 17).
    """
    row, col, rows, cols = tile
    top, left = grid.patch_origin(row, col)
    span_r, span_c = (rows - 1) * grid.cell_px + PATCH_PX, (cols - 1) * grid.cell_px + PATCH_PX
    window = _read_window(ds, top, left, span_r, span_c)
    offsets_r, offsets_c = np.arange(rows) * grid.cell_px, np.arange(cols) * grid.cell_px
    has_data = valid_pixels(window, nodata_values, zero_is_nodata)
    valid = _patch_counts(~has_data, offsets_r, offsets_c) == 0
    masked = np.zeros_like(valid)
    if mask_band is not None:
        hidden = has_data & (_read_window(ds, top, left, span_r, span_c, mask_band) == 0)
        masked = valid & (_patch_counts(hidden, offsets_r, offsets_c) > max_masked_px)
        valid &= ~masked
    probs = np.full((len(legend.CODES), rows, cols), np.nan, dtype=np.float32)
    views = np.lib.stride_tricks.sliding_window_view(window, (PATCH_PX, PATCH_PX), axis=(1, 2))
    cell_r, cell_c = np.nonzero(valid)
    for start in range(0, len(cell_r), batch_size):
        rr, cc = cell_r[start:start + batch_size], cell_c[start:start + batch_size]
        # Negative DN (an L2A offset removed without clipping) are clipped to 1, as sentinel2.stack.build_stack does.
        batch = np.maximum(views[:, offsets_r[rr], offsets_c[cc]].transpose(1, 0, 2, 3).astype(np.float32), 1) / scale
        probs[:, rr, cc] = runner(batch).T
        on_batch(len(rr))
        kill_point("batch")
    return probs, masked


@dataclass(frozen=True)
class TileJob:
    """What computing any tile of a run needs, picklable for Dask workers: the Sentinel-2 raster (path and WKT
    projection), the output grid, the model card's path, the back-end settings (``device`` as the user gave it:
    a worker resolves ``auto`` to its own), the batch size, the input scaling (DN divided by ``scale``), the
    bands' nodata values, whether 0 is no data, the most masked pixels of a patch, and whether probabilities
    are written. ``stac``: with ``classify --stac`` on a cluster, the ``fetch.FetchPlan`` whose part each task fetches
    for its tile (``dask_tiles``); ``sentinel2_path`` is then only its grid's template (``fetch.grid_template``).
    ``tta``: test-time augmentation (``backends.TTARunner``)."""

    sentinel2_path: str
    projection: str
    grid: OutputGrid
    model_path: str
    backend: str
    device: str
    precision: str
    batch_size: int
    scale: float
    nodata_values: tuple
    zero_is_nodata: bool
    max_masked_px: int
    probabilities: bool
    stac: object = None
    tta: bool = False


@dataclass
class TileResult:
    """What a tile writes: ``codes`` uint8 (rows, cols), LCZ 1–17 and 0 for no data; ``probabilities`` uint8
    (18, rows, cols) in percent (``lcz_raster.probability_percent``) or None; ``source`` uint8 (rows, cols),
    the decision source (in-process runs only) or None; ``cloud_cells``, cells left out for the mask band."""

    codes: np.ndarray
    probabilities: np.ndarray
    source: np.ndarray
    cloud_cells: int


def compute_tile(job, ds, runner, tile, mask_band, on_batch=lambda n: None):
    """``predict_tile`` of ``tile`` with ``job``'s settings: float32 (17, rows, cols) probabilities (NaN = not
    classified) and bool (rows, cols) cells left out for the mask."""
    return predict_tile(ds, job.grid, tile, runner, job.scale, job.batch_size, job.nodata_values, on_batch,
                        job.zero_is_nodata, mask_band, job.max_masked_px)


def tile_result(probs, masked, probabilities, source=None):
    """The TileResult of float (17, rows, cols) probabilities (NaN = no data) and bool (rows, cols) ``masked``
    cells; with ``probabilities``, the percent bands too."""
    missing = np.isnan(probs[0])
    codes = np.where(missing, legend.NODATA, np.nan_to_num(probs).argmax(axis=0) + 1).astype(np.uint8)
    percent = probability_percent(probs, missing) if probabilities else None
    return TileResult(codes, percent, source, int(masked.sum()))


def _tile_size(grid, tile_size):
    largest = tile_cells(grid.cell_px)
    if tile_size is None:
        return largest
    if not 1 <= tile_size <= largest:
        raise InputError(f"A tile of {tile_size} × {tile_size} cells is not possible at {grid.resolution:g} m: "
                         f"give 1 to {largest} cells (its Sentinel-2 window must stay within {TILE_PX} pixels).")
    return int(tile_size)


def classify(sentinel2_path, output_path, model, bounds=None, resolution=100.0, device="cpu", batch_size=128,
             probabilities_path=None, palette="official_2022", feedback=None, vhr_path=None,
             source_path=None, sam_checkpoint=None, max_cloud=MAX_CLOUD_PERCENT, backend="auto", precision="f32",
             vhr_source_id=None, fast_sam=False, tile_size=None, executor=None, stac_plan=None,
             tta=False):
    """Classify LCZ over ``bounds`` and write the styled LCZ GeoTIFF (and optionally probabilities).

    With ``vhr_path`` and a model that has a ``vhr`` stream, each cell's patch footprint also goes through SAM,
    the object graph and the GCN, and the two streams are fused (``fusion.fuse``, α from the card); cells
    without VHR coverage or without objects keep the Sentinel-2 result. ``source_path``: optional Byte GeoTIFF
    saying per cell which streams decided (0 no data, 1 Sentinel-2 only, 2 fused). Object graphs come from the
    graph cache when they are there (``vhr_source_id``: the imagery's identity in the cache key, default its
    file); the summary counts SAM runs and cache hits. ``fast_sam``: SAM under bfloat16 autocast (not the
    paper-exact masks; off by default).

    sentinel2_path: 10-band stack (B2…B12, So2Sat order, DN on the 0–10000 scale), projected CRS in metres; a
    GeoTIFF or a VRT mosaic of several stacks (gdalbuildvrt).
    output_path: LCZ GeoTIFF, uint8 codes 1–17, 0 where the patch holds no data; a ``.qml`` sidecar is written.
    model: a ``registry.LoadedModel``, or a ``registry.ModelCard`` (loaded only when needed: with OpenVINO and
    no VHR stream, no PyTorch). bounds: (xmin, ymin, xmax, ymax) in the raster CRS, or None.
    resolution: output cell size in metres (multiple of 10). device: a ``torch.device`` or its name.
    backend, precision: of the Sentinel-2 stream (``models.backends.sentinel2_runner``: auto = OpenVINO on CPU).
    probabilities_path: optional 18-band uint8 GeoTIFF in percent (nodata 255): P(LCZ k) in bands 1–17, the
    winning class's in band 18; with a ``.qml`` showing band 18.
    max_cloud: % of a patch's pixels with data that the raster's own mask band (clouds and shadows of
    ``sentinel2stack``, or any per-dataset or alpha mask) may hide before the cell is no data.
    tile_size: output cells per tile side (default and largest: ``tile_cells``); the map does not depend on it.
    executor: None to compute the tiles here, one after another; or a callable (job, tiles, feedback) →
    iterable of (tile, TileResult) in the order of ``tiles``, with ``engines`` (the back-ends it used) and
    ``summary`` (extra summary keys), such as ``dask_tiles.DaskTiles`` (Sentinel-2 stream only: no VHR, no
    source raster).
    stac_plan: the ``fetch.FetchPlan`` the Sentinel-2 raster comes from (``classify --stac``), named in the map's
    metadata; with an ``executor``, ``sentinel2_path`` is the plan's ``fetch.grid_template`` and each task fetches
    its tile's part of the plan (no central stack).
    tta: the Sentinel-2 stream's probabilities averaged over the 8 flips and rotations of each patch
    (``backends.TTARunner``; 8× the inference time).
    A stack whose Sentinel-2 processing level (its ``PROCESSING_LEVEL`` metadata) differs from the one the model
    was trained on (the card's ``streams.sentinel2.processing_level``) is classified with a warning
    (``check_level``).
    Returns a summary dict (cells, area per class in km², cells masked for cloud, device, cells/s, seconds,
    fused cells, tiles, the stack's and the model's processing level and the warning about them).
    Raises InputError, grid.GridError, vhr.VHRError, sam.SAMError, feedback.Canceled, and what ``executor``
    raises (``dask_tiles.TileError``); no output file is left behind on any error.
    """
    feedback = feedback or Feedback()
    if not 0 <= max_cloud <= 100:
        raise InputError(f"MAX_CLOUD {max_cloud} is not a percentage from 0 to 100.")
    if executor is not None and (vhr_path or source_path):
        raise InputError("VHR fusion and the decision-source raster run in-process only; classify without a "
                         "cluster to use them.")
    started = time.perf_counter()
    card = model.card if isinstance(model, LoadedModel) else model
    stream = card.stream("sentinel2")
    ds = open_sentinel2(sentinel2_path, float(stream.get("pixel_size_m", 10)))
    levels = check_level(sentinel2_path, card, feedback)
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), bounds, resolution)
    tiles = list(iter_tiles(grid, _tile_size(grid, tile_size)))
    top, left = grid.patch_origin(0, 0)
    zero_is_nodata = check_values(ds, (top, left, (grid.rows - 1) * grid.cell_px + PATCH_PX,
                                       (grid.cols - 1) * grid.cell_px + PATCH_PX), feedback)
    job = TileJob(str(sentinel2_path), ds.GetProjection(), grid, str(card.path), backend, str(device), precision,
                  batch_size, float(stream["input_scaling"]["divide_by"]),
                  tuple(ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)), zero_is_nodata,
                  int(max_cloud / 100 * PATCH_PX * PATCH_PX), bool(probabilities_path),
                  executor and stac_plan and stac_plan.light(), bool(tta))
    total = grid.rows * grid.cols
    mask_band = own_mask_band(ds)
    if mask_band is not None:
        feedback.info(f"The stack's mask band (clouds, shadows) is honoured: a cell whose 320 m patch has more than "
                      f"{max_cloud:g} % ({job.max_masked_px} px) masked is no data.")
    vhr = {}
    if executor is None:
        runner, engine = sentinel2_runner(model, backend, device, precision, tta=tta)
        if vhr_path and "vhr" in card.streams:
            model = model if isinstance(model, LoadedModel) else load_model(card.path, device)
            vhr["stream"] = VHRStream(model, vhr_path, ds.GetProjection(), grid.bounds(), device, sam_checkpoint,
                                      vhr_source_id, fast_sam)
            vhr["alpha"] = float(card.data["fusion"]["alpha"])
            feedback.info(f"Fusing with the VHR stream, alpha = {vhr['alpha']}")
            vhr["cost"] = FusionCost(vhr["stream"].graphs, [grid.patch_bounds(r, c) for r in range(grid.rows)
                                                            for c in range(grid.cols)], grid.resolution, feedback)
        feedback.info(f"{grid.rows} × {grid.cols} cells of {grid.resolution:g} m in {len(tiles)} tile(s), {engine}, "
                      f"model {card.id}")
        results = _in_process(job, ds, runner, tiles, mask_band, vhr, feedback)
        extra = {}
    else:
        feedback.info(f"{grid.rows} × {grid.cols} cells of {grid.resolution:g} m in {len(tiles)} tile(s), model "
                      f"{card.id}")
        results = executor(job, tiles, feedback)  # every tile is computed before the map is written
        engine, extra = "; ".join(executor.engines), executor.summary
    metadata = {"DF4LCZ_MODEL": card.id, "DF4LCZ_SOURCE": _source_name(sentinel2_path, stac_plan),
                "DF4LCZ_DEVICE": str(device),
                "DF4LCZ_BACKEND": engine}
    counts = np.zeros(len(legend.CODES) + 1, dtype=np.int64)
    fused_cells = cloud_cells = 0
    with contextlib.ExitStack() as stack:
        stack.callback(gdal.SetCacheMax, gdal.GetCacheMax())
        gdal.SetCacheMax(GDAL_CACHE_BYTES)
        writer = stack.enter_context(open_map(grid, ds.GetProjection(), metadata, output_path, palette,
                                              probabilities_path, source_path))
        for tile, result in results:
            writer.write(tile, result)
            counts += np.bincount(result.codes.ravel(), minlength=len(counts))
            cloud_cells += result.cloud_cells
            fused_cells += int((result.source == SOURCE_FUSED).sum()) if result.source is not None else 0
        if counts[legend.NODATA] == total:
            if cloud_cells:
                raise InputError(f"Every cell of the extent is no data, {cloud_cells} of them under the stack's "
                                 "cloud and shadow mask; build a cloud-free composite of several dates "
                                 "('Build cloud-free Sentinel-2 composite') or choose a clearer scene.")
            raise InputError("The Sentinel-2 raster holds no data in the extent (every 320 m patch has no-data "
                             "pixels); choose an extent over valid imagery.")
    if cloud_cells > CLOUD_WARNING_SHARE * total:
        feedback.warning(f"{100 * cloud_cells / total:.0f} % of the cells are no data under the stack's cloud and "
                         "shadow mask. Build a cloud-free composite of several dates ('Build cloud-free Sentinel-2 "
                         "composite', df4lcz:sentinel2composite) and classify that instead.")
    seconds = time.perf_counter() - started
    cell_km2 = grid.resolution ** 2 / 1e6
    summary = {
        "cells": total,
        "classified_cells": int(total - counts[legend.NODATA]),
        "resolution_m": grid.resolution,
        "area_km2": {legend.label(code): round(float(counts[code] * cell_km2), 4)
                     for code in legend.CODES if counts[code]},
        "cloud_masked_cells": cloud_cells,
        "fused_cells": fused_cells,
        "sam_runs": vhr["stream"].graphs.sam_runs if vhr else 0,
        "graph_cache_hits": vhr["stream"].graphs.cache_hits if vhr else 0,
        "device": str(device),
        "backend": engine,
        "model": card.id,
        "processing_level": levels,
        "tiles": len(tiles),
        "seconds": round(seconds, 3),
        # Cells computed in this run: a resumed Dask run does not count the tiles it found done.
        "cells_per_second": round(extra.get("computed_cells", total) / seconds, 1),
        **extra,
    }
    feedback.info("Summary: " + json.dumps(summary))
    return summary


def _source_name(sentinel2_path, stac_plan):
    """The map's ``DF4LCZ_SOURCE``: the stack's path, or the STAC API, collection and dates it was fetched from."""
    if stac_plan is None:
        return str(sentinel2_path)
    api = stac_plan.request.api
    return f"STAC {api.url} {api.collection} {stac_plan.metadata['DATES']}"


def check_level(sentinel2_path, card, feedback):
    """Compare the stack's Sentinel-2 processing level with the one ``card``'s model was trained on; warn through
    ``feedback`` when they differ (``processing_level.level_warning``). Returns the summary's
    ``processing_level``: {"stack": level, "model": level, "warning": the warning or None}."""
    stack, model = stack_level(sentinel2_path), card_level(card.stream("sentinel2"))
    warning = level_warning(stack, model, card.id)
    if warning:
        feedback.warning(warning)
    return {"stack": stack, "model": model, "warning": warning}


def _in_process(job, ds, runner, tiles, mask_band, vhr, feedback):
    """(tile, TileResult) of each tile computed here in turn, with progress per batch and a line per tile, VHR
    fusion when ``vhr`` holds a stream, and cancel between batches."""
    total = job.grid.rows * job.grid.cols
    clock = TileClock(feedback, len(tiles), total)
    done = [0]

    def on_batch(n):
        done[0] += n
        feedback.progress(done[0] / total)
        feedback.check_canceled()

    for tile in tiles:
        feedback.check_canceled()
        probs, masked = compute_tile(job, ds, runner, tile, mask_band, on_batch)
        missing = np.isnan(probs[0])
        source = np.where(missing, SOURCE_NODATA, SOURCE_S2).astype(np.uint8)
        if vhr:
            _fuse_tile(job.grid, tile, probs, source, vhr, feedback)
        done[0] += int(missing.sum())
        yield tile, tile_result(probs, masked, job.probabilities, source)
        clock.tile_done(tile[2] * tile[3])


def _fuse_tile(grid, tile, probs, source, vhr, feedback):
    """Fuse the VHR stream into ``probs`` (17, rows, cols) in place, in chunks with cancel between them, and mark
    fused cells in ``source``."""
    cells = list(zip(*np.nonzero(~np.isnan(probs[0]))))
    for start in range(0, len(cells), CHUNK_CELLS):
        feedback.check_canceled()
        chunk = cells[start:start + CHUNK_CELLS]
        footprints = [grid.patch_bounds(tile[0] + r, tile[1] + c) for r, c in chunk]
        for (r, c), p_vhr in zip(chunk, vhr["stream"].probabilities(footprints, vhr["cost"].sam_done)):
            if p_vhr is not None:
                probs[:, r, c] = fuse(probs[:, r, c], p_vhr, vhr["alpha"])
                source[r, c] = SOURCE_FUSED
