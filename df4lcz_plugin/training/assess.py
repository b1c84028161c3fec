"""Assess an LCZ map against reference training-area polygons or a reference LCZ raster.

The comparison is made on the map's own grid, per cell: polygons are rasterised by GDAL onto it (a cell
counts when its centre is inside a polygon); a reference raster is warped by GDAL onto it with ``mode``
resampling (any CRS and resolution). LCZ A–G may be coded 11–17 or 101–107 (WUDAPT 2015) on either side. Map
cells with no data (0) and reference values that are not LCZ codes are left out.
"""

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from ..lcz import legend
from ..runtime.feedback import Feedback
from ..lcz.lcz_filter import write_filtered
from ..lcz.lcz_raster import LCZMapError, read_lcz_map
from .metrics import confusion_matrix, lcz_metrics
from .samples import rasterise_polygons
from .training_areas import read_training_areas

gdal.UseExceptions()


class AssessmentError(LCZMapError):
    """The map and the reference do not overlap, the reference is unusable, or the map is not an LCZ map."""


def reference_on_map_grid(lcz_ds: gdal.Dataset, reference_path: Path | str,
                          class_field: str | None = None) -> npt.NDArray[np.integer]:
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


def assess(lcz_path: Path | str, reference_path: Path | str, class_field: str | None = None,
           feedback: Feedback | None = None) -> tuple[npt.NDArray[np.int64], dict[str, Any]]:
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


def assess_filtered(lcz_path: Path | str, reference_path: Path | str, scratch: Path | str,
                    class_field: str | None = None,
                    feedback: Feedback | None = None) -> tuple[npt.NDArray[np.int64], dict[str, Any]]:
    """(confusion matrix, metrics) of the LCZ map at ``lcz_path`` filtered as the LCZ Generator filters it
    (``lcz_filter.write_filtered``, written into the folder ``scratch``), against the same reference as ``assess``.
    The Generator's own accuracy figures are of the raw map; this says what its filter, the product most users
    take, does to them. Raises what ``assess`` raises."""
    filtered = Path(scratch) / "filtered.tif"
    write_filtered(lcz_path, filtered, feedback=feedback)
    return assess(filtered, reference_path, class_field, feedback)
