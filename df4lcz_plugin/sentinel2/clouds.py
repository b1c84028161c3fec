"""Cloud, cloud-shadow and snow mask of a Sentinel-2 product, on a coarse grid of the product's tile.

Sources, best first (``CLOUD_MASK=auto``):
- **product** — L2A: the scene classification ``SCL`` (3 cloud shadow, 8/9 cloud medium/high probability,
  10 cirrus, 11 snow); L1C of processing baseline ≥ 04.00: ``MSK_CLASSI_B00.jp2`` (opaque clouds, cirrus, snow;
  one band of bit flags 1/2/4, or one band per flag).
- **s2cloudless** (Sentinel Hub, Zupanc 2017): its LightGBM pixel model (``pixel_s2_cloud_detector_lightGBM_v0.1``,
  an asset taken from the s2cloudless wheel, CC BY-SA 4.0) run by ``lightgbm`` itself, without the s2cloudless
  package, whose import pulls in ``sentinelhub``. Same features (B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12
  as TOA reflectance) and post-processing (probability averaged over a disk of radius 1, a threshold, dilation by
  a disk of radius 1), computed at 60 m, the native resolution of B01, B09 and B10. The threshold is 0.6, not
  the package's 0.4 (``S2CLOUDLESS_THRESHOLD`` says why).
- Shadows, where the source gives none (L1C): pixels dark in near infrared (B8 < 0.15 reflectance, the
  threshold of the Earth Engine s2cloudless tutorial) that are not water (B8 ≥ B4) and lie where a cloud's
  shadow can fall: the cloud mask projected away from the sun for cloud heights of 200 m to 2 km
  (``SHADOW_HEIGHTS_M``). The sun angles come from the granule metadata (``MTD_TL.xml``); without it, from the
  acquisition time in the band file names and the tile's centre (``solar_position``). A dark-pixel rule without
  direction (dark pixels within 1 km of a cloud) was tried on the real Berlin scene and rejected: it marked
  16 % of the scene, mostly dark winter forest, as shadow.

The result is a ``CloudMask``: uint8 classes on the coarse grid (``CLEAR``, ``CLOUD``, ``SHADOW``, ``SNOW``);
snow is kept as its own flag and is not masked.
"""

from __future__ import annotations

import datetime
import importlib.util
import math
import re
import xml.etree.ElementTree as ET  # nosec B405
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, cast

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from ..runtime.grid import Bounds, GeoTransform
from ..runtime.outputs import PathLike

if TYPE_CHECKING:
    from ..runtime.feedback import Feedback
    from .stack import ProductInfo

gdal.UseExceptions()

#: (uint8 (H, W) classes CLEAR, CLOUD, SHADOW, SNOW; resolution of their grid in m; where they come from).
Classes = tuple[npt.NDArray[np.uint8], float, str]

CLEAR, CLOUD, SHADOW, SNOW = 0, 1, 2, 3
MODES = ("auto", "product", "s2cloudless", "none")
#: s2cloudless's band order; its post-processing defaults (S2PixelCloudDetector: average_over 1, dilation 1).
S2CLOUDLESS_BANDS = ("B1", "B2", "B4", "B5", "B8", "B8A", "B9", "B10", "B11", "B12")
#: The cloud probability threshold. s2cloudless's default is 0.4; on the real Berlin scene (February, low sun)
#: 0.4 also flags dark winter forest (23 % of the scene flagged against 9 % at 0.6), and cells whose patches held
#: only 0.4–0.6 "haze" were no more often mapped as built-up or bare (12.7 %) than clear cells (12.8 %), so 0.6.
S2CLOUDLESS_THRESHOLD = 0.6
S2CLOUDLESS_RESOLUTION_M = 60.0
DARK_NIR_DN = 1500  # B8 < 0.15 reflectance
SHADOW_HEIGHTS_M = tuple(range(200, 2001, 200))
#: Default of MAX_CLOUD: % of a patch's pixels that may be masked (cloud, shadow) before its cell is no data.
#: On the real Berlin scene (s2cloudless mask, 100 m cells), cells with up to 30 % of their patch masked were
#: mapped built-up or bare (LCZ 1–10, E, F) 17–21 % of the time against 15 % for clear cells, and 55 % above
#: 30 %; 10 % keeps a margin below that break.
MAX_CLOUD_PERCENT = 10.0
_SCL = {3: SHADOW, 8: CLOUD, 9: CLOUD, 10: CLOUD, 11: SNOW}


class CloudMaskError(ValueError):
    """The requested cloud mask source is not in the product."""


@dataclass
class CloudMask:
    """Classes (uint8 (H, W): CLEAR, CLOUD, SHADOW, SNOW) on a grid of the tile; ``geotransform`` is GDAL's."""

    classes: npt.NDArray[np.uint8]
    geotransform: GeoTransform
    source: str

    def dataset(self, projection: str) -> gdal.Dataset:
        """An in-memory GDAL dataset of the classes, to be resampled onto another grid."""
        ds = gdal.GetDriverByName("MEM").Create("", self.classes.shape[1], self.classes.shape[0], 1, gdal.GDT_Byte)
        ds.SetGeoTransform(self.geotransform)
        ds.SetProjection(projection)
        ds.GetRasterBand(1).WriteArray(self.classes)
        return ds


def _find(folder: PathLike, pattern: str) -> Optional[Path]:
    matches = sorted(p for p in Path(folder).rglob("*") if re.search(pattern, p.name, re.IGNORECASE))
    return matches[0] if matches else None


def coarse_grid(bounds: Bounds, resolution: float) -> tuple[int, int, GeoTransform]:
    """(width, height, geotransform) of the grid of ``resolution`` m from the top-left corner of ``bounds``."""
    width = math.ceil((bounds[2] - bounds[0]) / resolution - 1e-9)
    height = math.ceil((bounds[3] - bounds[1]) / resolution - 1e-9)
    return width, height, (bounds[0], resolution, 0.0, bounds[3], 0.0, -resolution)


def _read_on(path: PathLike, bounds: Bounds, resolution: float, resample: str = "nearest") -> npt.NDArray[np.float32]:
    """float32 (bands, H, W) of a raster read on the ``coarse_grid`` of ``bounds`` (GDAL resampling)."""
    width, height, gt = coarse_grid(bounds, resolution)
    grid_bounds = (gt[0], gt[3] - height * resolution, gt[0] + width * resolution, gt[3])
    ds = gdal.Warp("", str(path), format="VRT", outputBounds=grid_bounds, width=width, height=height,
                   resampleAlg=resample)
    return ds.ReadAsArray().astype(np.float32).reshape(ds.RasterCount, height, width)


def _pixel_size(path: PathLike) -> float:
    return abs(gdal.Open(str(path)).GetGeoTransform()[1])


def scl_classes(values: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """The mask classes (CLEAR, CLOUD, SHADOW, SNOW; uint8) of an array of L2A scene classification (SCL) values."""
    scl = np.asarray(values).astype(np.int16)
    classes = np.zeros(scl.shape, np.uint8)
    for value, cls in _SCL.items():
        classes[scl == value] = cls
    return classes


def product_mask_classes(folder: PathLike, bounds: Bounds) -> Optional[Classes]:
    """(uint8 classes, resolution in m, source) from the product's own mask (SCL or MSK_CLASSI_B00) read at its
    own resolution, or None when it has none."""
    scl = _find(folder, r"_SCL(_\d+m)?\.(jp2|tif)$")
    if scl is not None:
        resolution = _pixel_size(scl)
        return scl_classes(_read_on(scl, bounds, resolution)[0]), resolution, f"product ({scl.name})"
    classi = _find(folder, r"^MSK_CLASSI_B00\.(jp2|tif)$")
    if classi is not None:
        resolution = _pixel_size(classi)
        values = _read_on(classi, bounds, resolution).astype(np.uint8)
        if len(values) == 1:  # one band of bit flags: 1 opaque, 2 cirrus, 4 snow
            opaque, cirrus, snow = (values[0] & 1) > 0, (values[0] & 2) > 0, (values[0] & 4) > 0
        else:
            opaque, cirrus = values[0] > 0, values[1] > 0
            snow = values[2] > 0 if len(values) > 2 else np.zeros_like(opaque)
        classes = np.where(opaque | cirrus, CLOUD, np.where(snow, SNOW, CLEAR)).astype(np.uint8)
        return classes, resolution, f"product ({classi.name})"
    return None


def _disk(radius: int) -> npt.NDArray[np.bool_]:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def s2cloudless_classes(band_files: Mapping[str, PathLike], offsets: Mapping[str, int], bounds: Bounds,
                        resolution: float, model_file: PathLike) -> npt.NDArray[np.uint8]:
    """uint8 classes (CLOUD or CLEAR) by s2cloudless on ``bounds`` at ``resolution`` m (module docstring).

    band_files: band name → path (all of S2CLOUDLESS_BANDS); offsets: band → DN offset of baseline ≥ 04.00.
    """
    import lightgbm
    from scipy import ndimage

    reflectance = np.stack([(_read_on(band_files[b], bounds, resolution, "average")[0] + offsets.get(b, 0)) / 10000
                            for b in S2CLOUDLESS_BANDS])
    booster = lightgbm.Booster(model_file=str(model_file))
    predicted = np.asarray(booster.predict(reflectance.reshape(len(S2CLOUDLESS_BANDS), -1).T, num_threads=1))
    probability = predicted.reshape(reflectance.shape[1:]).astype(np.float32)
    disk = _disk(1).astype(np.float32)
    averaged = ndimage.convolve(probability, disk / disk.sum(), mode="reflect")
    cloud = ndimage.binary_dilation(averaged > S2CLOUDLESS_THRESHOLD, structure=_disk(1))
    return np.where(cloud, CLOUD, CLEAR).astype(np.uint8)


def solar_position(when: datetime.datetime, lat: float, lon: float) -> tuple[float, float]:
    """(zenith, azimuth clockwise from north) in degrees of the sun at ``when`` (UTC datetime) seen from
    (lat, lon) in degrees: NOAA's general solar position equations (declination and equation of time in
    Spencer's 1971 Fourier form), good to about 0.5° — ample for placing a shadow within 60 m pixels."""
    day = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (day - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g) - 0.014615 * math.cos(2 * g)
                       - 0.040849 * math.sin(2 * g))
    decl = (0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
            + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g))
    hour_angle = math.radians((hour * 60 + eqtime + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    zenith = math.acos(max(-1.0, min(1.0, cos_zenith)))
    azimuth = math.degrees(math.atan2(math.sin(hour_angle),
                                      math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi))) + 180
    return math.degrees(zenith), azimuth % 360


def sun_angles(folder: PathLike, band_file: PathLike, srs_wkt: str, bounds: Bounds
               ) -> tuple[Optional[tuple[float, float]], Optional[str]]:
    """(zenith, azimuth) in degrees and where they come from: the granule metadata ``MTD_TL.xml``, else the
    acquisition time in the band file name (``…_20170216T102101_B02.jp2``) at the centre of ``bounds``; None
    when neither is there."""
    metadata = _find(folder, r"^MTD_TL\.xml$")
    if metadata is not None:
        for element in ET.parse(metadata).getroot().iter():  # nosec B314
            if element.tag.split("}")[-1] == "Mean_Sun_Angle":
                values = {child.tag.split("}")[-1]: float(cast(str, child.text)) for child in element}
                return (values["ZENITH_ANGLE"], values["AZIMUTH_ANGLE"]), "the sun angles of MTD_TL.xml"
    stamp = re.search(r"_(\d{8}T\d{6})_", Path(band_file).name)
    if stamp is None:
        return None, None
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(srs_wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    wgs84 = srs.CloneGeogCS()
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat, _ = osr.CoordinateTransformation(srs, wgs84).TransformPoint((bounds[0] + bounds[2]) / 2,
                                                                           (bounds[1] + bounds[3]) / 2)
    when = datetime.datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%S")
    return solar_position(when, lat, lon), f"the sun position at {when:%Y-%m-%d %H:%M} UTC (from the file names)"


def add_shadows(classes: npt.NDArray[np.uint8], b4: npt.NDArray[np.float32], b8: npt.NDArray[np.float32],
                resolution: float, angles: tuple[float, float]) -> npt.NDArray[np.uint8]:
    """Mark SHADOW in ``classes`` (in place): dark, non-water pixels where a cloud's shadow can fall.

    b4, b8: float32 DN (offset removed) on the same grid. angles: (sun zenith, azimuth) degrees: the cloud mask
    is projected away from the sun for each height of SHADOW_HEIGHTS_M. Returns ``classes``.
    """
    from scipy import ndimage

    cloud = classes == CLOUD
    zenith, azimuth = (math.radians(a) for a in angles)
    reach = np.zeros_like(cloud)
    for height in SHADOW_HEIGHTS_M:
        distance = height * math.tan(zenith) / resolution  # px, away from the sun
        shift = (distance * math.cos(azimuth), -distance * math.sin(azimuth))  # (rows: south, cols: east)
        reach |= ndimage.shift(cloud, shift, order=0, mode="constant", cval=False)
    dark = (b8 < DARK_NIR_DN) & (b8 >= b4) & (b8 > 0)
    classes[reach & dark & ~cloud & (classes != SNOW)] = SHADOW
    return classes


def cloud_mask(info: ProductInfo, folder: PathLike, bounds: Bounds, srs_wkt: str, mode: str = "auto",
               model_file: Optional[PathLike] = None, feedback: Optional[Feedback] = None) -> Optional[CloudMask]:
    """The CloudMask of a product on ``bounds`` (the 10 m tile, in ``srs_wkt``), or None for ``mode="none"`` or
    no source.

    info: ``sentinel2.ProductInfo`` (band files, offsets). mode: ``MODES``. model_file: the s2cloudless model
    (default: from the asset loader). Raises CloudMaskError when the requested source is missing.
    """
    from ..runtime.feedback import Feedback

    feedback = feedback or Feedback()
    if mode not in MODES:
        raise CloudMaskError(f"CLOUD_MASK '{mode}' is not one of {', '.join(MODES)}.")
    if mode == "none":
        return None
    found = product_mask_classes(folder, bounds) if mode in ("auto", "product") else None
    if found is None and mode == "product":
        raise CloudMaskError(f"{folder} has no product cloud mask (SCL in L2A, MSK_CLASSI_B00 in L1C of baseline "
                             "04.00 or later); use CLOUD_MASK=s2cloudless or auto.")
    if found is None:
        found = _s2cloudless_mask(info, bounds, mode, model_file, feedback)
        if found is None:
            return None
    classes, resolution, source = found
    if (classes == CLOUD).any() and not (classes == SHADOW).any():  # the source has clouds but no shadows
        source += _shadows(classes, info, folder, bounds, srs_wkt, resolution, feedback)
    return CloudMask(classes, coarse_grid(bounds, resolution)[2], source)


def _s2cloudless_lacking(info: ProductInfo) -> Optional[str]:
    """Why s2cloudless cannot run on the product (a band or lightgbm missing), or None when it can."""
    if not all(b in info.band_files for b in S2CLOUDLESS_BANDS):
        return f"lacks the bands s2cloudless needs ({', '.join(S2CLOUDLESS_BANDS)})"
    if importlib.util.find_spec("lightgbm") is None:
        return "lightgbm, which runs s2cloudless, is not installed (the plugin's dependencies)"
    return None


def _s2cloudless_mask(info: ProductInfo, bounds: Bounds, mode: str, model_file: Optional[PathLike],
                      feedback: Feedback) -> Optional[Classes]:
    """(uint8 classes, resolution in m, source) by s2cloudless; when it cannot run, None with a warning in
    ``mode`` auto, else CloudMaskError."""
    lacking = _s2cloudless_lacking(info)
    if lacking and mode == "auto":
        feedback.warning(f"No cloud mask: the product has no mask of its own and {lacking}. Clouds will be "
                         "classified as if they were ground; check the map against the imagery.")
        return None
    if lacking:
        raise CloudMaskError(f"CLOUD_MASK=s2cloudless cannot run: {lacking}.")
    if model_file is None:
        from ..runtime import assets
        model_file = assets.fetch_member(assets.S2CLOUDLESS_MODEL)
    return (s2cloudless_classes(info.band_files, info.offsets, bounds, S2CLOUDLESS_RESOLUTION_M, model_file),
            S2CLOUDLESS_RESOLUTION_M, "s2cloudless")


def _shadows(classes: npt.NDArray[np.uint8], info: ProductInfo, folder: PathLike, bounds: Bounds, srs_wkt: str,
             resolution: float, feedback: Feedback) -> str:
    """Mark SHADOW in ``classes`` (in place, ``add_shadows``) from the sun angles of the product; returns what to
    add to the mask's source ("" with a warning when the product has no sun angles)."""
    angles, origin = sun_angles(folder, info.band_files["B2"], srs_wkt, bounds)
    if angles is None:
        feedback.warning("No cloud-shadow mask: the product has no sun angles (MTD_TL.xml) and its file names no "
                         "acquisition time. Cloud shadows will be classified as if they were ground.")
        return ""
    b4, b8 = (_read_on(info.band_files[b], bounds, resolution, "average")[0] + info.offsets.get(b, 0)
              for b in ("B4", "B8"))
    add_shadows(classes, b4, b8, resolution, angles)
    return f", shadows projected with {origin}"
