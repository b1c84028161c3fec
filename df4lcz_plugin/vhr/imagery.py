"""High-resolution (VHR) imagery for the DF4LCZ object stream: checks, and the RGB patch on a given footprint.

A patch is the footprint (320 m × 320 m, in the Sentinel-2 CRS) resampled by GDAL to 320 × 320 px (1 m), bands
1–3 as R, G, B. Byte imagery is used as is; other types are stretched linearly from each band's 2nd to 98th
percentile to 0–255 (QGIS's default cumulative cut), so that a few saturated pixels do not darken the image.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from osgeo import gdal, osr

from .sam import PATCH_SIZE_PX

gdal.UseExceptions()

#: (xmin, ymin, xmax, ymax) of a footprint or extent, in the units of its CRS (metres here).
Bounds = tuple[float, float, float, float]

MAX_RESOLUTION_M = 5.0
#: Non-8-bit imagery is stretched linearly between these percentiles of each band to 0–255.
STRETCH_PERCENTILES = (2.0, 98.0)
#: A patch with less VHR coverage than this has no VHR vote (its Sentinel-2 stream decides).
MIN_COVERAGE = 0.9


class VHRError(ValueError):
    """The high-resolution raster cannot be used."""


def pixel_size_m(ds: gdal.Dataset) -> float:
    """Approximate pixel size in metres (the mean of x and y; geographic CRSs converted at the raster's centre)."""
    gt = ds.GetGeoTransform()
    size = (abs(gt[1]) + abs(gt[5])) / 2
    srs = ds.GetSpatialRef()
    if srs is not None and srs.IsGeographic():
        lat = gt[3] + gt[5] * ds.RasterYSize / 2
        size *= 111_320 * math.cos(math.radians(lat))
    elif srs is not None:
        size *= srs.GetLinearUnits()
    return size


@dataclass
class VHRSource:
    """An opened, checked VHR raster (an RGB view of bands 1–3) and its per-band stretch."""

    dataset: gdal.Dataset
    rgb_view: gdal.Dataset
    stretch: list[tuple[float, float]]
    resolution_m: float


def open_vhr(path: Path | str) -> VHRSource:
    """Open and check a VHR raster: at least 3 bands, pixels of at most 5 m, a CRS.

    Raises VHRError naming the problem (band count, resolution, CRS) and the fix.
    """
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as error:
        raise VHRError(f"Cannot open the VHR raster {path}: {error}") from None
    if ds.RasterCount < 3:
        raise VHRError(f"The VHR raster has {ds.RasterCount} band(s); the object stream needs RGB imagery "
                       "(bands 1, 2, 3 = red, green, blue).")
    if ds.GetSpatialRef() is None:
        raise VHRError("The VHR raster has no CRS; assign one (Raster ▸ Projections ▸ Assign Projection).")
    resolution = pixel_size_m(ds)
    if resolution > MAX_RESOLUTION_M:
        raise VHRError(f"The VHR raster's pixels are {resolution:.1f} m; the object stream needs high-resolution "
                       f"imagery of at most {MAX_RESOLUTION_M:g} m (the paper used 1 m).")
    rgb = gdal.Translate("", ds, format="VRT", bandList=[1, 2, 3])
    stretch = [(0.0, 255.0) if ds.GetRasterBand(i).DataType == gdal.GDT_Byte else percentile_stretch(ds.GetRasterBand(i))
               for i in range(1, 4)]
    return VHRSource(ds, rgb, stretch, resolution)


def percentile_stretch(band: gdal.Band, low: float = STRETCH_PERCENTILES[0],
                       high: float = STRETCH_PERCENTILES[1]) -> tuple[float, float]:
    """(low, high) values of ``band`` at the given percentiles of its valid pixels, read at most 1024 px wide.

    Robust to a few extreme pixels (a 65535 in a 16-bit image), unlike min–max: QGIS's own default contrast
    enhancement is the same 2–98 % cumulative cut.
    """
    factor = max(1.0, band.XSize / 1024, band.YSize / 1024)
    data = band.ReadAsArray(buf_xsize=max(1, int(band.XSize / factor)), buf_ysize=max(1, int(band.YSize / factor)))
    data = data[np.isfinite(data)] if data.dtype.kind == "f" else data.ravel()
    nodata = band.GetNoDataValue()
    if nodata is not None:
        data = data[data != nodata]
    if data.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(data, (low, high))
    return float(lo), float(max(hi, lo + 1e-9))


def read_patch(source: VHRSource, bounds: Bounds, srs_wkt: str) -> tuple[npt.NDArray[np.uint8], float]:
    """The RGB patch on ``bounds`` (xmin, ymin, xmax, ymax in ``srs_wkt``): (uint8 (320, 320, 3), coverage 0–1)."""
    warped = gdal.Warp("", source.rgb_view, format="MEM", outputBounds=bounds, dstSRS=srs_wkt,
                       width=PATCH_SIZE_PX, height=PATCH_SIZE_PX, dstAlpha=True,
                       resampleAlg="average" if source.resolution_m < 1.0 else "bilinear")
    data = warped.ReadAsArray().astype(np.float32)
    alpha = data[3] > 0
    rgb = np.empty((PATCH_SIZE_PX, PATCH_SIZE_PX, 3), np.uint8)
    for index, (low, high) in enumerate(source.stretch):
        rgb[..., index] = np.clip((data[index] - low) / (high - low) * 255.0, 0, 255).round()
    rgb[~alpha] = 0
    return rgb, float(alpha.mean())


def overlaps(source: VHRSource, bounds: Bounds, srs_wkt: str) -> bool:
    """True if the VHR raster's footprint intersects ``bounds`` (in ``srs_wkt``)."""
    ds = source.dataset
    gt = ds.GetGeoTransform()
    xs = [gt[0], gt[0] + gt[1] * ds.RasterXSize]
    ys = [gt[3], gt[3] + gt[5] * ds.RasterYSize]
    target = osr.SpatialReference()
    target.ImportFromWkt(srs_wkt)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs = ds.GetSpatialRef().Clone()
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(srs, target)
    xmin, ymin, xmax, ymax = transform.TransformBounds(min(xs), min(ys), max(xs), max(ys), 21)
    return not (xmax <= bounds[0] or xmin >= bounds[2] or ymax <= bounds[1] or ymin >= bounds[3])
