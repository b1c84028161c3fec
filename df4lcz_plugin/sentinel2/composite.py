"""A cloud-free Sentinel-2 composite of several products or stacks: per pixel and band, the median of the
observations that are clear (not no data, not under the stack's cloud and shadow mask).

The median is the usual per-pixel statistic of cloud-free compositing (Earth Engine composites, and the
So2Sat/LCZ lineage: Schmitt et al. 2019, "Aggregating cloud-free Sentinel-2 images with Google Earth Engine",
ISPRS Annals IV-2/W7): it is robust to clouds and shadows the mask missed, which are bright or dark outliers.

All inputs are brought onto one 10 m grid (the first input's CRS and pixel grid, over the union of the
inputs' extents) by GDAL warped VRTs, which honour each input's mask band (or, without one, its nodata value), so a
masked pixel arrives as no data.
The composite is written in strips of ``STRIP_ROWS`` rows: memory is bounded by one strip of every input.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from .bands import SO2SAT_BANDS
from ..runtime.feedback import Feedback
from ..runtime.grid import Bounds, GeoTransform
from ..runtime.kill_points import kill_point
from ..runtime.outputs import PathLike, atomic_output, scratch_folder
from .processing_level import combine_levels, stack_level
from .stack import build_stack, create_stack_raster
from .checks import check_values, open_sentinel2, own_mask_band

gdal.UseExceptions()

STRIP_ROWS = 128
#: Largest side of a composite in pixels: two neighbouring 110 km tiles, overlapping, fit well within it.
MAX_SIDE_PX = 30000


class CompositeError(ValueError):
    """The inputs cannot be composited (none, the same one twice, no overlap, too large a union)."""


def _union_grid(datasets: Sequence[gdal.Dataset], names: Sequence[str]) -> tuple[GeoTransform, int, int, str]:
    """(geotransform, width, height, wkt) of the first dataset's 10 m grid over the union of all extents.

    Raises CompositeError when an input overlaps no other input (different places, or a UTM zone far away), or
    when the union would exceed MAX_SIDE_PX a side.
    """
    first = datasets[0]
    gt, wkt = first.GetGeoTransform(), first.GetProjection()
    boxes = [_box_on(ds, gt, wkt) for ds in datasets]
    _check_each_overlaps(boxes, names)
    xmin, ymin = min(b[0] for b in boxes), min(b[1] for b in boxes)
    xmax, ymax = max(b[2] for b in boxes), max(b[3] for b in boxes)
    # Snap to the first input's pixel grid, so that its pixels are taken as they are.
    col0 = math.floor((xmin - gt[0]) / gt[1] + 1e-9)
    col1 = math.ceil((xmax - gt[0]) / gt[1] - 1e-9)
    row0 = math.floor((gt[3] - ymax) / abs(gt[5]) + 1e-9)
    row1 = math.ceil((gt[3] - ymin) / abs(gt[5]) - 1e-9)
    if max(col1 - col0, row1 - row0) > MAX_SIDE_PX:
        raise CompositeError(f"The inputs span {(col1 - col0) * gt[1] / 1000:.0f} km × "
                             f"{(row1 - row0) * abs(gt[5]) / 1000:.0f} km, more than a composite of overlapping "
                             f"tiles ({MAX_SIDE_PX * gt[1] / 1000:.0f} km a side); composite each tile separately.")
    return (gt[0] + col0 * gt[1], gt[1], 0.0, gt[3] - row0 * abs(gt[5]), 0.0, gt[5]), col1 - col0, row1 - row0, wkt


def _box_on(ds: gdal.Dataset, gt: GeoTransform, wkt: str) -> Bounds:
    """(xmin, ymin, xmax, ymax) of ``ds`` warped to ``wkt`` at the pixel size of ``gt``; raises CompositeError
    when GDAL cannot warp it there."""
    try:
        warped = gdal.Warp("", ds, format="VRT", dstSRS=wkt, xRes=gt[1], yRes=abs(gt[5]))
    except RuntimeError as error:
        raise CompositeError(f"An input cannot be put on the first input's grid ({error}); composite "
                             "products of the same or overlapping tiles.") from None
    wgt = warped.GetGeoTransform()
    return (wgt[0], wgt[3] + wgt[5] * warped.RasterYSize, wgt[0] + wgt[1] * warped.RasterXSize, wgt[3])


def _check_each_overlaps(boxes: Sequence[Bounds], names: Sequence[str]) -> None:
    """Raise CompositeError naming the first input whose box overlaps none of the others' (of several)."""
    for i, a in enumerate(boxes):
        if len(boxes) > 1 and not any(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
                                      for j, b in enumerate(boxes) if j != i):
            raise CompositeError(f"INPUTS {names[i]} overlaps none of the other inputs; a composite combines "
                                 "acquisitions of the same or overlapping tiles.")


def _source_nodata(ds: gdal.Dataset) -> Optional[str]:
    """The warper's source nodata for ``ds``: "None" when it has its own mask band, else its nodata (default).

    Given both a per-dataset mask and a nodata value, GDAL before 3.12 honours both, GDAL 3.12 and later the
    nodata alone: clouds would count as clear. So a masked stack is warped by its mask alone, which in
    ``sentinel2stack``'s stacks also hides the no-data pixels (0 values are dropped after warping anyway).
    """
    return "None" if own_mask_band(ds) is not None else None


def build_composite(inputs: Sequence[PathLike], output: PathLike, observations_path: Optional[PathLike] = None,
                    cloud_mask_mode: str = "auto", feedback: Optional[Feedback] = None,
                    extra_metadata: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Write the median composite of ``inputs`` to ``output`` (10 bands, So2Sat order, UInt16, nodata 0) and,
    optionally, the number of clear observations per pixel to ``observations_path`` (Byte).

    inputs: product folders (.SAFE or band files; stacked first by ``stack.build_stack`` with
    ``cloud_mask_mode``) or 10-band stacks (their mask band and nodata are honoured).
    The composite's ``PROCESSING_LEVEL`` metadata is its inputs' level when they agree, else "mixed".
    extra_metadata: GDAL metadata items added to (or replacing) the composite's own.
    Returns a dict: inputs, width, height, share of pixels with 0, 1, 2, … observations, processing level.
    Raises CompositeError, checks.InputError, stack.Sentinel2Error; Canceled.
    """
    feedback = feedback or Feedback()
    if not inputs:
        raise CompositeError("Give at least one Sentinel-2 product or stack to composite.")
    with scratch_folder(output) as scratch:  # intermediate stacks, beside the output, never left behind
        stacks: list[str] = []
        for index, path in enumerate(inputs):
            if Path(path).is_dir():
                feedback.info(f"Stacking {path} with its cloud mask")
                stack = Path(scratch) / f"input_{index}.tif"
                build_stack(path, stack, feedback, cloud_mask_mode)
                stacks.append(str(stack))
            else:
                stacks.append(str(path))
        for i, a in enumerate(stacks):
            for b in stacks[i + 1:]:
                if os.path.samefile(a, b):
                    raise CompositeError(f"INPUTS holds {a} twice; a composite needs each acquisition once.")
        datasets: list[gdal.Dataset] = []
        for name, path in zip(inputs, stacks):
            ds = open_sentinel2(path)
            feedback.info(f"Checking {name}")
            check_values(ds, (0, 0, ds.RasterYSize, ds.RasterXSize), feedback)  # scale, sign, band order
            datasets.append(ds)
        gt, width, height, wkt = _union_grid(datasets, [str(p) for p in inputs])
        metadata = {"COMPOSITE": "per-pixel median of the clear observations",
                    "COMPOSITE_INPUTS": ";".join(str(p) for p in inputs),
                    "PROCESSING_LEVEL": combine_levels(stack_level(path) for path in stacks), **(extra_metadata or {})}
        bounds = (gt[0], gt[3] + gt[5] * height, gt[0] + gt[1] * width, gt[3])
        # Each input on the common grid; masked and no-data pixels come out as 0.
        views = [gdal.Warp("", ds, format="VRT", dstSRS=wkt, outputBounds=bounds, width=width, height=height,
                           resampleAlg="bilinear", dstNodata=0, srcNodata=_source_nodata(ds)) for ds in datasets]
        try:
            histogram = _write(views, gt, width, height, wkt, metadata, output, observations_path, feedback)
        finally:
            del views[:]  # release the warped views before the datasets they read
            del datasets[:]
    shares = {str(n): round(float(c / histogram.sum()), 4) for n, c in enumerate(histogram)}
    feedback.info(f"Composite of {len(inputs)} input(s), {width} × {height} px; share of pixels by number of clear "
                  f"observations: {shares}")
    return {"inputs": len(inputs), "width": width, "height": height, "observations": shares,
            "processing_level": metadata["PROCESSING_LEVEL"]}


def _write(views: list[gdal.Dataset], gt: GeoTransform, width: int, height: int, wkt: str, metadata: dict[str, str],
           output: PathLike, observations_path: Optional[PathLike], feedback: Feedback) -> npt.NDArray[np.int64]:
    """Write the composite (and observation counts) strip by strip, with ``metadata``; returns the histogram of
    counts."""
    histogram = np.zeros(len(views) + 1, np.int64)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_output(output))
        tmp_obs = stack.enter_context(atomic_output(observations_path)) if observations_path else None
        datasets: dict[str, gdal.Dataset] = {}
        # Runs first on exit: GDAL must close its files before they are renamed or removed.
        stack.callback(datasets.clear)
        out = datasets["composite"] = create_stack_raster(tmp, width, height, gt, wkt, metadata)
        obs = None
        if tmp_obs:
            obs = datasets["observations"] = gdal.GetDriverByName("GTiff").Create(
                tmp_obs, width, height, 1, gdal.GDT_Byte, options=["TILED=YES", "COMPRESS=DEFLATE"])
            obs.SetGeoTransform(gt)
            obs.SetProjection(wkt)
            obs.GetRasterBand(1).SetDescription("clear observations")
        for row in range(0, height, STRIP_ROWS):
            feedback.check_canceled()
            rows = min(STRIP_ROWS, height - row)
            strips = np.stack([v.ReadAsArray(0, row, width, rows) for v in views]).astype(np.float32)
            # 0 is no data (masked or outside); negative DN are data, clipped to 1 below as classification does.
            clear = ((strips != 0) & np.isfinite(strips)).all(axis=1)  # (inputs, rows, width)
            strips[~np.broadcast_to(clear[:, None], strips.shape)] = np.nan
            count = clear.sum(axis=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN where no observation is clear
                median = np.nanmedian(strips, axis=0)
            values = np.where(count > 0, np.clip(np.rint(np.nan_to_num(median)), 1, 65535), 0).astype(np.uint16)
            out.WriteArray(values, 0, row, band_list=list(range(1, len(SO2SAT_BANDS) + 1)))
            if obs is not None:
                obs.GetRasterBand(1).WriteArray(count.astype(np.uint8), 0, row)
            histogram += np.bincount(count.ravel(), minlength=len(histogram))
            feedback.progress((row + rows) / height)
            kill_point("strip")
        out = obs = None  # only ``datasets`` holds them now
    return histogram
