"""The LCZ Generator's Gaussian filter of a hard LCZ map: the ``lczFilter`` band of the LCZ Generator (Demuzere et
al. 2021, Front. Environ. Sci. 9:637455) and the ``lcz_filter`` band of the global LCZ map (Demuzere et al. 2022,
ESSD 14:3835).

Source: ``_gaussian_filter`` of ``create_lcz_map.py`` in Demuzere's public workflow
(github.com/matthiasdemuzere/multitemporal-lcz-mapping): for each class k its one-hot mask is convolved with a
normalised Gaussian kernel of that class's radius and σ in metres (``ee.Kernel.gaussian(radius, sigma,
'meters')``, table ``KERNELS``), and each cell takes the class whose smoothed value is highest
(``qualityMosaic``).

How this module makes the rule exact where the source leaves it to Earth Engine:

- along each axis the kernel's half-width is radius / pixel size, rounded half up; the weights are
  exp(−(dx² + dy²) / 2σ²), dx and dy the offsets in metres, normalised to sum 1 over the whole kernel;
- on a geographic CRS the pixel sizes in metres are those at the raster's centre, along x and y separately
  (``pixel_size_m``);
- no-data cells (0) count in no class and stay no data;
- edges: the whole extent is kept and cells outside it count in no class (the kernel is not renormalised), so
  near the border the values are lower and the filter acts as if the map continued with no data. The Generator
  instead exports its map 500 m smaller on every side to hide these edge effects;
- ties: classes whose smoothed values are within ``TIE`` of the highest tie. The raw class is kept when it is
  among them; otherwise the lowest LCZ code among them wins (legend order). ``TIE`` only absorbs float rounding:
  mathematically equal sums (mirror-image neighbourhoods) may differ by a few ulps.

The convolution is separable (exp of a sum), so it runs as two 1-D passes of shifted sums in numpy (no SciPy,
so it runs in QGIS's own Python).
"""

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from osgeo import gdal, osr

from . import legend
from ..runtime.feedback import Feedback
from ..runtime.grid import OutputGrid
from .lcz_raster import create_lcz_raster, palette_of, read_lcz_map, write_style_sidecar
from ..runtime.outputs import atomic_output

gdal.UseExceptions()

#: LCZ code → (radius, σ) of its Gaussian kernel in metres (``create_lcz_map.py::_gaussian_filter``).
KERNELS = {
    1: (200, 100), 2: (300, 150), 3: (300, 150), 4: (300, 150), 5: (300, 150), 6: (300, 150), 7: (300, 150),
    8: (500, 250), 9: (300, 150), 10: (500, 250),
    11: (200, 75), 12: (200, 75), 13: (200, 75), 14: (200, 75), 15: (300, 150), 16: (200, 75), 17: (50, 25),
}
#: Smoothed values (0–1) closer than this to the highest count as tied: the float rounding of equal sums stays
#: below 1e-14 here, while the smallest weight any kernel of the table can have (a corner of the LCZ A–D kernel
#: at 400 m pixels, exp(−2·400²/2·75²)) is 4.5e-13.
TIE = 1e-13


def half_width(radius_m: float, pixel_m: float) -> int:
    """Kernel half-width in cells along an axis: ``radius_m / pixel_m`` rounded half up."""
    return int(math.floor(radius_m / pixel_m + 0.5))


def kernel_1d(radius_m: float, sigma_m: float, pixel_m: float) -> npt.NDArray[np.float64]:
    """float64 (2h + 1,) weights exp(−d² / 2σ²) at offsets d = −h…h cells × ``pixel_m`` metres, normalised to sum 1.

    The 2-D kernel of the rule is the outer product of the x and y kernels (exp(−(dx² + dy²)/2σ²) normalised).
    """
    h = half_width(radius_m, pixel_m)
    d = np.arange(-h, h + 1) * float(pixel_m)
    weights = np.exp(-d * d / (2.0 * sigma_m * sigma_m))
    return weights / weights.sum()


def _correlate(values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], axis: int) -> npt.NDArray[np.float64]:
    """``values`` (H, W) correlated with the symmetric ``weights`` along ``axis``, zeros outside."""
    h = len(weights) // 2
    n = values.shape[axis]
    padding = [(0, 0), (0, 0)]
    padding[axis] = (h, h)
    padded = np.pad(values, padding)

    def shifted(offset: int) -> npt.NDArray[np.float64]:
        return padded[offset:offset + n] if axis == 0 else padded[:, offset:offset + n]

    out = weights[h] * values
    for t in range(h):  # the weights are symmetric: one multiply for the pair of offsets ±(h − t)
        out += weights[t] * (shifted(t) + shifted(2 * h - t))
    return out


def smoothed(codes: npt.NDArray[np.integer], code: int, pixel_x_m: float, pixel_y_m: float) -> npt.NDArray[np.float64]:
    """float64 (H, W): the one-hot mask of ``code`` in ``codes`` (H, W) convolved with that class's normalised
    Gaussian kernel (``KERNELS``); cells outside the map count as other classes (zero)."""
    radius, sigma = KERNELS[code]
    mask = (codes == code).astype(np.float64)
    along_x = _correlate(mask, kernel_1d(radius, sigma, pixel_x_m), axis=1)
    return _correlate(along_x, kernel_1d(radius, sigma, pixel_y_m), axis=0)


def filter_lcz(codes: npt.ArrayLike, pixel_x_m: float, pixel_y_m: float,
               feedback: Feedback | None = None) -> npt.NDArray[np.uint8]:
    """uint8 (H, W) filtered LCZ map of ``codes`` (H, W) integer LCZ codes 1–17, 0 = no data (101–107 are read as
    LCZ A–G, other values as no data: ``legend.normalise_codes``), whose cells are ``pixel_x_m`` × ``pixel_y_m``
    metres (``pixel_size_m``). The rule and its edge and tie handling: see the module docstring.

    Each present class is smoothed twice (once for the highest value, once for the ties), so memory stays at a
    few (H, W) arrays whatever the number of classes. Raises ValueError for pixel sizes that are not positive,
    ``feedback.Canceled`` when the caller cancels.
    """
    if not (pixel_x_m > 0 and pixel_y_m > 0 and math.isfinite(pixel_x_m) and math.isfinite(pixel_y_m)):
        raise ValueError(f"pixel sizes must be positive metres, got {pixel_x_m} × {pixel_y_m}")
    feedback = feedback or Feedback()
    codes = legend.normalise_codes(codes)
    present = [int(c) for c in np.unique(codes) if c != legend.NODATA]
    highest = np.zeros(codes.shape)
    for step, code in enumerate(present):
        feedback.check_canceled()
        np.maximum(highest, smoothed(codes, code, pixel_x_m, pixel_y_m), out=highest)
        feedback.progress(0.5 * (step + 1) / len(present))
    raw_tied = np.zeros(codes.shape, dtype=bool)
    lowest_tied = np.zeros(codes.shape, dtype=np.uint8)
    for step, code in enumerate(present):
        feedback.check_canceled()
        tied = smoothed(codes, code, pixel_x_m, pixel_y_m) >= highest - TIE
        raw_tied |= tied & (codes == code)
        lowest_tied[tied & (lowest_tied == 0)] = code
        feedback.progress(0.5 + 0.5 * (step + 1) / len(present))
    filtered = np.where(raw_tied, codes, lowest_tied).astype(np.uint8)
    filtered[codes == legend.NODATA] = legend.NODATA
    return filtered


def pixel_size_m(geotransform: tuple, wkt: str, size: tuple[int, int]) -> tuple[float, float]:
    """(x, y) pixel sizes in metres of a north-up raster: ``geotransform`` (GDAL), CRS ``wkt``, ``size`` =
    (cols, rows). On a projected CRS, the pixel sizes × the CRS's linear unit in metres; on a geographic CRS,
    the sizes at the raster's centre on the CRS's ellipsoid: Δλ·N·cos φ along x and Δφ·M along y (N the prime
    vertical and M the meridional radius of curvature at the centre's latitude φ, in metres).

    Raises ValueError for a rotated raster or one without a CRS.
    """
    x0, dx, rot1, y0, rot2, dy = geotransform
    if rot1 or rot2:
        raise ValueError("The LCZ map is rotated (its geotransform has rotation terms); warp it north-up first "
                         "(gdalwarp).")
    srs = osr.SpatialReference()
    if not wkt or srs.ImportFromWkt(wkt) != 0:
        raise ValueError("The LCZ map has no CRS, so its pixel size in metres is unknown; assign its CRS first.")
    if not srs.IsGeographic():
        metres = srs.GetLinearUnits()
        return abs(dx) * metres, abs(dy) * metres
    radians = srs.GetAngularUnits()  # radians per CRS unit (a degree, usually)
    latitude = (y0 + dy * size[1] / 2.0) * radians
    a = srs.GetSemiMajor()
    e2 = 1.0 - (srs.GetSemiMinor() / a) ** 2
    w = 1.0 - e2 * math.sin(latitude) ** 2
    n, m = a / math.sqrt(w), a * (1.0 - e2) / w ** 1.5
    return abs(dx) * radians * n * math.cos(latitude), abs(dy) * radians * m


def write_filtered(lcz_path: Path | str, out_path: Path | str, palette: str | None = None,
                   feedback: Feedback | None = None) -> dict[int, int]:
    """Write ``out_path``: the filtered map (``filter_lcz``) of the LCZ map at ``lcz_path`` (one band, codes 1–17
    or 101–107 for LCZ A–G, any CRS), on its grid, as the styled LCZ GeoTIFF (codes 1–17, 0 = no data, colour
    table, category names, ``.qml``) in ``palette`` (default: the input's own LCZ palette when its colour table
    is one of ``legend.PALETTES``, else the official one); written under a temporary name and renamed when
    complete. Returns {code: cells} of the filtered map.

    Raises ``lcz_raster.LCZMapError`` (a ValueError) when the input is not an LCZ map (several bands, fractional
    values, values that are not LCZ codes) or is rotated or has no CRS; ``feedback.Canceled`` on cancel.
    """
    ds, codes = read_lcz_map(lcz_path)
    gt, wkt = ds.GetGeoTransform(), ds.GetProjection()
    pixel_x, pixel_y = pixel_size_m(gt, wkt, (ds.RasterXSize, ds.RasterYSize))
    palette = palette or palette_of(ds.GetRasterBand(1))
    filtered = filter_lcz(codes, pixel_x, pixel_y, feedback)
    grid = OutputGrid(0, 0, ds.RasterYSize, ds.RasterXSize, 1, gt)
    metadata = {"lcz_filter": "LCZ Generator Gaussian filter (Demuzere et al. 2021), whole extent kept",
                "pixel_size_m": f"{pixel_x:.3f} x {pixel_y:.3f}", "filtered_from": str(lcz_path)}
    with atomic_output(out_path) as tmp:
        out = create_lcz_raster(tmp, grid, wkt, palette, metadata)
        out.GetRasterBand(1).WriteArray(filtered)
        out.FlushCache()
        out = None
    write_style_sidecar(out_path, palette)
    present, counts = np.unique(filtered[filtered != legend.NODATA], return_counts=True)
    return {int(c): int(n) for c, n in zip(present, counts)}
