"""A window of the global LCZ map (Demuzere et al. 2022, ESSD 14:3835), reprojected by GDAL onto a target grid.

Resampling is ``mode``: each target cell takes the most frequent LCZ of the 100 m source cells it covers, the
majority the LCZ community uses to aggregate maps (the same as the reference rasters of ``assess``); nearest
neighbour would keep one arbitrary source cell of a 100 m UTM cell straddling four. On a target finer than the
source the two are the same.
"""

from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from . import legend
from .lcz_raster import LCZMapError
from ..runtime.grid import OutputGrid
from .lcz_raster import create_lcz_raster, write_style_sidecar
from ..runtime.outputs import atomic_output

gdal.UseExceptions()


def _wgs84_bounds(bounds: tuple[float, float, float, float], wkt: str) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) in lon/lat of ``bounds`` given in the CRS ``wkt`` (densified edges)."""
    source, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromWkt(wkt)
    wgs84.ImportFromEPSG(4326)
    for srs in (source, wgs84):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(source, wgs84).TransformBounds(*bounds, 21)


def write_window(source: gdal.Dataset, out_path: Path | str, bounds: tuple[float, float, float, float], wkt: str,
                 size: tuple[int, int] | None = None, palette: str = "official_2022",
                 metadata: dict[str, str] | None = None) -> dict[int, int]:
    """Write ``out_path``, the LCZ GeoTIFF (codes 1–17, 0 = no data, colour table, ``.qml``) of the window
    ``bounds`` (xmin, ymin, xmax, ymax in the CRS ``wkt``) of the GDAL dataset ``source`` (an LCZ map in
    EPSG:4326, codes 1–17 or 101–107), warped with ``mode`` onto ``size`` = (cols, rows) cells over the bounds,
    or at the source's own resolution when ``size`` is None. Returns {code: cells}.

    Raises LCZMapError when the source is not a one-band LCZ map, when the window does not overlap it, or
    when the window holds only no data.
    """
    if source.RasterCount != 1:
        raise LCZMapError(f"The global LCZ map copy {source.GetDescription()} has {source.RasterCount} bands; "
                              "it must be the one-band lcz_filter_v3.tif (LCZ codes 1–17).")
    gt = source.GetGeoTransform()
    covers = (gt[0], gt[3] + gt[5] * source.RasterYSize, gt[0] + gt[1] * source.RasterXSize, gt[3])
    wanted = _wgs84_bounds(bounds, wkt)
    if wanted[0] >= covers[2] or wanted[2] <= covers[0] or wanted[1] >= covers[3] or wanted[3] <= covers[1]:
        raise LCZMapError(
            f"The extent (lon {wanted[0]:.4f}…{wanted[2]:.4f}, lat {wanted[1]:.4f}…{wanted[3]:.4f}) does not overlap "
            f"the global LCZ map read ({source.GetDescription()}: lon {covers[0]:.4f}…{covers[2]:.4f}, lat "
            f"{covers[1]:.4f}…{covers[3]:.4f}); check the extent and its CRS.")
    options = dict(format="MEM", outputBounds=bounds, dstSRS=wkt, resampleAlg="mode", outputType=gdal.GDT_Int32,
                   dstNodata=0, srcNodata=source.GetRasterBand(1).GetNoDataValue())
    if size:
        options.update(width=size[0], height=size[1])
    else:
        options.update(xRes=gt[1], yRes=-gt[5], targetAlignedPixels=False)
    warped = gdal.Warp("", source, **options)
    stored = warped.GetRasterBand(1).ReadAsArray()
    codes = legend.normalise_codes(stored)
    foreign = (stored != 0) & (codes == legend.NODATA)
    if foreign.sum() > 0.01 * stored.size:
        raise LCZMapError(f"{source.GetDescription()} is not an LCZ map: {int(foreign.sum())} cells of the window "
                              f"hold values that are not LCZ codes 1–17 or 101–107 (e.g. "
                              f"{', '.join(str(v) for v in np.unique(stored[foreign])[:5])}).")
    if not (codes != legend.NODATA).any():
        raise LCZMapError("The window of the global LCZ map holds only no data (open sea or outside its "
                              "coverage); check the extent.")
    grid = OutputGrid(0, 0, warped.RasterYSize, warped.RasterXSize, 1, warped.GetGeoTransform())
    with atomic_output(out_path) as tmp:
        out = create_lcz_raster(tmp, grid, wkt, palette, metadata)
        out.GetRasterBand(1).WriteArray(codes.astype(np.uint8))
        out.FlushCache()
        out = None
    write_style_sidecar(out_path, palette)
    present, counts = np.unique(codes[codes != legend.NODATA], return_counts=True)
    return {int(c): int(n) for c, n in zip(present, counts)}
