"""Build the 10-band Sentinel-2 stack the LCZ models read, from a product folder.

Input: a Sentinel-2 L1C/L2A ``.SAFE`` folder, or a folder of per-band JP2/GeoTIFF files whose names end in
the band (``s2_B02.jp2``, ``T33UUU_20170216T102101_B02.jp2``, ``T33UUU_…_B05_20m.jp2``).
Output: a GeoTIFF (UInt16, nodata 0) with bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 at 10 m, the 20 m
bands resampled bilinearly by GDAL (as the So2Sat mapping code upsamples them), with band descriptions.

Values are on the 0–10000 reflectance scale the So2Sat LCZ42 models were trained on (DN = reflectance × 10000).
Products of processing baseline 04.00 and later (January 2022 on) add an offset (``RADIO_ADD_OFFSET`` in L1C,
``BOA_ADD_OFFSET`` in L2A, −1000); it is read from the product metadata and removed, clipping at 1 so that only
true no-data stays 0.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # nosec B405
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union, cast

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from .bands import METADATA_BAND_ORDER, NATIVE_RESOLUTION_M, SO2SAT_BANDS, normalise_band_name
from .clouds import CLOUD, SHADOW, SNOW, cloud_mask
from ..runtime.feedback import Feedback
from ..runtime.kill_points import kill_point
from ..runtime.outputs import PathLike, atomic_output

gdal.UseExceptions()

_BAND_FILE = re.compile(r"(?:^|[_\-.])(B0?(?:1[0-2]|[1-9]|8A))(?:_(10|20|60)m)?\.(?:jp2|tiff?)$", re.IGNORECASE)
_STRIP_ROWS = 512


class Sentinel2Error(ValueError):
    """The folder is not a usable Sentinel-2 product."""


@dataclass
class ProductInfo:
    """What was found in a product folder: band files, processing level and baseline, offsets (DN)."""

    band_files: dict[str, Path]
    processing_level: str = "unknown"
    processing_baseline: str = "unknown"
    offsets: dict[str, int] = field(default_factory=dict)
    quantification: float = 10000.0
    metadata_file: str = ""
    #: Filled by build_stack: where the cloud mask came from, and % of the valid pixels per mask class.
    cloud_mask_source: str = "none"
    cloud_percent: float = 0.0
    shadow_percent: float = 0.0
    snow_percent: float = 0.0


def find_band_files(folder: PathLike) -> dict[str, Path]:
    """Map band name (``"B2"``, ``"B8A"``…) → path, taking the finest resolution found for each band.

    Searches ``folder`` recursively (``GRANULE/*/IMG_DATA[/R10m|R20m|R60m]`` in a .SAFE). Raises Sentinel2Error
    when two files claim the same band at the same resolution.
    """
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(Path(folder).rglob("*")):
        match = _BAND_FILE.search(path.name)
        if not match or not path.is_file():
            continue
        band = normalise_band_name(match.group(1))
        if band is None:  # never: _BAND_FILE matches band names only
            continue
        resolution = int(match.group(2) or NATIVE_RESOLUTION_M[band])
        if band in found and resolution == found[band][0]:
            raise Sentinel2Error(f"{folder} holds two files for band {band}: {found[band][1]} and {path}. Keep one "
                                 "product per folder (an earlier output saved there counts).")
        if band not in found or resolution < found[band][0]:
            found[band] = (resolution, path)
    return {band: path for band, (_, path) in found.items()}


def _metadata_file(folder: PathLike) -> Optional[Path]:
    for name in ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml"):
        candidates = list(Path(folder).glob(name)) or list(Path(folder).glob(f"*/{name}"))
        if candidates:
            return candidates[0]
    return None


def read_product_info(folder: PathLike) -> ProductInfo:
    """Band files plus processing level, baseline, per-band offsets and quantification value.

    Reads ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml`` when present; otherwise the level is guessed from the folder
    name (``MSIL1C``/``MSIL2A``) and no offset is assumed.
    Raises Sentinel2Error if the folder does not exist or lacks any of the 10 bands.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise Sentinel2Error(f"{folder} is not a folder. Give a Sentinel-2 .SAFE folder or a folder of band files.")
    band_files = find_band_files(folder)
    missing = [band for band in SO2SAT_BANDS if band not in band_files]
    if missing:
        raise Sentinel2Error(
            f"{folder} lacks Sentinel-2 band(s) {', '.join(missing)}. Found: {', '.join(sorted(band_files)) or 'none'}."
            " File names must end in the band, e.g. T33UUU_20170216T102101_B02.jp2 or s2_B8A.tif.")
    info = ProductInfo(band_files)
    metadata = _metadata_file(folder)
    if metadata is None:
        name = str(folder).upper()
        info.processing_level = "Level-2A" if "MSIL2A" in name else "Level-1C" if "MSIL1C" in name else "unknown"
        return info
    info.metadata_file = str(metadata)
    _read_metadata(info, metadata)
    if info.quantification != 10000.0:
        raise Sentinel2Error(f"{metadata} has quantification value {info.quantification}; only 10000 is supported.")
    return info


def _read_metadata(info: ProductInfo, metadata: Path) -> None:
    """Fill ``info``'s processing level, baseline, quantification value and per-band offsets (DN) from the
    product metadata file ``metadata`` (``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml``)."""
    root = ET.parse(metadata).getroot()  # nosec B314
    for element in root.iter():
        tag = element.tag.split("}")[-1]
        text = cast(str, element.text)
        if tag == "PROCESSING_LEVEL":
            info.processing_level = text.strip()
        elif tag == "PROCESSING_BASELINE":
            info.processing_baseline = text.strip()
        elif tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE"):
            info.quantification = float(text)
        elif tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
            band = METADATA_BAND_ORDER[int(cast(str, element.get("band_id")))]
            info.offsets[band] = int(float(text))


def built_from(stack_path: PathLike) -> list[Path]:
    """The files a stack made by this plugin was built from (its product's band files and metadata, or a
    composite's inputs, recursively), read from its metadata; [] for any other raster. In a model chain the
    temporary stack is what the classification reads, so this is how an output is kept off the user's own inputs.
    """
    try:
        metadata = gdal.Open(str(stack_path)).GetMetadata() or {}
    except RuntimeError:
        return []
    files: list[Path] = []
    for source in [metadata.get("SOURCE", "")] + metadata.get("COMPOSITE_INPUTS", "").split(";"):
        if not source:
            continue
        try:
            if Path(source).is_dir():
                files += list(find_band_files(source).values())
                files += [m for m in (_metadata_file(source),) if m]
            elif Path(source).is_file():
                files += [Path(source)] + built_from(source)
        except OSError:
            continue  # a source this user cannot read (a colleague's stack) cannot be overwritten by them either
    return files


def create_stack_raster(path: PathLike, width: int, height: int, geotransform: tuple[float, ...], projection: str,
                        metadata: dict[str, str]) -> gdal.Dataset:
    """A new 10-band UInt16 GeoTIFF in So2Sat band order (descriptions B2 … B12, nodata 0, 0–10000 scale), with
    ``metadata`` added to its own; returns the GDAL dataset."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, len(SO2SAT_BANDS), gdal.GDT_UInt16,
                                              options=["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2",
                                                       "BIGTIFF=IF_SAFER"])
    ds.SetGeoTransform(geotransform)
    ds.SetProjection(projection)
    for index, band in enumerate(SO2SAT_BANDS, start=1):
        ds.GetRasterBand(index).SetDescription(band)
        ds.GetRasterBand(index).SetNoDataValue(0)
    ds.SetMetadata({"DF4LCZ_BANDS": ",".join(SO2SAT_BANDS), "REFLECTANCE_SCALE": "10000", **metadata})
    return ds


def remove_offset(dn: npt.NDArray[np.int32], offset: Union[int, npt.NDArray[np.int32]]) -> npt.NDArray[np.int64]:
    """Digital numbers (int32 array) with the baseline ≥ 04.00 ``offset`` (−1000, or 0; broadcastable per band)
    added, clipped at 1 so that only true no data (0) stays 0."""
    return np.where(dn == 0, 0, np.clip(dn + offset, 1, 65535))


def add_mask_band(ds: gdal.Dataset) -> None:
    """Give a new stack its per-dataset mask band, inside the GeoTIFF (not a .msk sidecar): 0 = no data, cloud or
    shadow; 255 = clear."""
    previous = gdal.GetConfigOption("GDAL_TIFF_INTERNAL_MASK")
    gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
    try:
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    finally:
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", previous)


def build_stack(folder: PathLike, output: PathLike, feedback: Optional[Feedback] = None,
                cloud_mask_mode: str = "auto") -> ProductInfo:
    """Write the 10-band, 10 m GeoTIFF stack of a product folder to ``output`` (via a temporary file).

    Streams in strips of 512 rows through a GDAL VRT, so no band is loaded whole. Clouds and cloud shadows
    (``clouds.cloud_mask``, source by ``cloud_mask_mode``: auto, product, s2cloudless, none) go into the GDAL
    per-dataset mask band (internal; 0 = no data, cloud or shadow; 255 = clear), so the 10 bands stay untouched;
    the source and the cloud, shadow and snow percentages of the valid pixels are in the metadata and the
    returned ProductInfo. Raises Sentinel2Error for a bad folder or mismatched band CRSs,
    clouds.CloudMaskError for a missing mask source, Canceled if ``feedback`` asks to stop.
    """
    feedback = feedback or Feedback()
    info = read_product_info(folder)
    paths = [str(info.band_files[band]) for band in SO2SAT_BANDS]
    reference = _one_crs(paths)  # B2 sets the 10 m grid
    srs = reference.GetProjection()
    gt = reference.GetGeoTransform()
    width, height = reference.RasterXSize, reference.RasterYSize
    bounds = (gt[0], gt[3] + gt[5] * height, gt[0] + gt[1] * width, gt[3])
    vrt = gdal.BuildVRT("", paths, separate=True, outputBounds=bounds, xRes=gt[1], yRes=abs(gt[5]),
                        resampleAlg="bilinear")
    offsets = np.array([info.offsets.get(band, 0) for band in SO2SAT_BANDS], dtype=np.int32)[:, None, None]
    feedback.info(f"{info.processing_level}, baseline {info.processing_baseline}; "
                  f"offset removed: {dict(zip(SO2SAT_BANDS, offsets.ravel().tolist()))}")
    mask = cloud_mask(info, folder, bounds, srs, cloud_mask_mode, feedback=feedback)
    # The coarse mask classes seen on the 10 m grid (nearest neighbour), read strip by strip with the bands. A
    # mask hiding nothing is not written: nodata 0 says all, and GDAL copies of the stack get no .msk sidecar.
    hides = mask is not None and bool(np.isin(mask.classes, (CLOUD, SHADOW)).any())
    mask_classes = None if mask is None else gdal.Warp("", mask.dataset(srs), format="VRT", outputBounds=bounds,
                                                       width=width, height=height, resampleAlg="nearest")
    with atomic_output(output) as tmp:
        out = create_stack_raster(tmp, width, height, gt, srs, {
            "PROCESSING_LEVEL": info.processing_level,
            "PROCESSING_BASELINE": info.processing_baseline,
            "OFFSET_REMOVED": ",".join(str(v) for v in offsets.ravel()),
            "SOURCE": str(Path(folder).resolve()),
        })
        if hides:
            add_mask_band(out)
        counts = _write_strips(vrt, out, offsets, mask_classes, hides, feedback)
        if mask is not None:
            _record_mask_shares(info, mask.source, counts, hides, feedback)
        for key, value in (("CLOUD_MASK_SOURCE", info.cloud_mask_source), ("CLOUD_PERCENT", info.cloud_percent),
                           ("SHADOW_PERCENT", info.shadow_percent), ("SNOW_PERCENT", info.snow_percent)):
            out.SetMetadataItem(key, str(value))
        out.FlushCache()
        out = None
    return info


def _one_crs(paths: list[str]) -> gdal.Dataset:
    """The dataset of ``paths[0]`` (B2, whose grid the stack takes), once every band is known to be in its CRS;
    raises Sentinel2Error otherwise."""
    reference = gdal.Open(paths[0])
    for path in paths[1:]:
        if gdal.Open(path).GetSpatialRef().IsSame(reference.GetSpatialRef()) != 1:
            raise Sentinel2Error(f"{path} is not in the CRS of {paths[0]}; the bands must come from one tile.")
    return reference


def _write_strips(vrt: gdal.Dataset, out: gdal.Dataset, offsets: npt.NDArray[np.int32],
                  mask_classes: Optional[gdal.Dataset], hides: bool, feedback: Feedback) -> npt.NDArray[np.int64]:
    """Copy the 10 bands of ``vrt`` (int DN) to ``out`` in strips of 512 rows, ``offsets`` (int32 (10, 1, 1))
    removed; with ``mask_classes`` (the cloud mask classes on the 10 m grid), count the valid pixels of each class
    and, when the mask ``hides`` pixels, write the mask band (0 under cloud and shadow). Returns the counts (int64
    (4,): CLEAR, CLOUD, SHADOW, SNOW). Raises Canceled if ``feedback`` asks to stop."""
    width, height = out.RasterXSize, out.RasterYSize
    counts = np.zeros(SNOW + 1, np.int64)
    for row in range(0, height, _STRIP_ROWS):
        feedback.check_canceled()
        rows = min(_STRIP_ROWS, height - row)
        dn = vrt.ReadAsArray(0, row, width, rows).astype(np.int32)
        values = remove_offset(dn, offsets).astype(np.uint16)
        out.WriteArray(values, 0, row, band_list=list(range(1, len(SO2SAT_BANDS) + 1)))
        if mask_classes is not None:
            valid = (values != 0).all(axis=0)
            classes = mask_classes.ReadAsArray(0, row, width, rows)
            counts += np.bincount(classes[valid], minlength=len(counts))[:len(counts)]
            if hides:
                clear = valid & (classes != CLOUD) & (classes != SHADOW)
                out.GetRasterBand(1).GetMaskBand().WriteArray(np.where(clear, 255, 0).astype(np.uint8), 0, row)
        feedback.progress((row + rows) / height)
        kill_point("strip")
    return counts


def _record_mask_shares(info: ProductInfo, source: str, counts: npt.NDArray[np.int64], hides: bool,
                        feedback: Feedback) -> None:
    """Put the mask's ``source`` and the cloud, shadow and snow % of the valid pixels (``counts`` per class) into
    ``info``, and report them."""
    shares = 100 * counts / max(counts.sum(), 1)
    info.cloud_mask_source = source
    info.cloud_percent, info.shadow_percent, info.snow_percent = (round(float(shares[c]), 2)
                                                                  for c in (CLOUD, SHADOW, SNOW))
    kept = "; kept as the stack's mask band" if hides else ""
    feedback.info(f"Cloud mask from {source}: cloud {info.cloud_percent} %, shadow "
                  f"{info.shadow_percent} %, snow {info.snow_percent} % of the valid pixels (snow is "
                  f"not masked){kept}.")
