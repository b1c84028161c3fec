"""Assess an LCZ map against reference training-area polygons or a reference LCZ raster.

The comparison is made on the map's own grid, per cell: polygons are rasterised by GDAL onto it (a cell
counts when its centre is inside a polygon); a reference raster is warped by GDAL onto it with ``mode``
resampling (any CRS and resolution). LCZ A–G may be coded 11–17 or 101–107 (WUDAPT 2015) on either side. Map
cells with no data (0) and reference values that are not LCZ codes are left out.
"""

import numpy as np
from osgeo import gdal

from ..lcz import legend
from ..feedback import Feedback
from ..lcz.lcz_raster import WINNER_BAND
from .metrics import confusion_matrix, lcz_metrics
from .samples import rasterise_polygons
from .training_areas import read_training_areas

gdal.UseExceptions()


class AssessmentError(ValueError):
    """The map and the reference do not overlap, or the reference is unusable."""


def reference_on_map_grid(lcz_ds, reference_path, class_field=None):
    """int (H, W) reference values on the map grid (0 = none), from polygons or from a raster (as stored)."""
    try:
        ref = gdal.OpenEx(str(reference_path), gdal.OF_RASTER)
    except RuntimeError:
        ref = None
    if ref is not None:
        gt = lcz_ds.GetGeoTransform()
        bounds = (gt[0], gt[3] + gt[5] * lcz_ds.RasterYSize, gt[0] + gt[1] * lcz_ds.RasterXSize, gt[3])
        warped = gdal.Warp("", ref, format="MEM", outputBounds=bounds, width=lcz_ds.RasterXSize,
                           height=lcz_ds.RasterYSize, dstSRS=lcz_ds.GetProjection(), resampleAlg="mode",
                           outputType=gdal.GDT_Int32, dstNodata=0)
        return warped.GetRasterBand(1).ReadAsArray()
    areas = read_training_areas(reference_path, class_field)
    ids = rasterise_polygons(lcz_ds, areas)
    return np.concatenate([[0], areas.codes])[ids]  # polygon id + 1 → its code; 0 stays 0


def read_lcz_map(path):
    """(GDAL dataset, int64 (H, W) codes 0–17) of an LCZ map: one band of codes 1–17 (or 101–107 for A–G).

    Raises AssessmentError when the raster is not an LCZ map (several bands, e.g. the 18-band probability
    raster, or values that are not LCZ codes).
    """
    ds = gdal.Open(str(path))
    if ds.RasterCount != 1:
        hint = (" It looks like the probability raster (PROBABILITIES of 'Classify local climate zones')."
                if ds.RasterCount in (len(legend.CODES), WINNER_BAND) else "")  # 17: before the winner band
        raise AssessmentError(f"The LCZ map {path} has {ds.RasterCount} bands; an LCZ map has one band of LCZ codes "
                              f"1–17.{hint} Give the LCZ map itself (OUTPUT of 'Classify local climate zones').")
    band = ds.GetRasterBand(1)
    values = band.ReadAsArray()
    nodata = band.GetNoDataValue()
    stored = values[values != nodata] if nodata is not None else values.ravel()
    if stored.dtype.kind == "f" and not np.array_equal(stored, np.round(stored)):
        raise AssessmentError(f"The LCZ map {path} holds fractional values, so it is not an LCZ map (codes 1–17). "
                              "Give the LCZ map (OUTPUT of 'Classify local climate zones').")
    foreign = stored[(stored != legend.NODATA) & (legend.normalise_codes(stored) == legend.NODATA)]
    if foreign.size > 0.01 * stored.size:  # a few stray cells are tolerated and left out
        raise AssessmentError(f"The LCZ map {path} is not an LCZ map: {foreign.size} of its cells hold values "
                              f"that are not LCZ codes 1–17 or 101–107 (e.g. "
                              f"{', '.join(f'{v:g}' for v in np.unique(foreign)[:5])}). Give the LCZ map (OUTPUT of "
                              "'Classify local climate zones').")
    return ds, legend.normalise_codes(values)


def assess(lcz_path, reference_path, class_field=None, feedback=None):
    """(17 × 17 confusion matrix, metrics dict) of an LCZ map (codes 1–17) against a reference.

    Both may code LCZ A–G as 11–17 or as the WUDAPT-2015 101–107. Reference cells with other values are left
    out and counted in a warning. Raises AssessmentError when the map is not an LCZ map, or when no map cell
    with data meets a reference value.
    """
    feedback = feedback or Feedback()
    lcz_ds, predicted = read_lcz_map(lcz_path)
    stored = reference_on_map_grid(lcz_ds, reference_path, class_field)
    reference = legend.normalise_codes(stored)
    ignored = int(((stored != 0) & (reference == legend.NODATA) & (predicted != legend.NODATA)).sum())
    if ignored:
        feedback.warning(f"{ignored} reference cell(s) hold values that are not LCZ codes (1–17, 101–107), e.g. "
                         f"{', '.join(str(v) for v in np.unique(stored[(stored != 0) & (reference == 0)])[:5])}; "
                         "they are left out.")
    cm = confusion_matrix(reference, predicted)
    if ignored > cm.sum():
        raise AssessmentError(f"Most of the reference ({ignored} cells against {cm.sum()} usable) holds values that "
                              "are not LCZ codes 1–17 or 101–107; check how the reference is coded.")
    if cm.sum() == 0:
        raise AssessmentError("The LCZ map and the reference do not overlap (no map cell with data meets a "
                              "reference LCZ 1–17); check that both cover the same place.")
    return cm, lcz_metrics(cm)
