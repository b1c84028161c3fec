"""Classify several Sentinel-2 stacks of one place (dates, seasonal composites) and average their LCZ probabilities.

``DatesAverage`` is an executor of ``classify.classify``: the first stack is classify's own (its grid is the map's);
each tile is computed on every stack (``classify.compute_tile``), and a cell's probabilities are the mean over the
stacks that classified it (``numpy.nanmean``): a stack with no data or a masked patch there does not count. The
optional agreement raster says, per cell, the share of those stacks whose own winner is the final winner.

The stacks must share the first's CRS, pixel size and pixel grid (their extents may differ): the same 32×32 patch
is then read from each, with no resampling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from .classify import Runner, Tile, TileJob, TileResult, check_level, compute_tile, tile_result
from ..runtime.feedback import Feedback, TileClock
from ..runtime.grid import PATCH_PX
from ..models.backends import sentinel2_runner
from ..models.registry import LoadedModel, ModelCard
from ..runtime.outputs import atomic_output
from ..sentinel2.checks import InputError, check_values, open_sentinel2, own_mask_band

gdal.UseExceptions()

#: Agreement raster value of a cell that no stack classified (0 % is a real value: the mean's winner may be no
#: stack's own winner).
AGREEMENT_NODATA = 255
#: Largest misalignment of two stacks' pixel grids, as a share of a pixel, still taken as the same grid.
GRID_TOLERANCE = 1e-3
_FIX = ("Warp it onto the first stack's grid (gdalwarp -t_srs <its CRS> -tr 10 10 -tap, or -te on the first's "
        "corners), or build one cloud-free composite of the dates ('Build cloud-free Sentinel-2 composite').")


@dataclasses.dataclass
class _Stack:
    """One date: its job (grid shifted to its pixels, its nodata), open raster and mask band."""

    job: TileJob
    ds: gdal.Dataset
    mask: Optional[gdal.Band]


def _pixel_offset(first_gt: Sequence[float], gt: Sequence[float], path: str) -> tuple[int, int]:
    """(rows, cols) to add to a pixel of the first stack to get the same pixel of the stack of geotransform ``gt``.
    Raises InputError when the pixel sizes or the grids' alignment differ."""
    if any(abs(gt[i] - first_gt[i]) > GRID_TOLERANCE * abs(first_gt[1]) for i in (1, 2, 4, 5)):
        raise InputError(f"The Sentinel-2 stack {path} has {gt[1]:g} × {abs(gt[5]):g} m pixels, the first stack "
                         f"{first_gt[1]:g} × {abs(first_gt[5]):g} m. {_FIX}")
    cols, rows = (first_gt[0] - gt[0]) / gt[1], (first_gt[3] - gt[3]) / gt[5]
    if max(abs(cols - round(cols)), abs(rows - round(rows))) > GRID_TOLERANCE:
        raise InputError(f"The Sentinel-2 stack {path} is not on the first stack's pixel grid: its pixels are "
                         f"shifted by {abs(cols - round(cols)) * gt[1]:.3g} m in x and "
                         f"{abs(rows - round(rows)) * abs(gt[5]):.3g} m in y. {_FIX}")
    return round(rows), round(cols)


def _same_files(paths: list[str]) -> None:
    """Refuse a stack given twice (the same file under two names too)."""
    for i, a in enumerate(paths):
        for b in paths[i + 1:]:
            if os.path.realpath(a) == os.path.realpath(b) or os.path.samefile(a, b):
                raise InputError(f"The Sentinel-2 stack {b} is given twice; give each date once.")


class DatesAverage:
    """A ``classify`` executor averaging the class probabilities of several stacks of the same grid.

    paths: the other stacks (the first is classify's ``sentinel2_path``), 10-band stacks as classify takes them.
    model: the ``registry.ModelCard`` or ``LoadedModel`` of the run; back-end, device, precision and TTA are the
    job's settings (``settings.ClassifySettings``).
    agreement_path: optional uint8 GeoTIFF, the map's grid: per cell, the percentage (0–100) of the stacks with
    data there whose own winner (argmax of their probabilities) is the map's class; ``AGREEMENT_NODATA`` where no
    stack classified the cell. It is written under a temporary name as the tiles go, and put in place only once
    ``classify`` has written the map (``writing``): on any error it is removed and a file the user had is kept.
    After the call, ``engines`` holds the back-end used and ``summary`` the number of dates and the cells per
    number of dates with data (``cells_by_dates``, filled as the tiles are computed).
    """

    def __init__(self, paths: Sequence[Union[str, Path]], model: Union[ModelCard, LoadedModel],
                 agreement_path: Optional[Union[str, Path]] = None) -> None:
        self.paths = [str(path) for path in paths]
        self.model = model
        self.agreement_path = agreement_path
        self.engines: list[str] = []
        self.summary: dict[str, Any] = {}
        self._agreement: Optional[_AgreementWriter] = None

    def _open(self, job: TileJob, feedback: Feedback) -> list[_Stack]:
        """The stacks of the run, the first being ``job``'s. Raises InputError on a stack that is not usable or not
        on the first's grid."""
        card = self.model.card if isinstance(self.model, LoadedModel) else self.model
        pixel = float(card.stream("sentinel2").get("pixel_size_m", 10))
        first = open_sentinel2(job.sentinel2_path, pixel)
        stacks = [_Stack(job, first, own_mask_band(first))]
        for path in self.paths:
            ds = open_sentinel2(path, pixel)
            if not ds.GetSpatialRef().IsSame(first.GetSpatialRef()):
                raise InputError(f"The Sentinel-2 stack {path} is in {ds.GetSpatialRef().GetName()}, the first stack "
                                 f"in {first.GetSpatialRef().GetName()}. {_FIX}")
            rows, cols = _pixel_offset(first.GetGeoTransform(), ds.GetGeoTransform(), path)
            grid = dataclasses.replace(job.grid, row0_px=job.grid.row0_px + rows, col0_px=job.grid.col0_px + cols)
            top, left = grid.patch_origin(0, 0)
            window = (top, left, (grid.rows - 1) * grid.cell_px + PATCH_PX, (grid.cols - 1) * grid.cell_px + PATCH_PX)
            if top >= ds.RasterYSize or left >= ds.RasterXSize or top + window[2] <= 0 or left + window[3] <= 0:
                raise InputError(f"The Sentinel-2 stack {path} does not overlap the first stack within the extent: it "
                                 "would add nothing to any cell. Give stacks of the same place (dates or seasons).")
            nodata = tuple(ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount))
            date_job = dataclasses.replace(job, sentinel2_path=path, grid=grid, nodata_values=nodata,
                                           zero_is_nodata=check_values(ds, window, feedback))
            check_level(path, card, feedback)
            stacks.append(_Stack(date_job, ds, own_mask_band(ds)))
        _same_files([job.sentinel2_path] + self.paths)  # after opening them: they exist
        return stacks

    def __call__(self, job: TileJob, tiles: list[Tile], feedback: Feedback) -> Iterator[tuple[Tile, TileResult]]:
        """(tile, TileResult) of each of ``tiles`` in turn (a generator, run within ``writing``, which writes the
        agreement raster). Raises InputError before any tile is computed."""
        stacks = self._open(job, feedback)
        settings = job.settings
        runner, engine = sentinel2_runner(self.model, settings.backend, settings.device, settings.precision,
                                          settings.threads, settings.tta)
        self.engines = [engine]
        self.summary = {"dates": len(stacks), "cells_by_dates": {str(n): 0 for n in range(len(stacks) + 1)}}
        names = ", ".join(stack.job.sentinel2_path for stack in stacks)
        feedback.info(f"Averaging the probabilities of {len(stacks)} dates: {names}")
        return self._tiles(job, stacks, runner, tiles, feedback)

    @contextlib.contextmanager
    def writing(self, job: TileJob) -> Iterator[None]:
        """The agreement raster (with ``agreement_path``) under a temporary name while ``classify`` writes the map;
        renamed into place when the block ends without error, that is once the map is in place; removed on any
        error."""
        with _agreement_raster(self.agreement_path, job) as agreement:
            self._agreement = agreement
            try:
                yield
            finally:
                self._agreement = None

    def _tiles(self, job: TileJob, stacks: list[_Stack], runner: Runner, tiles: list[Tile],
               feedback: Feedback) -> Iterator[tuple[Tile, TileResult]]:
        """The tiles of ``__call__``, each averaged over ``stacks``, its agreement written as it goes."""
        total = job.grid.rows * job.grid.cols
        clock = TileClock(feedback, len(tiles), total)
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            feedback.progress(done[0] / (total * len(stacks)))
            feedback.check_canceled()

        for tile in tiles:
            feedback.check_canceled()
            dates = [compute_tile(stack.job, stack.ds, runner, tile, stack.mask, on_batch) for stack in stacks]
            probs, counts, share = average_dates(np.stack([p for p, _ in dates]))
            masked = np.any([m for _, m in dates], axis=0) & (counts == 0)
            for n, cells in enumerate(np.bincount(counts.ravel(), minlength=len(stacks) + 1)):
                self.summary["cells_by_dates"][str(n)] += int(cells)
            if self._agreement is not None:
                self._agreement.write(tile, share)
            yield tile, tile_result(probs, masked, job.probabilities)
            clock.tile_done(tile[2] * tile[3])


def average_dates(probs: npt.NDArray[np.float32]
                  ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int_], npt.NDArray[np.uint8]]:
    """Average the class probabilities of several dates.

    probs: float32 (dates, 17, rows, cols), NaN where a date did not classify the cell.
    Returns float32 (17, rows, cols) mean over the dates with data (NaN where none has), int (rows, cols) number
    of dates with data, and uint8 (rows, cols) agreement: round(100 × dates whose argmax is the mean's argmax /
    dates with data), ``AGREEMENT_NODATA`` where no date has data. Ties go to the lowest class, as in
    ``classify.tile_result``.
    """
    has = ~np.isnan(probs[:, 0])
    counts = has.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": all-NaN cells stay NaN
        mean = np.nanmean(probs, axis=0).astype(np.float32)
    winner = np.nan_to_num(mean).argmax(axis=0)
    agree = (has & (np.nan_to_num(probs).argmax(axis=1) == winner)).sum(axis=0)
    share = np.full(counts.shape, AGREEMENT_NODATA, dtype=np.uint8)
    share[counts > 0] = np.round(100 * agree[counts > 0] / counts[counts > 0])
    return mean, counts, share


class _AgreementWriter:
    """The agreement raster under a temporary name: uint8 GeoTIFF on the map's grid, nodata ``AGREEMENT_NODATA``."""

    def __init__(self, path: str, job: TileJob) -> None:
        grid = job.grid
        self.ds = gdal.GetDriverByName("GTiff").Create(path, grid.cols, grid.rows, 1, gdal.GDT_Byte,
                                                       ["COMPRESS=DEFLATE", "TILED=YES"])
        self.ds.SetGeoTransform(grid.geotransform)
        self.ds.SetProjection(job.projection)
        band = self.ds.GetRasterBand(1)
        band.SetNoDataValue(AGREEMENT_NODATA)
        band.SetDescription("Agreement of the dates with the map's class (%)")
        band.Fill(AGREEMENT_NODATA)

    def write(self, tile: Tile, share: npt.NDArray[np.uint8]) -> None:
        """Write uint8 (rows, cols) ``share`` at ``tile`` (row, col, rows, cols)."""
        self.ds.GetRasterBand(1).WriteArray(share, tile[1], tile[0])

    def close(self) -> None:
        """Close the file (GDAL writes it out)."""
        self.ds = None


@contextlib.contextmanager
def _agreement_raster(path: Optional[Union[str, Path]], job: TileJob) -> Iterator[Optional[_AgreementWriter]]:
    """An ``_AgreementWriter`` whose file is renamed to ``path`` when the block ends without error (removed on any
    error); None without ``path``."""
    if not path:
        yield None
        return
    with atomic_output(path) as tmp:
        writer = _AgreementWriter(tmp, job)
        try:
            yield writer
        finally:
            writer.close()  # closed before the rename or the removal
