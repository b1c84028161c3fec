"""Training samples from LCZ training areas: patch centres inside the polygons, split by polygon.

Sampling: the polygons are rasterised by GDAL onto the Sentinel-2 pixel grid (polygon id per pixel, all-touched
off); a patch centre is taken every ``spacing_px`` pixels (default 5 px = 50 m) where the centre pixel lies in a
polygon, and kept when its 32 × 32 patch is inside the raster without no-data. Neighbouring patches of one
polygon overlap, which is why the splits are by polygon. A class with fewer than 3 polygons carrying samples is
left out, with a warning, as the LCZ Generator requires 3 polygons per class; fewer than 2 classes left is
refused. Class balance is handled in the loss (``class_weights``), not by resampling.

Splits (``split_polygons``, leakage-free): within each class, the polygons are shuffled and assigned to test,
validation and training; no polygon feeds two splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from osgeo import gdal, ogr, osr

from ..sentinel2.clouds import MAX_CLOUD_PERCENT
from ..runtime.ogr_memory import memory_datasource
from ..sentinel2.checks import check_values, open_sentinel2, own_mask_band
from ..runtime.feedback import Feedback
from ..runtime.grid import PATCH_PX

if TYPE_CHECKING:
    from .training_areas import TrainingAreas

gdal.UseExceptions()

MIN_POLYGONS = 3
SPLITS = ("train", "validation", "test")


class SamplingError(ValueError):
    """The training areas give no usable samples on this raster."""


@dataclass
class Samples:
    """Patch centres (raster row, col), their LCZ code (1–17) and polygon id (index in the training areas), as
    int64 arrays of length N."""

    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int64]
    polygons: npt.NDArray[np.int64]
    cloud_dropped: int = 0  # candidate patches dropped under the stack's cloud mask

    def take(self, keep: npt.NDArray[np.bool_]) -> Samples:
        """The samples where the boolean (N,) ``keep`` is true."""
        return Samples(self.rows[keep], self.cols[keep], self.codes[keep], self.polygons[keep])

    def __len__(self) -> int:
        return len(self.codes)

    def summary(self, splits: npt.NDArray[np.str_]) -> dict[str, dict[str, Any]]:
        """{split: {"samples": {code: n}, "polygons": n}} for a split name per sample (str (N,)), for the model
        card and the report."""
        return {split: {"samples": {int(c): int(((splits == split) & (self.codes == c)).sum())
                                    for c in np.unique(self.codes)},
                        "polygons": int(len(np.unique(self.polygons[splits == split])))}
                for split in SPLITS if (splits == split).any()}


def split_polygons(polygons: npt.NDArray[np.integer], codes: npt.NDArray[np.integer], rng: np.random.Generator,
                   test_share: float = 0.3, validation_share: float = 0.2) -> npt.NDArray[np.str_]:
    """str (N,) split name per sample ('train', 'validation', 'test'), drawn by polygon, stratified by class.

    polygons, codes: int (N,) per sample. Per class of n polygons, shuffled by ``rng`` (a NumPy Generator):
    n_test = round(test_share · n), at least 1 (0 if ``test_share`` is 0), leaving at least 2; of the m = n −
    n_test others, n_validation = round(validation_share · m), at least 1, leaving at least 1; the rest train.
    Each class must have at least 3 polygons (2 with ``test_share`` 0).
    """
    splits = np.empty(len(polygons), dtype="<U10")
    for code in np.unique(codes):
        members = rng.permutation(np.unique(polygons[codes == code]))
        n_test = min(max(1, round(test_share * len(members))), len(members) - 2) if test_share else 0
        pool = len(members) - n_test
        n_val = min(max(1, round(validation_share * pool)), pool - 1)
        for split, chosen in (("test", members[:n_test]), ("validation", members[n_test:n_test + n_val]),
                              ("train", members[n_test + n_val:])):
            splits[np.isin(polygons, chosen)] = split
    return splits


def rasterise_polygons(ds: gdal.Dataset, areas: TrainingAreas) -> npt.NDArray[np.int32]:
    """int32 (H, W) polygon id + 1 per pixel of the Sentinel-2 grid (0 = outside every polygon)."""
    target = ds.GetSpatialRef().Clone()
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(areas.srs, target)
    memory = memory_datasource()  # must outlive its layer
    layer = memory.CreateLayer("tas", target, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("burn", ogr.OFTInteger))
    for index, geometry in enumerate(areas.geometries):
        g = geometry.Clone()
        g.Transform(transform)
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("burn", index + 1)
        feature.SetGeometry(g)
        layer.CreateFeature(feature)
    raster = gdal.GetDriverByName("MEM").Create("", ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Int32)
    raster.SetGeoTransform(ds.GetGeoTransform())
    raster.SetProjection(ds.GetProjection())
    gdal.RasterizeLayer(raster, [1], layer, options=["ATTRIBUTE=burn"])
    return raster.GetRasterBand(1).ReadAsArray()


def sample_training_areas(sentinel2_path: Path | str, areas: TrainingAreas, spacing_px: int = 5,
                          feedback: Feedback | None = None) -> Samples:
    """Samples of ``areas`` on the Sentinel-2 stack (see module docstring), classes of < 3 polygons left out.

    Raises SamplingError when no polygon overlaps the raster, or fewer than 2 classes keep 3 polygons.
    """
    feedback = feedback or Feedback()
    ds = open_sentinel2(sentinel2_path)
    check_values(ds, (0, 0, ds.RasterYSize, ds.RasterXSize), feedback)  # a model trained on 0–1 data is useless
    ids = rasterise_polygons(ds, areas)
    half = PATCH_PX // 2
    grid = np.zeros_like(ids, dtype=bool)
    grid[half:ds.RasterYSize - half:spacing_px, half:ds.RasterXSize - half:spacing_px] = True
    rows, cols = np.nonzero((ids > 0) & grid)
    if len(rows) == 0:
        raise SamplingError("No training area overlaps the Sentinel-2 raster (away from its 160 m border); "
                            "check that the polygons and the raster cover the same place.")
    mask_band = own_mask_band(ds)
    state = np.array([_patch_state(ds, mask_band, r - half, c - half) for r, c in zip(rows, cols)])
    cloud_dropped = int((state == _CLOUDY).sum())
    if cloud_dropped:
        feedback.info(f"{cloud_dropped} training patch(es) dropped: more than {MAX_CLOUD_PERCENT:g} % of their pixels "
                      "are under the stack's cloud and shadow mask.")
    keep = state == _CLEAR
    rows, cols = rows[keep], cols[keep]
    polygons = ids[rows, cols] - 1
    codes = np.asarray(areas.codes)[polygons]
    used = np.zeros(len(codes), bool)
    for code in np.unique(codes):
        members = np.unique(polygons[codes == code])
        if len(members) < MIN_POLYGONS:
            feedback.warning(f"LCZ class {code} has {len(members)} training polygon(s) with samples; at least "
                             f"{MIN_POLYGONS} are needed (train, validation, test), so the class is left out.")
        else:
            used |= codes == code
    classes = len(np.unique(codes[used]))
    if classes < 2:
        raise SamplingError(f"{'Only one LCZ class has' if classes else 'No LCZ class has'} {MIN_POLYGONS} training "
                            "polygons with samples on this raster; a model needs at least 2 classes. Digitise at "
                            f"least {MIN_POLYGONS} polygons for each of 2 or more classes.")
    return Samples(rows[used].astype(np.int64), cols[used].astype(np.int64), codes[used].astype(np.int64),
                   polygons[used].astype(np.int64), cloud_dropped)


_CLEAR, _NODATA, _CLOUDY = 0, 1, 2


def _patch_state(ds: gdal.Dataset, mask_band: gdal.Band | None, top: int, left: int) -> int:
    """_CLEAR, _NODATA (a pixel is 0) or _CLOUDY (more than MAX_CLOUD_PERCENT masked, as in classification)."""
    patch = ds.ReadAsArray(int(left), int(top), PATCH_PX, PATCH_PX)
    if not (patch != 0).all():
        return _NODATA
    if mask_band is not None:
        masked = int((mask_band.ReadAsArray(int(left), int(top), PATCH_PX, PATCH_PX) == 0).sum())
        if masked > MAX_CLOUD_PERCENT / 100 * PATCH_PX * PATCH_PX:
            return _CLOUDY
    return _CLEAR


def read_patches(sentinel2_path: Path | str, samples: Samples, scale: float = 10000.0) -> npt.NDArray[np.float32]:
    """float32 (N, 10, 32, 32) patches centred on the samples, divided by ``scale`` (model card scaling)."""
    ds = gdal.Open(str(sentinel2_path))
    half = PATCH_PX // 2
    out = np.empty((len(samples), ds.RasterCount, PATCH_PX, PATCH_PX), np.float32)
    for i, (r, c) in enumerate(zip(samples.rows, samples.cols)):
        out[i] = ds.ReadAsArray(int(c - half), int(r - half), PATCH_PX, PATCH_PX)
    return np.maximum(out, 1) / scale  # negative DN clipped to 1, as classification does


def class_weights(codes: npt.ArrayLike, num_classes: int = 17) -> npt.NDArray[np.float32]:
    """Inverse-frequency class weights (float32, (17,)), mean 1 over the classes present; 0 for absent ones."""
    counts = np.bincount(np.asarray(codes) - 1, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    present = counts > 0
    weights[present] *= present.sum() / weights[present].sum()
    return weights.astype(np.float32)
