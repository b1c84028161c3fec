"""Classify LCZ over an extent of a Sentinel-2 stack: tile, batch, infer, write the styled LCZ raster.

Memory is bounded by one tile: at most 64 × 64 output cells and a Sentinel-2 window of at most ``TILE_PX`` pixels a
side, whatever the RESOLUTION (``tile_cells``), never by the extent; GDAL's block cache is capped at
``GDAL_CACHE_BYTES`` during the run. Patches are strided views of the tile window; only one batch is copied.
"""

import contextlib
import json
import time

import numpy as np
from osgeo import gdal

from . import legend
from .clouds import MAX_CLOUD_PERCENT
from .feedback import Feedback
from .grid import PATCH_PX, make_grid
from .fusion import SOURCE_FUSED, SOURCE_NODATA, SOURCE_S2, fuse
from .lcz_raster import (create_lcz_raster, create_probability_raster, create_source_raster, probability_percent,
                         write_probability_style, write_style_sidecar)
from .models.backends import sentinel2_runner
from .models.registry import LoadedModel, load_model
from .outputs import atomic_output
from .sentinel2_input import InputError, check_values, open_sentinel2, own_mask_band, valid_pixels
from .vhr_stream import CHUNK_CELLS, FusionCost, VHRStream

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
        # Negative DN (an L2A offset removed without clipping) are clipped to 1, as sentinel2.build_stack does.
        batch = np.maximum(views[:, offsets_r[rr], offsets_c[cc]].transpose(1, 0, 2, 3).astype(np.float32), 1) / scale
        probs[:, rr, cc] = runner(batch).T
        on_batch(len(rr))
    return probs, masked


def classify(sentinel2_path, output_path, model, bounds=None, resolution=100.0, device="cpu", batch_size=128,
             probabilities_path=None, palette="official_2022", feedback=None, vhr_path=None,
             source_path=None, sam_checkpoint=None, max_cloud=MAX_CLOUD_PERCENT, backend="auto", precision="f32",
             vhr_source_id=None, fast_sam=False):
    """Classify LCZ over ``bounds`` and write the styled LCZ GeoTIFF (and optionally probabilities).

    With ``vhr_path`` and a model that has a ``vhr`` stream, each cell's patch footprint also goes through SAM,
    the object graph and the GCN, and the two streams are fused (``fusion.fuse``, α from the card); cells
    without VHR coverage or without objects keep the Sentinel-2 result. ``source_path``: optional Byte GeoTIFF
    saying per cell which streams decided (0 no data, 1 Sentinel-2 only, 2 fused). Object graphs come from the
    graph cache when they are there (``vhr_source_id``: the imagery's identity in the cache key, default its
    file); the summary counts SAM runs and cache hits. ``fast_sam``: SAM under bfloat16 autocast (not the
    paper-exact masks; off by default).

    sentinel2_path: 10-band stack (B2…B12, So2Sat order, DN on the 0–10000 scale), projected CRS in metres.
    output_path: LCZ GeoTIFF, uint8 codes 1–17, 0 where the patch holds no data; a ``.qml`` sidecar is written.
    model: a ``registry.LoadedModel``, or a ``registry.ModelCard`` (loaded only when needed: with OpenVINO and
    no VHR stream, no PyTorch). bounds: (xmin, ymin, xmax, ymax) in the raster CRS, or None.
    resolution: output cell size in metres (multiple of 10). device: a ``torch.device`` or its name.
    backend, precision: of the Sentinel-2 stream (``models.backends.sentinel2_runner``: auto = OpenVINO on CPU).
    probabilities_path: optional 18-band uint8 GeoTIFF in percent (nodata 255): P(LCZ k) in bands 1–17, the
    winning class's in band 18; with a ``.qml`` showing band 18.
    max_cloud: % of a patch's pixels with data that the raster's own mask band (clouds and shadows of
    ``sentinel2stack``, or any per-dataset or alpha mask) may hide before the cell is no data.
    Returns a summary dict (cells, area per class in km², cells masked for cloud, device, cells/s, seconds,
    fused cells).
    Raises InputError, grid.GridError, vhr.VHRError, sam.SAMError, feedback.Canceled; no output file is left
    behind on any error.
    """
    feedback = feedback or Feedback()
    if not 0 <= max_cloud <= 100:
        raise InputError(f"MAX_CLOUD {max_cloud} is not a percentage from 0 to 100.")
    started = time.perf_counter()
    card = model.card if isinstance(model, LoadedModel) else model
    stream = card.stream("sentinel2")
    ds = open_sentinel2(sentinel2_path, float(stream.get("pixel_size_m", 10)))
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), bounds, resolution)
    top, left = grid.patch_origin(0, 0)
    zero_is_nodata = check_values(ds, (top, left, (grid.rows - 1) * grid.cell_px + PATCH_PX,
                                       (grid.cols - 1) * grid.cell_px + PATCH_PX), feedback)
    scale = float(stream["input_scaling"]["divide_by"])
    nodata_values = [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)]
    runner, engine = sentinel2_runner(model, backend, device, precision)
    total = grid.rows * grid.cols
    vhr_stream = None
    if vhr_path and "vhr" in card.streams:
        model = model if isinstance(model, LoadedModel) else load_model(card.path, device)
        grid_bounds = (grid.geotransform[0], grid.geotransform[3] + grid.rows * grid.geotransform[5],
                       grid.geotransform[0] + grid.cols * grid.geotransform[1], grid.geotransform[3])
        vhr_stream = VHRStream(model, vhr_path, ds.GetProjection(), grid_bounds, device, sam_checkpoint,
                               vhr_source_id, fast_sam)
        alpha = float(card.data["fusion"]["alpha"])
        feedback.info(f"Fusing with the VHR stream, alpha = {alpha}")
        cost = FusionCost(vhr_stream.graphs, [grid.patch_bounds(r, c) for r in range(grid.rows)
                                              for c in range(grid.cols)], grid.resolution, feedback)
    feedback.info(f"{grid.rows} × {grid.cols} cells of {grid.resolution:g} m, {engine}, model {card.id}")
    metadata = {"DF4LCZ_MODEL": card.id, "DF4LCZ_SOURCE": str(sentinel2_path), "DF4LCZ_DEVICE": str(device),
                "DF4LCZ_BACKEND": engine}
    counts = np.zeros(len(legend.CODES) + 1, dtype=np.int64)
    fused_cells = cloud_cells = 0
    mask_band = own_mask_band(ds)
    max_masked_px = int(max_cloud / 100 * PATCH_PX * PATCH_PX)
    if mask_band is not None:
        feedback.info(f"The stack's mask band (clouds, shadows) is honoured: a cell whose 320 m patch has more than "
                      f"{max_cloud:g} % ({max_masked_px} px) masked is no data.")
    done = [0]

    def on_batch(n):
        done[0] += n
        feedback.progress(done[0] / total)
        feedback.check_canceled()

    with contextlib.ExitStack() as stack:
        stack.callback(gdal.SetCacheMax, gdal.GetCacheMax())
        gdal.SetCacheMax(GDAL_CACHE_BYTES)
        lcz_tmp = stack.enter_context(atomic_output(output_path))
        prob_tmp = stack.enter_context(atomic_output(probabilities_path)) if probabilities_path else None
        source_tmp = stack.enter_context(atomic_output(source_path)) if source_path else None
        datasets = {}
        # Runs first on exit: GDAL must close (and write its .aux.xml) before the files are renamed or removed.
        stack.callback(datasets.clear)
        datasets["lcz"] = create_lcz_raster(lcz_tmp, grid, ds.GetProjection(), palette, metadata)
        if prob_tmp:
            datasets["probabilities"] = create_probability_raster(prob_tmp, grid, ds.GetProjection(), metadata)
        if source_tmp:
            datasets["source"] = create_source_raster(source_tmp, grid, ds.GetProjection(), metadata)
        for tile in iter_tiles(grid, tile_cells(grid.cell_px)):
            feedback.check_canceled()
            probs, masked = predict_tile(ds, grid, tile, runner, scale, batch_size, nodata_values, on_batch,
                                         zero_is_nodata, mask_band, max_masked_px)
            cloud_cells += int(masked.sum())
            missing = np.isnan(probs[0])
            source = np.where(missing, SOURCE_NODATA, SOURCE_S2).astype(np.uint8)
            if vhr_stream is not None:
                cells = list(zip(*np.nonzero(~missing)))
                for start in range(0, len(cells), CHUNK_CELLS):
                    feedback.check_canceled()
                    chunk = cells[start:start + CHUNK_CELLS]
                    footprints = [grid.patch_bounds(tile[0] + r, tile[1] + c) for r, c in chunk]
                    for (r, c), p_vhr in zip(chunk, vhr_stream.probabilities(footprints, cost.sam_done)):
                        if p_vhr is not None:
                            probs[:, r, c] = fuse(probs[:, r, c], p_vhr, alpha)
                            source[r, c] = SOURCE_FUSED
            codes = np.where(missing, legend.NODATA, np.nan_to_num(probs).argmax(axis=0) + 1).astype(np.uint8)
            counts += np.bincount(codes.ravel(), minlength=len(counts))
            done[0] += int(missing.sum())
            datasets["lcz"].GetRasterBand(1).WriteArray(codes, tile[1], tile[0])
            if "probabilities" in datasets:
                datasets["probabilities"].WriteArray(probability_percent(probs, missing), tile[1], tile[0])
            if "source" in datasets:
                datasets["source"].GetRasterBand(1).WriteArray(source, tile[1], tile[0])
            fused_cells += int((source == SOURCE_FUSED).sum())
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
    write_style_sidecar(output_path, palette)
    if probabilities_path:
        write_probability_style(probabilities_path)
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
        "sam_runs": vhr_stream.graphs.sam_runs if vhr_stream else 0,
        "graph_cache_hits": vhr_stream.graphs.cache_hits if vhr_stream else 0,
        "device": str(device),
        "backend": engine,
        "model": card.id,
        "seconds": round(seconds, 3),
        "cells_per_second": round(total / seconds, 1),
    }
    feedback.info("Summary: " + json.dumps(summary))
    return summary
