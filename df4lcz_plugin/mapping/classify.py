"""Classify LCZ over an extent of a Sentinel-2 stack: tile, batch, infer, write the styled LCZ raster.

One engine for every caller: ``classify`` plans the grid and its tiles, each tile is computed by ``compute_tile``
and ``tile_result``, and ``map_writer`` writes the results. Who computes the tiles is the only difference: this
process, one after another (``df4lcz:classifylcz``, the command line without workers), or a Dask cluster
(``dask_tiles.DaskTiles``, the command line with ``--workers``/``--scheduler``).

Memory is bounded by one tile: at most 64 × 64 output cells and a Sentinel-2 window of at most ``TILE_PX`` pixels a
side, whatever the RESOLUTION (``tile_cells``), never by the extent; GDAL's block cache is capped at
``GDAL_CACHE_BYTES`` during the run. Patches are strided views of the tile window; only one batch is copied.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Optional, Protocol, Sequence, Union

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from ..lcz import legend
from ..runtime.feedback import Feedback, TileClock
from ..runtime.grid import PATCH_PX, OutputGrid, make_grid
from ..runtime.kill_points import kill_point
from .fusion import fuse
from ..lcz.lcz_raster import SOURCE_FUSED, SOURCE_NODATA, SOURCE_S2, probability_percent
from .map_writer import MapWriter, open_map
from .settings import ClassifySettings
from ..models.backends import sentinel2_runner
from ..models.registry import LoadedModel, ModelCard, load_model
from ..sentinel2.processing_level import card_level, level_warning, stack_level
from ..sentinel2.checks import InputError, check_values, open_sentinel2, own_mask_band, valid_pixels
from ..vhr.stream import CHUNK_CELLS, FusionCost, VHRStream

if TYPE_CHECKING:
    from ..sentinel2.fetch import FetchPlan

gdal.UseExceptions()

#: Largest side in pixels of a tile's Sentinel-2 window: 2048² × 10 bands × 4 bytes ≤ 168 MB at any RESOLUTION.
TILE_PX = 2048
#: GDAL's block cache during a run: its default (5 % of RAM) grew a long run from 0.99 to 1.78 GB.
GDAL_CACHE_BYTES = 256 << 20
#: Above this share of cells under the mask, the run suggests a composite.
CLOUD_WARNING_SHARE = 0.3

#: A tile: (row, col, rows, cols) in output cells.
Tile = tuple[int, int, int, int]
#: A runner (``models.backends``): float32 (B, 10, 32, 32) patches → float32 (B, 17) class probabilities.
Runner = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
PathLike = Union[str, Path]


def _patch_counts(pixels: npt.NDArray[np.bool_], row_idx: npt.NDArray[np.int_],
                  col_idx: npt.NDArray[np.int_]) -> npt.NDArray[np.int32]:
    """int (rows, cols): True pixels of ``pixels`` (H, W) in the 32×32 patch at each (row_idx, col_idx)."""
    integral = np.pad(pixels.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r, c = row_idx[:, None], col_idx[None, :]
    counts: npt.NDArray[np.int32] = integral[r + PATCH_PX, c + PATCH_PX] - integral[r, c + PATCH_PX]
    return counts - integral[r + PATCH_PX, c] + integral[r, c]


def _read_window(ds: gdal.Dataset, row: int, col: int, height: int, width: int,
                 band: Optional[gdal.Band] = None) -> npt.NDArray[Any]:
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


def tile_cells(cell_px: int) -> int:
    """Cells per tile side (at most 64) so that a tile's window, (n − 1) × cell_px + 32 pixels, stays within
    TILE_PX."""
    return max(1, min(64, (TILE_PX - PATCH_PX) // cell_px + 1))


def iter_tiles(grid: OutputGrid, size: int) -> Iterator[Tile]:
    """(row, col, rows, cols) of each tile of at most ``size × size`` cells, row-major."""
    for row in range(0, grid.rows, size):
        for col in range(0, grid.cols, size):
            yield row, col, min(size, grid.rows - row), min(size, grid.cols - col)


def predict_tile(ds: gdal.Dataset, grid: OutputGrid, tile: Tile, runner: Runner, scale: float, batch_size: int,
                 nodata_values: Sequence[Optional[float]], on_batch: Callable[[int], None], zero_is_nodata: bool = True,
                 mask_band: Optional[gdal.Band] = None,
                 max_masked_px: int = 0) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Class probabilities (17, rows, cols) float32 of one tile, NaN where the cell is not classified, and bool
    (rows, cols) of the cells left out for the mask.

    A cell is not classified when its patch holds a no-data pixel in any band, or when more than
    ``max_masked_px`` of its pixels with data are masked by ``mask_band`` (clouds and shadows of the stack).
    runner: a ``models.backends`` runner, float32 (B, 10, 32, 32) → float32 (B, 17). scale: DN divided by it.
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
    # numpy's stubs type ``axis`` as one int; a tuple is documented and works.
    views = np.lib.stride_tricks.sliding_window_view(window, (PATCH_PX, PATCH_PX), axis=(1, 2))  # type: ignore
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
    projection), the output grid, the model card's path, the run's ``settings`` (``device`` as the user gave it:
    a worker resolves ``auto`` to its own), the input scaling (DN divided by ``scale``), the bands' nodata values,
    whether 0 is no data, and whether probabilities are written. ``stac``: with ``classify --stac`` on a cluster,
    the ``fetch.FetchPlan`` whose part each task fetches for its tile (``dask_tiles``); ``sentinel2_path`` is then
    only its grid's template (``fetch.grid_template``)."""

    sentinel2_path: str
    projection: str
    grid: OutputGrid
    model_path: str
    settings: ClassifySettings
    scale: float
    nodata_values: tuple[Optional[float], ...]
    zero_is_nodata: bool
    probabilities: bool
    stac: Optional[FetchPlan] = None


@dataclass
class TileResult:
    """What a tile writes: ``codes`` uint8 (rows, cols), LCZ 1–17 and 0 for no data; ``probabilities`` uint8
    (18, rows, cols) in percent (``lcz_raster.probability_percent``) or None; ``source`` uint8 (rows, cols),
    the decision source (in-process runs only) or None; ``cloud_cells``, cells left out for the mask band."""

    codes: npt.NDArray[np.uint8]
    probabilities: Optional[npt.NDArray[np.uint8]]
    source: Optional[npt.NDArray[np.uint8]]
    cloud_cells: int


class TileExecutor(Protocol):
    """Who computes the tiles of a run elsewhere than here, one after another (``dask_tiles.DaskTiles``,
    ``multidate.DatesAverage``). ``engines``: the back-ends it used; ``summary``: extra summary keys (both read
    once the tiles are computed)."""

    engines: list[str]
    summary: dict[str, Any]

    def __call__(self, job: TileJob, tiles: list[Tile], feedback: Feedback) -> Iterable[tuple[Tile, TileResult]]:
        """(tile, TileResult) of each of ``tiles``, in their order."""

    def writing(self, job: TileJob) -> ContextManager[None]:
        """Held by ``classify`` around writing the map: it ends without error once the map is in place (the
        executor may then put outputs of its own in place), with the error otherwise (it then removes them)."""


def compute_tile(job: TileJob, ds: gdal.Dataset, runner: Runner, tile: Tile, mask_band: Optional[gdal.Band],
                 on_batch: Callable[[int], None] = lambda n: None
                 ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """``predict_tile`` of ``tile`` with ``job``'s settings: float32 (17, rows, cols) probabilities (NaN = not
    classified) and bool (rows, cols) cells left out for the mask."""
    return predict_tile(ds, job.grid, tile, runner, job.scale, job.settings.batch_size, job.nodata_values, on_batch,
                        job.zero_is_nodata, mask_band, job.settings.max_masked_px)


def tile_result(probs: npt.NDArray[np.float32], masked: npt.NDArray[np.bool_], probabilities: bool,
                source: Optional[npt.NDArray[np.uint8]] = None) -> TileResult:
    """The TileResult of float (17, rows, cols) probabilities (NaN = no data) and bool (rows, cols) ``masked``
    cells; with ``probabilities``, the percent bands too."""
    missing = np.isnan(probs[0])
    codes = np.where(missing, legend.NODATA, np.nan_to_num(probs).argmax(axis=0) + 1).astype(np.uint8)
    percent = probability_percent(probs, missing) if probabilities else None
    return TileResult(codes, percent, source, int(masked.sum()))


def _tile_size(grid: OutputGrid, tile_size: Optional[int]) -> int:
    """Cells per tile side: ``tile_size``, or the largest for ``grid`` (``tile_cells``). Raises InputError."""
    largest = tile_cells(grid.cell_px)
    if tile_size is None:
        return largest
    if not 1 <= tile_size <= largest:
        raise InputError(f"A tile of {tile_size} × {tile_size} cells is not possible at {grid.resolution:g} m: "
                         f"give 1 to {largest} cells (its Sentinel-2 window must stay within {TILE_PX} pixels).")
    return int(tile_size)


@dataclass
class _Plan:
    """A run opened and planned (``_plan``): the Sentinel-2 raster ``ds`` and its own mask band, the job, the tiles,
    and the summary's ``processing_level``."""

    ds: gdal.Dataset
    mask_band: Optional[gdal.Band]
    job: TileJob
    tiles: list[Tile]
    levels: dict[str, Any]

    @property
    def cells(self) -> int:
        """Cells of the output grid."""
        return self.job.grid.rows * self.job.grid.cols


@dataclass
class _Fusion:
    """The VHR stream of an in-process run and its fusion weight α (P = α·P_S2 + (1−α)·P_VHR)."""

    stream: VHRStream
    alpha: float
    cost: FusionCost


@dataclass
class _Tally:
    """What the written tiles add up to: cells per code 0–17, cells masked for cloud, fused cells."""

    counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(legend.CODES) + 1, dtype=np.int64))
    cloud_cells: int = 0
    fused_cells: int = 0

    def add(self, result: TileResult) -> None:
        self.counts += np.bincount(result.codes.ravel(), minlength=len(self.counts))
        self.cloud_cells += result.cloud_cells
        self.fused_cells += int((result.source == SOURCE_FUSED).sum()) if result.source is not None else 0


def classify(sentinel2_path: PathLike, output_path: PathLike, model: Union[LoadedModel, ModelCard],
             settings: ClassifySettings = ClassifySettings(), *, bounds: Optional[tuple[float, ...]] = None,
             probabilities_path: Optional[PathLike] = None, source_path: Optional[PathLike] = None,
             vhr_path: Optional[PathLike] = None, feedback: Optional[Feedback] = None,
             executor: Optional[TileExecutor] = None, stac_plan: Optional[FetchPlan] = None) -> dict[str, Any]:
    """Classify LCZ over ``bounds`` and write the styled LCZ GeoTIFF (and optionally probabilities).

    With ``vhr_path`` and a model that has a ``vhr`` stream, each cell's patch footprint also goes through SAM,
    the object graph and the GCN, and the two streams are fused (``fusion.fuse``, α from the card); cells
    without VHR coverage or without objects keep the Sentinel-2 result. ``source_path``: optional Byte GeoTIFF
    saying per cell which streams decided (0 no data, 1 Sentinel-2 only, 2 fused). Object graphs come from the
    graph cache when they are there (``settings.vhr_source_id``: the imagery's identity in the cache key, default
    its file); the summary counts SAM runs and cache hits.

    sentinel2_path: 10-band stack (B2…B12, So2Sat order, DN on the 0–10000 scale), projected CRS in metres; a
    GeoTIFF or a VRT mosaic of several stacks (gdalbuildvrt).
    output_path: LCZ GeoTIFF, uint8 codes 1–17, 0 where the patch holds no data; a ``.qml`` sidecar is written.
    model: a ``registry.LoadedModel``, or a ``registry.ModelCard`` (loaded only when needed: with OpenVINO and
    no VHR stream, no PyTorch). settings: how (``settings.ClassifySettings``: resolution in metres, device,
    back-end, batch size, tile size, MAX_CLOUD, TTA, palette, SAM). bounds: (xmin, ymin, xmax, ymax) in the
    raster CRS, or None (the whole raster).
    probabilities_path: optional 18-band uint8 GeoTIFF in percent (nodata 255): P(LCZ k) in bands 1–17, the
    winning class's in band 18; with a ``.qml`` showing band 18.
    executor: None to compute the tiles here, one after another; or a ``TileExecutor``, such as
    ``dask_tiles.DaskTiles`` (Sentinel-2 stream only: no VHR, no source raster).
    stac_plan: the ``fetch.FetchPlan`` the Sentinel-2 raster comes from (``classify --stac``), named in the map's
    metadata; with an ``executor``, ``sentinel2_path`` is the plan's ``fetch.grid_template`` and each task fetches
    its tile's part of the plan (no central stack).
    A stack whose Sentinel-2 processing level (its ``PROCESSING_LEVEL`` metadata) differs from the one the model
    was trained on (the card's ``streams.sentinel2.processing_level``) is classified with a warning
    (``check_level``).
    Returns a summary dict (cells, area per class in km², cells masked for cloud, device, cells/s, seconds,
    fused cells, tiles, the stack's and the model's processing level and the warning about them).
    Raises InputError, grid.GridError, vhr.VHRError, sam.SAMError, feedback.Canceled, and what ``executor``
    raises (``dask_tiles.TileError``); no output file is left behind on any error.
    """
    feedback = feedback or Feedback()
    if executor is not None and (vhr_path or source_path):
        raise InputError("VHR fusion and the decision-source raster run in-process only; classify without a "
                         "cluster to use them.")
    started = time.perf_counter()
    card = model.card if isinstance(model, LoadedModel) else model
    plan = _plan(sentinel2_path, card, settings, bounds, bool(probabilities_path),
                 stac_plan.light() if executor is not None and stac_plan is not None else None, feedback)
    results: Iterable[tuple[Tile, TileResult]]
    if executor is None:
        results, engine, fusion = _compute_here(plan, model, card, vhr_path, feedback)
        extra: dict[str, Any] = {}
    else:
        results, engine, extra = _compute_on(executor, plan, card, feedback)
        fusion = None
    metadata = {"DF4LCZ_MODEL": card.id, "DF4LCZ_SOURCE": _source_name(sentinel2_path, stac_plan),
                "DF4LCZ_DEVICE": settings.device, "DF4LCZ_BACKEND": engine}
    writing = executor.writing(plan.job) if executor is not None else contextlib.nullcontext()
    with _capped_gdal_cache(), writing, open_map(plan.job.grid, plan.job.projection, metadata, output_path,
                                                 settings.palette, probabilities_path, source_path) as writer:
        tally = _write_tiles(writer, results, plan.cells)
    _cloud_warning(tally, plan.cells, feedback)
    summary = _summary(plan, card, tally, fusion, engine, extra, time.perf_counter() - started)
    feedback.info("Summary: " + json.dumps(summary))
    return summary


def _plan(sentinel2_path: PathLike, card: ModelCard, settings: ClassifySettings, bounds: Optional[tuple[float, ...]],
          probabilities: bool, stac: Optional[FetchPlan], feedback: Feedback) -> _Plan:
    """Open the Sentinel-2 raster and plan the run: grid, tiles, the job of every tile. Raises InputError,
    grid.GridError."""
    stream = card.stream("sentinel2")
    ds = open_sentinel2(sentinel2_path, float(stream.get("pixel_size_m", 10)))
    levels = check_level(sentinel2_path, card, feedback)
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), bounds, settings.resolution)
    tiles = list(iter_tiles(grid, _tile_size(grid, settings.tile_size)))
    top, left = grid.patch_origin(0, 0)
    zero_is_nodata = check_values(ds, (top, left, (grid.rows - 1) * grid.cell_px + PATCH_PX,
                                       (grid.cols - 1) * grid.cell_px + PATCH_PX), feedback)
    job = TileJob(str(sentinel2_path), ds.GetProjection(), grid, str(card.path), settings,
                  float(stream["input_scaling"]["divide_by"]),
                  tuple(ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)), zero_is_nodata,
                  probabilities, stac)
    mask_band = own_mask_band(ds)
    if mask_band is not None:
        feedback.info(f"The stack's mask band (clouds, shadows) is honoured: a cell whose 320 m patch has more than "
                      f"{settings.max_cloud:g} % ({settings.max_masked_px} px) masked is no data.")
    return _Plan(ds, mask_band, job, tiles, levels)


def _grid_text(plan: _Plan) -> str:
    grid = plan.job.grid
    return f"{grid.rows} × {grid.cols} cells of {grid.resolution:g} m in {len(plan.tiles)} tile(s)"


def _compute_here(plan: _Plan, model: Union[LoadedModel, ModelCard], card: ModelCard, vhr_path: Optional[PathLike],
                  feedback: Feedback) -> tuple[Iterator[tuple[Tile, TileResult]], str, Optional[_Fusion]]:
    """(the tiles computed here, lazily; the back-end; the VHR fusion, None without VHR stream)."""
    settings = plan.job.settings
    runner, engine = sentinel2_runner(model, settings.backend, settings.device, settings.precision, settings.threads,
                                      settings.tta)
    fusion = None
    if vhr_path and "vhr" in card.streams:
        fusion = _open_fusion(plan, model, card, vhr_path, feedback)
    feedback.info(f"{_grid_text(plan)}, {engine}, model {card.id}")
    return _in_process(plan, runner, fusion, feedback), engine, fusion


def _compute_on(executor: TileExecutor, plan: _Plan, card: ModelCard,
                feedback: Feedback) -> tuple[Iterable[tuple[Tile, TileResult]], str, dict[str, Any]]:
    """(the tiles computed by ``executor``, the back-ends it used, its summary keys)."""
    feedback.info(f"{_grid_text(plan)}, model {card.id}")
    results = executor(plan.job, plan.tiles, feedback)  # DaskTiles: every tile is computed before the map is written
    return results, "; ".join(executor.engines), executor.summary


def _open_fusion(plan: _Plan, model: Union[LoadedModel, ModelCard], card: ModelCard, vhr_path: PathLike,
                 feedback: Feedback) -> _Fusion:
    """The VHR stream of ``model`` over the grid of ``plan``, α from the card, and its cost estimate."""
    settings, grid = plan.job.settings, plan.job.grid
    loaded = model if isinstance(model, LoadedModel) else load_model(card.path, settings.device)
    stream = VHRStream(loaded, vhr_path, plan.job.projection, grid.bounds(), settings.device, settings.sam_checkpoint,
                       settings.vhr_source_id, settings.fast_sam)
    alpha = float(card.data["fusion"]["alpha"])
    feedback.info(f"Fusing with the VHR stream, alpha = {alpha}")
    cost = FusionCost(stream.graphs, [grid.patch_bounds(r, c) for r in range(grid.rows) for c in range(grid.cols)],
                      grid.resolution, feedback)
    return _Fusion(stream, alpha, cost)


@contextlib.contextmanager
def _capped_gdal_cache() -> Iterator[None]:
    """GDAL's block cache capped at ``GDAL_CACHE_BYTES`` within the block, then restored."""
    cache = gdal.GetCacheMax()
    gdal.SetCacheMax(GDAL_CACHE_BYTES)
    try:
        yield
    finally:
        gdal.SetCacheMax(cache)


def _write_tiles(writer: MapWriter, results: Iterable[tuple[Tile, TileResult]], cells: int) -> _Tally:
    """Write each (tile, TileResult) with ``writer`` and add them up. Raises InputError when every one of the
    ``cells`` is no data (the caller then writes no map)."""
    tally = _Tally()
    for tile, result in results:
        writer.write(tile, result)
        tally.add(result)
    if tally.counts[legend.NODATA] == cells:
        if tally.cloud_cells:
            raise InputError(f"Every cell of the extent is no data, {tally.cloud_cells} of them under the stack's "
                             "cloud and shadow mask; build a cloud-free composite of several dates "
                             "('Build cloud-free Sentinel-2 composite') or choose a clearer scene.")
        raise InputError("The Sentinel-2 raster holds no data in the extent (every 320 m patch has no-data "
                         "pixels); choose an extent over valid imagery.")
    return tally


def _cloud_warning(tally: _Tally, cells: int, feedback: Feedback) -> None:
    """Suggest a composite when more than ``CLOUD_WARNING_SHARE`` of the ``cells`` were masked for cloud."""
    if tally.cloud_cells > CLOUD_WARNING_SHARE * cells:
        feedback.warning(f"{100 * tally.cloud_cells / cells:.0f} % of the cells are no data under the stack's cloud "
                         "and shadow mask. Build a cloud-free composite of several dates ('Build cloud-free "
                         "Sentinel-2 composite', df4lcz:sentinel2composite) and classify that instead.")


def _summary(plan: _Plan, card: ModelCard, tally: _Tally, fusion: Optional[_Fusion], engine: str,
             extra: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The run's summary (``classify``'s return value); areas in km², ``seconds`` of wall time."""
    grid, total = plan.job.grid, plan.cells
    cell_km2 = grid.resolution ** 2 / 1e6
    return {
        "cells": total,
        "classified_cells": int(total - tally.counts[legend.NODATA]),
        "resolution_m": grid.resolution,
        "area_km2": {legend.label(code): round(float(tally.counts[code] * cell_km2), 4)
                     for code in legend.CODES if tally.counts[code]},
        "cloud_masked_cells": tally.cloud_cells,
        "fused_cells": tally.fused_cells,
        "sam_runs": fusion.stream.graphs.sam_runs if fusion else 0,
        "graph_cache_hits": fusion.stream.graphs.cache_hits if fusion else 0,
        "device": plan.job.settings.device,
        "backend": engine,
        "model": card.id,
        "processing_level": plan.levels,
        "tiles": len(plan.tiles),
        "seconds": round(seconds, 3),
        # Cells computed in this run: a resumed Dask run does not count the tiles it found done.
        "cells_per_second": round(extra.get("computed_cells", total) / seconds, 1),
        **extra,
    }


def _source_name(sentinel2_path: PathLike, stac_plan: Optional[FetchPlan]) -> str:
    """The map's ``DF4LCZ_SOURCE``: the stack's path, or the STAC API, collection and dates it was fetched from."""
    if stac_plan is None:
        return str(sentinel2_path)
    api = stac_plan.request.api
    return f"STAC {api.url} {api.collection} {stac_plan.metadata['DATES']}"


def check_level(sentinel2_path: PathLike, card: ModelCard, feedback: Feedback) -> dict[str, Any]:
    """Compare the stack's Sentinel-2 processing level with the one ``card``'s model was trained on; warn through
    ``feedback`` when they differ (``processing_level.level_warning``). Returns the summary's
    ``processing_level``: {"stack": level, "model": level, "warning": the warning or None}."""
    stack, model = stack_level(str(sentinel2_path)), card_level(card.stream("sentinel2"))
    warning = level_warning(stack, model, card.id)
    if warning:
        feedback.warning(warning)
    return {"stack": stack, "model": model, "warning": warning}


def _in_process(plan: _Plan, runner: Runner, fusion: Optional[_Fusion],
                feedback: Feedback) -> Iterator[tuple[Tile, TileResult]]:
    """(tile, TileResult) of each tile computed here in turn, with progress per batch and a line per tile, VHR
    fusion with ``fusion``, and cancel between batches."""
    job, total = plan.job, plan.cells
    clock = TileClock(feedback, len(plan.tiles), total)
    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        feedback.progress(done[0] / total)
        feedback.check_canceled()

    for tile in plan.tiles:
        feedback.check_canceled()
        probs, masked = compute_tile(job, plan.ds, runner, tile, plan.mask_band, on_batch)
        missing = np.isnan(probs[0])
        source = np.where(missing, SOURCE_NODATA, SOURCE_S2).astype(np.uint8)
        if fusion is not None:
            _fuse_tile(job.grid, tile, probs, source, fusion, feedback)
        done[0] += int(missing.sum())
        yield tile, tile_result(probs, masked, job.probabilities, source)
        clock.tile_done(tile[2] * tile[3])


def _fuse_tile(grid: OutputGrid, tile: Tile, probs: npt.NDArray[np.float32], source: npt.NDArray[np.uint8],
               fusion: _Fusion, feedback: Feedback) -> None:
    """Fuse the VHR stream into ``probs`` (17, rows, cols) in place, in chunks with cancel between them, and mark
    fused cells in ``source`` (rows, cols)."""
    cells = list(zip(*np.nonzero(~np.isnan(probs[0]))))
    for start in range(0, len(cells), CHUNK_CELLS):
        feedback.check_canceled()
        chunk = cells[start:start + CHUNK_CELLS]
        footprints = [grid.patch_bounds(tile[0] + r, tile[1] + c) for r, c in chunk]
        for (r, c), p_vhr in zip(chunk, fusion.stream.probabilities(footprints, fusion.cost.sam_done)):
            if p_vhr is not None:
                probs[:, r, c] = fuse(probs[:, r, c], p_vhr, fusion.alpha)
                source[r, c] = SOURCE_FUSED
