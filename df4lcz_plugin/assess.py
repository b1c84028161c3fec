"""Assess an LCZ map against reference training-area polygons or a reference LCZ raster.

The comparison is made on the map's own grid, per cell: polygons are rasterised by GDAL onto it (a cell
counts when its centre is inside a polygon); a reference raster is warped by GDAL onto it with ``mode``
resampling (any CRS and resolution). Map cells with no data (0) and reference values outside 1–17 are left out.
"""

import numpy as np
from osgeo import gdal

from .metrics import confusion_matrix, lcz_metrics
from .samples import rasterise_polygons
from .training_areas import read_training_areas

gdal.UseExceptions()


class AssessmentError(ValueError):
    """The map and the reference do not overlap, or the reference is unusable."""


def reference_on_map_grid(lcz_ds, reference_path, class_field=None):
    """int (H, W) reference LCZ codes on the map grid (0 = none), from polygons or from a raster."""
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


def assess(lcz_path, reference_path, class_field=None):
    """(17 × 17 confusion matrix, metrics dict) of an LCZ map (codes 1–17) against a reference.

    Raises AssessmentError when no map cell with data meets a reference value.
    """
    lcz_ds = gdal.Open(str(lcz_path))
    predicted = lcz_ds.GetRasterBand(1).ReadAsArray()
    reference = reference_on_map_grid(lcz_ds, reference_path, class_field)
    cm = confusion_matrix(reference, predicted)
    if cm.sum() == 0:
        raise AssessmentError("The LCZ map and the reference do not overlap (no map cell with data meets a "
                              "reference LCZ 1–17); check that both cover the same place.")
    return cm, lcz_metrics(cm)
