"""Checks that a Sentinel-2 stack is what the LCZ models were trained on, so that no wrong map comes out silently.

So2Sat LCZ42 patches (Zhu et al. 2020) are 32 × 32 pixels of 10 m ground size, bands B2, B3, B4, B5, B6, B7,
B8, B8A, B11, B12, digital numbers on the 0–10000 reflectance scale (DN = reflectance × 10000). A stack that
breaks one of these is refused with the reason and the fix (``InputError``), or warned about when the evidence is
statistical (band order without descriptions, values above the scale):

- the raster: 10 bands, So2Sat order when band descriptions are set, a projected CRS whose metres are ground
  metres here (not Web Mercator away from the equator), 10 m pixels (``open_sentinel2``);
- its values in the extent (``check_values``, from a sample of the extent's valid pixels): on the 0–10000 scale
  (reflectance 0–1 or percent is refused), negative values (an L2A offset removed without clipping) are clipped
  to 1 as ``stack.build_stack`` does and reported, and a spectral test of the band order:
  on land pixels (those whose darkest band is above 250 DN, whatever the band order), near infrared (B8) is
  brighter than red (B4) for vegetation, soil and buildings; when B8 is darker than B4 on more than half of them
  (and land is at least a tenth of the extent), the bands are probably in another order, and a warning says so.
"""

import math

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from osgeo import gdal, osr

from .bands import SO2SAT_BANDS, normalise_band_name
from ..runtime.feedback import Feedback

gdal.UseExceptions()

#: The ground size of a pixel may differ this much (relative) from the model's before the stack is refused.
PIXEL_SIZE_TOLERANCE = 0.02
#: The 99th percentile of valid values must reach this for DN on the 0–10000 scale (clear water ≈ 300–1000 in B2).
MIN_P99_DN = 100.0
#: Spectral band-order test: a pixel is water when its darkest band, whichever it is, is darker than this
#: (reflectance 0.025; on the real Virginia L1C scene 99 % of water pixels are below 244 and 99 % of land above 275).
WATER_DARKEST_DN = 250.0
#: Warn when more than this share of land pixels have B8 (NIR) darker than B4 (red), if land is at least
#: MIN_LAND_SHARE of the sample (land pixels are judged, so water does not dilute the test).
NIR_BELOW_RED_SHARE = 0.5
MIN_LAND_SHARE = 0.1
_SAMPLE_WINDOWS = 8  # per side: 64 windows of 32 × 32 px spread over the extent
_B4, _B8 = SO2SAT_BANDS.index("B4"), SO2SAT_BANDS.index("B8")


class InputError(ValueError):
    """The Sentinel-2 raster (or its content in the extent) cannot be classified."""


def utm_epsg(lon: float, lat: float) -> int:
    """The EPSG code of the WGS 84 / UTM zone of a point (degrees)."""
    return (32600 if lat >= 0 else 32700) + min(int((lon + 180) // 6) + 1, 60)


def _utm_for(srs: osr.SpatialReference, x: float, y: float) -> osr.SpatialReference:
    """The WGS 84 UTM zone of the point (x, y) given in ``srs``."""
    geographic = srs.CloneGeogCS()
    for s in (srs, geographic):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat, _ = osr.CoordinateTransformation(srs, geographic).TransformPoint(x, y)
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(utm_epsg(lon, lat))
    utm.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return utm


def ground_pixel_size(ds: gdal.Dataset) -> tuple[tuple[float, ...], osr.SpatialReference]:
    """(x, y) ground size in metres of one pixel at the raster's centre, measured in the local UTM zone.

    Equal to the nominal pixel size in a UTM or national grid; larger or smaller where the CRS's units are not
    ground metres (Web Mercator: nominal × cos(latitude)).
    """
    gt = ds.GetGeoTransform()
    srs = ds.GetSpatialRef().Clone()
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    cx, cy = gt[0] + gt[1] * ds.RasterXSize / 2, gt[3] + gt[5] * ds.RasterYSize / 2
    utm = _utm_for(srs, cx, cy)
    to_utm = osr.CoordinateTransformation(srs, utm)
    n = 100  # measure over 100 pixels, so rounding does not matter
    x0, y0, _ = to_utm.TransformPoint(cx, cy)
    sizes = []
    for dx, dy in ((gt[1] * n, 0.0), (0.0, gt[5] * n)):
        x1, y1, _ = to_utm.TransformPoint(cx + dx, cy + dy)
        sizes.append(math.hypot(x1 - x0, y1 - y0) / n)
    return tuple(sizes), utm


def open_sentinel2(path: Path | str, pixel_size_m: float = 10.0) -> gdal.Dataset:
    """Open a Sentinel-2 stack and check it: 10 bands in So2Sat order (when band descriptions are set), a
    projected CRS in ground metres, pixels of ``pixel_size_m`` (the model card's, 10 m for So2Sat models).

    Returns the GDAL dataset. Raises InputError saying what is wrong and how to fix it.
    """
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as error:
        raise InputError(f"Cannot open the Sentinel-2 raster {path}: {error}") from None
    expected = ", ".join(SO2SAT_BANDS)
    if ds.RasterCount != len(SO2SAT_BANDS):
        raise InputError(f"The Sentinel-2 raster has {ds.RasterCount} band(s); the model needs 10 bands in the "
                         f"order {expected}. Build the stack with 'Build Sentinel-2 band stack' (df4lcz:sentinel2stack).")
    descriptions = [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)]
    if any(descriptions):
        names = [normalise_band_name(d) if d else None for d in descriptions]
        if names != list(SO2SAT_BANDS):
            raise InputError(f"The Sentinel-2 raster's bands are described as {', '.join(descriptions)}; the model "
                             f"needs {expected}. Rebuild the stack with df4lcz:sentinel2stack.")
    srs = ds.GetSpatialRef()
    if srs is None or not srs.IsProjected() or abs(srs.GetLinearUnits() - 1.0) > 1e-9:
        raise InputError("The Sentinel-2 raster must be in a projected CRS in metres (e.g. its UTM zone).")
    (ground_x, ground_y), utm = ground_pixel_size(ds)
    nominal = abs(ds.GetGeoTransform()[1])
    warp = (f"Warp it to {utm.GetName()} (EPSG:{utm.GetAuthorityCode(None)}) at {pixel_size_m:g} m, e.g. "
            f"gdalwarp -t_srs EPSG:{utm.GetAuthorityCode(None)} -tr {pixel_size_m:g} {pixel_size_m:g} -r bilinear "
            "IN.tif OUT.tif, or build the stack from the product with df4lcz:sentinel2stack.")
    if max(abs(ground_x / nominal - 1), abs(ground_y / nominal - 1)) > PIXEL_SIZE_TOLERANCE:
        raise InputError(f"The Sentinel-2 raster's CRS ({srs.GetName()}) does not measure ground metres here: its "
                         f"{nominal:g} m pixels are {ground_x:.2f} m × {ground_y:.2f} m on the ground, so a 32-pixel "
                         f"patch would not cover the {32 * pixel_size_m:g} m the model was trained on. {warp}")
    if abs(nominal / pixel_size_m - 1) > PIXEL_SIZE_TOLERANCE:
        raise InputError(f"The Sentinel-2 raster's pixels are {nominal:g} m; the model was trained on "
                         f"{pixel_size_m:g} m pixels (its 32-pixel patches would cover {32 * nominal:g} m instead "
                         f"of {32 * pixel_size_m:g} m). {warp}")
    return ds


def own_mask_band(ds: gdal.Dataset) -> gdal.Band | None:
    """The raster's own GDAL mask band (per-dataset mask, as ``sentinel2stack`` writes for clouds, or alpha),
    or None when its mask only repeats the nodata value or there is none."""
    band = ds.GetRasterBand(1)
    flags = band.GetMaskFlags()
    return None if flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA) else band.GetMaskBand()


def valid_pixels(data: npt.NDArray[Any], nodata_values: Sequence[float | None],
                 zero_is_nodata: bool = True) -> npt.NDArray[np.bool_]:
    """bool (H, W): pixels of ``data`` (bands, H, W) that hold data in every band: not the band's nodata value,
    not NaN, and not 0 unless ``zero_is_nodata`` is False (values shifted below 0, where 0 is a real value)."""
    valid = np.ones(data.shape[1:], dtype=bool)
    for band, nodata in zip(data, nodata_values):
        if zero_is_nodata:
            valid &= band != 0
        if nodata is not None:
            valid &= band != nodata
        if band.dtype.kind == "f":
            valid &= np.isfinite(band)
    return valid


def sample_values(ds: gdal.Dataset, window: tuple[int, int, int, int]) -> npt.NDArray[np.float32]:
    """float32 (bands, N): the valid pixels of 8 × 8 windows of 32 × 32 px spread over ``window``.

    window: (row, col, height, width) in raster pixels, clipped to the raster here.
    """
    row, col, height, width = window
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, ds.RasterYSize), min(col + width, ds.RasterXSize)
    nodata = [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)]
    size = 32
    samples = []
    for r in np.linspace(r0, max(r1 - size, r0), _SAMPLE_WINDOWS).astype(int):
        for c in np.linspace(c0, max(c1 - size, c0), _SAMPLE_WINDOWS).astype(int):
            h, w = min(size, r1 - r), min(size, c1 - c)
            if h <= 0 or w <= 0:
                continue
            data = ds.ReadAsArray(int(c), int(r), int(w), int(h)).astype(np.float32)
            samples.append(data[:, valid_pixels(data, nodata)])
    return np.concatenate(samples, axis=1) if samples else np.zeros((ds.RasterCount, 0), np.float32)


def check_values(ds: gdal.Dataset, window: tuple[int, int, int, int], feedback: Feedback | None = None) -> bool:
    """Judge the stack's values in ``window`` (row, col, height, width px) from a sample of its valid pixels.

    Raises InputError when they are not on the 0–10000 DN scale (reflectance 0–1 or percent). Reports through
    ``feedback``: negative values (clipped to 1 by the classifier), values above the scale, and a failed
    spectral band-order test (module docstring).
    Returns whether 0 marks no data: True, unless negative values show that the values were shifted (then 0 is
    a real value and only the declared nodata marks no data). With no valid pixel in the sample it returns True,
    and the caller reports that the extent holds no data.
    """
    feedback = feedback or Feedback()
    values = sample_values(ds, window)
    if values.shape[1] == 0:
        return True
    p99 = float(np.percentile(values, 99))
    if p99 < MIN_P99_DN:
        scale = ("reflectance on a 0–1 scale" if p99 <= 2 else "reflectance in percent" if p99 <= 200
                 else "values far below that scale")
        raise InputError(f"The Sentinel-2 raster's values in the extent look like {scale} (99th percentile "
                         f"{p99:.4g}); the model needs digital numbers on the 0–10000 reflectance scale "
                         "(DN = reflectance × 10000). Multiply the stack by 10000 (Raster calculator, output UInt16), "
                         "or build it from the product with df4lcz:sentinel2stack.")
    negative = float((values < 0).mean())
    if negative:
        feedback.warning(f"{100 * negative:.2g} % of the sampled values are negative (an L2A offset of −1000 "
                         "subtracted without clipping?); they are clipped to 1, as 'Build Sentinel-2 band stack' does, "
                         "and 0 counts as a value, not as no data (only the raster's nodata value marks no data).")
    median = float(np.median(values))
    if median > 10000:
        feedback.warning(f"The median value in the extent is {median:.0f}, above the 0–10000 reflectance scale: "
                         "the stack may be on another scale, or cloud and snow cover the extent. The map is "
                         "probably wrong; check the stack.")
    land = values.min(axis=0) >= WATER_DARKEST_DN  # independent of the band order under test
    if land.mean() >= MIN_LAND_SHARE:
        share = float((values[_B8, land] < values[_B4, land]).mean())
        if share > NIR_BELOW_RED_SHARE:
            feedback.warning(
                f"Spectral check failed: the band in position 7 (B8, near infrared) is darker than the band in "
                f"position 3 (B4, red) on {100 * share:.0f} % of the land pixels, which vegetation, soil and "
                "buildings are not. The bands are probably not in the order "
                f"{', '.join(SO2SAT_BANDS)} (a stack without band descriptions cannot be checked by name), or "
                "cloud or snow covers the extent. The map is probably wrong: rebuild the stack with "
                "df4lcz:sentinel2stack.")
    return not negative
