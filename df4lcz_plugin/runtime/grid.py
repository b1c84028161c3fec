"""The LCZ output grid over a Sentinel-2 raster, and the 32×32-pixel (320 m) patch centred on each cell.

The grid is aligned to the raster's pixel grid: cells are ``RESOLUTION`` metres (a whole number of pixels),
and each cell's patch is the 32×32 pixels around the cell centre (for an odd number of pixels per cell, the
patch sits half a pixel up-left of the centre). Units are those of the raster CRS, which must be projected
(metres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, cast

PATCH_PX = 32

#: A GDAL geotransform: (x0, pixel width, row rotation, y0, column rotation, pixel height (negative north-up)).
GeoTransform = tuple[float, float, float, float, float, float]
#: (xmin, ymin, xmax, ymax) in the raster CRS.
Bounds = tuple[float, float, float, float]


class GridError(ValueError):
    """The extent or resolution cannot define an LCZ grid on this raster."""


@dataclass(frozen=True)
class OutputGrid:
    """``rows × cols`` cells of ``cell_px`` raster pixels; ``row0_px, col0_px``: raster pixel of the top-left corner."""

    row0_px: int
    col0_px: int
    rows: int
    cols: int
    cell_px: int
    raster_geotransform: GeoTransform

    @property
    def resolution(self) -> float:
        return self.cell_px * self.raster_geotransform[1]

    @property
    def geotransform(self) -> GeoTransform:
        """GDAL geotransform of the output raster (same CRS as the Sentinel-2 raster)."""
        x0, px, _, y0, _, py = self.raster_geotransform
        return (x0 + self.col0_px * px, self.cell_px * px, 0.0, y0 + self.row0_px * py, 0.0, self.cell_px * py)

    def bounds(self, row: int = 0, col: int = 0, rows: Optional[int] = None, cols: Optional[int] = None) -> Bounds:
        """(xmin, ymin, xmax, ymax) in the raster CRS of the ``rows × cols`` cells from cell (row, col); by default
        the whole grid."""
        x0, size, _, y0, _, neg = self.geotransform
        height = self.rows - row if rows is None else rows
        width = self.cols - col if cols is None else cols
        return x0 + col * size, y0 + (row + height) * neg, x0 + (col + width) * size, y0 + row * neg

    def patch_bounds(self, row: int, col: int) -> Bounds:
        """(xmin, ymin, xmax, ymax) in the raster CRS of cell (row, col)'s patch footprint (320 m square)."""
        return patch_footprint(self.raster_geotransform, *self.patch_origin(row, col))

    def patch_origin(self, row: int, col: int) -> tuple[int, int]:
        """Raster pixel (row, col) of the top-left corner of cell (row, col)'s 32×32 patch."""
        half = self.cell_px // 2 - PATCH_PX // 2
        return self.row0_px + row * self.cell_px + half, self.col0_px + col * self.cell_px + half


def patch_footprint(geotransform: GeoTransform, top: int, left: int, patch_px: int = PATCH_PX) -> Bounds:
    """(xmin, ymin, xmax, ymax) of the ``patch_px`` square whose top-left raster pixel is (top, left)."""
    x0, px, _, y0, _, py = geotransform
    return (x0 + left * px, y0 + (top + patch_px) * py, x0 + (left + patch_px) * px, y0 + top * py)


def make_grid(geotransform: Sequence[float], raster_size: tuple[int, int], bounds: Optional[Sequence[float]] = None,
              resolution: float = 100.0, patch_px: int = PATCH_PX) -> OutputGrid:
    """The output grid covering ``bounds`` ∩ raster.

    geotransform: GDAL geotransform of the Sentinel-2 raster (north-up, square pixels, metres).
    raster_size: (width, height) in pixels. bounds: (xmin, ymin, xmax, ymax) in the raster CRS, or None for
    the whole raster. resolution: cell size in metres, a whole multiple of the pixel size.
    Raises GridError when the raster is rotated, the resolution is not a multiple of the pixel size, the
    extent does not overlap the raster, or the overlap is smaller than one patch.
    """
    x0, px, rot1, y0, rot2, py = geotransform
    if rot1 or rot2 or py >= 0 or abs(px + py) > 1e-9 * abs(px):
        raise GridError("The Sentinel-2 raster must be north-up with square pixels; warp it first.")
    width, height = raster_size
    raster_bounds = (x0, y0 + py * height, x0 + px * width, y0)
    bounds = raster_bounds if bounds is None else bounds
    cell_px = _cell_px(resolution, px)
    xmin, ymin, xmax, ymax = _overlap(bounds, raster_bounds)
    _check_overlap_size(xmax - xmin, ymax - ymin, resolution, px, patch_px)
    col0 = int(math.floor((xmin - x0) / px + 1e-9))
    row0 = int(math.floor((y0 - ymax) / -py + 1e-9))
    cols = int(math.ceil(((xmax - x0) / px - col0) / cell_px - 1e-9))
    rows = int(math.ceil(((y0 - ymin) / -py - row0) / cell_px - 1e-9))
    return OutputGrid(row0, col0, rows, cols, cell_px, cast(GeoTransform, tuple(geotransform)))


def _cell_px(resolution: float, px: float) -> int:
    """Raster pixels per cell side for a cell of ``resolution`` m on pixels of ``px`` m; raises GridError when
    ``resolution`` is not a positive whole multiple of ``px``."""
    if not math.isfinite(resolution) or resolution <= 0:
        raise GridError(f"RESOLUTION {resolution} is not a positive number of metres; use e.g. 100.")
    cell_px = resolution / px
    if abs(cell_px - round(cell_px)) > 1e-6:
        raise GridError(f"RESOLUTION {resolution:g} m is not a whole multiple of the {px:g} m Sentinel-2 pixel; "
                        f"use e.g. {round(max(cell_px, 1)) * px:g} m.")
    return int(round(cell_px))


def _overlap(bounds: Sequence[float], raster_bounds: Bounds) -> Bounds:
    """(xmin, ymin, xmax, ymax) of ``bounds`` ∩ ``raster_bounds``; raises GridError when they do not overlap."""
    xmin, ymin = max(bounds[0], raster_bounds[0]), max(bounds[1], raster_bounds[1])
    xmax, ymax = min(bounds[2], raster_bounds[2]), min(bounds[3], raster_bounds[3])
    if xmin >= xmax or ymin >= ymax:
        raise GridError(f"The extent {tuple(round(v, 2) for v in bounds)} does not overlap the Sentinel-2 raster "
                        f"{tuple(round(v, 2) for v in raster_bounds)} (in the raster's CRS).")
    return xmin, ymin, xmax, ymax


def _check_overlap_size(width_m: float, height_m: float, resolution: float, px: float, patch_px: int) -> None:
    """Raise GridError when the overlap (``width_m`` × ``height_m``) is smaller than one patch of ``patch_px``
    pixels of ``px`` m, or than one cell of ``resolution`` m."""
    patch_m = patch_px * px
    if width_m < patch_m or height_m < patch_m:
        raise GridError(f"The extent covers {width_m:.0f} m × {height_m:.0f} m of the raster, smaller than "
                        f"one {patch_m:.0f} m patch; draw an extent of at least {patch_m:.0f} m × {patch_m:.0f} m.")
    if resolution > min(width_m, height_m):
        raise GridError(f"RESOLUTION {resolution:g} m is larger than the extent's overlap with the raster "
                        f"({width_m:.0f} m × {height_m:.0f} m): each output cell is classified from the "
                        f"{patch_m:.0f} m patch at its centre, so one cell would cover the whole extent. Use a "
                        f"resolution of at most {math.floor(min(width_m, height_m) / px) * px:g} m "
                        "(LCZ maps usually use 100 m).")
