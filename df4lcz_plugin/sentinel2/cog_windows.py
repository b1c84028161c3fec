"""Windows of remote Sentinel-2 COGs, read through GDAL ``/vsicurl/`` and kept in the user cache.

A window is the part of one asset (one band file of one STAC item) that covers the target grid, on the asset's own
pixel grid (no resampling here), with a margin of ``MARGIN_PX`` pixels so that bilinear resampling at the edge has its
neighbours. It is computed from the item's ``proj:transform``/``proj:shape`` when the item has them, so a cached
window is found without a request; otherwise the COG's header is read first.

GDAL reads only the COG tiles the window touches, with the settings that keep requests few (``HTTP_OPTIONS``): no
directory listing (``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``: without it GDAL sent 247 requests for 3 files instead
of 10), retries with backoff on 429/5xx (GDAL's default is none), and a time-out (``Access.timeout_s``), so a server
that never answers fails the run instead of hanging it. They are set per thread, leaving the rest of the process
(QGIS) as it was.

Cache: ``<user cache>/df4lcz/stac/<item id>/<asset>_<url hash>_<col>_<row>_<width>_<height>.tif``, the window as read,
and a ``.json`` sidecar with its sha256, written after the window, both atomically. A window is reused only when its
sha256 matches, so a truncated or altered file is read again, and a run killed mid-download resumes where it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from osgeo import gdal, osr

from ..runtime import assets
from ..runtime.kill_points import kill_point
from ..runtime.outputs import atomic_output
from .stac import Asset, FetchError, Scene

gdal.UseExceptions()

MARGIN_PX = 2
#: GDAL's HTTP settings for the reads (GDAL's defaults: no retry, 30 s between retries, no time-out).
HTTP_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_MULTIRANGE": "SINGLE_GET",
}


@dataclass(frozen=True)
class Grid:
    """The target grid: ``epsg`` CRS, ``bounds`` (xmin, ymin, xmax, ymax, metres), ``pixel_m`` pixels, north up."""

    epsg: int
    bounds: tuple[float, float, float, float]
    pixel_m: float = 10.0

    @property
    def width(self) -> int:
        return round((self.bounds[2] - self.bounds[0]) / self.pixel_m)

    @property
    def height(self) -> int:
        return round((self.bounds[3] - self.bounds[1]) / self.pixel_m)

    @property
    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        return (self.bounds[0], self.pixel_m, 0.0, self.bounds[3], 0.0, -self.pixel_m)

    @property
    def wkt(self) -> str:
        return srs_of(self.epsg).ExportToWkt()


def srs_of(epsg: int) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(epsg))
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def bounds_in(grid: Grid, epsg: int) -> tuple[float, float, float, float]:
    """The grid's bounds in ``epsg`` (densified edges, so a UTM zone change is covered)."""
    if epsg == grid.epsg:
        return grid.bounds
    transform = osr.CoordinateTransformation(srs_of(grid.epsg), srs_of(epsg))
    return tuple(transform.TransformBounds(*grid.bounds, 21))


def gdal_path(href: str, signing: str = "", collection: str = "") -> str:
    """The GDAL path of an asset URL: ``/vsicurl/`` for http(s), with Planetary Computer's signing when asked.

    Raises FetchError for s3:// and other URLs that need credentials this plugin does not have.
    """
    if signing == "planetary-computer":
        query = urllib.parse.urlencode({"pc_url_signing": "yes", "pc_collection": collection, "url": href})
        return f"/vsicurl?{query}"
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    raise FetchError(f"The asset {href} is not on http(s) (a requester-pays or credentialed store); choose another "
                     "STAC_API or COLLECTION whose assets are public https COGs, e.g. earth-search.")


@dataclass(frozen=True)
class Access:
    """How assets are reached: ``signing`` and ``collection`` (Planetary Computer's), an http(s) ``proxy`` URL, and
    the time-out of one HTTP request in seconds."""

    signing: str = ""
    collection: str = ""
    proxy: str | None = None
    timeout_s: float = 60.0


@contextlib.contextmanager
def http_options(access: Access) -> Iterator[None]:
    """``HTTP_OPTIONS``, the time-out and ``GDAL_HTTP_PROXY`` for GDAL calls of this thread only."""
    options = dict(HTTP_OPTIONS, GDAL_HTTP_TIMEOUT=str(round(access.timeout_s)),
                   GDAL_HTTP_CONNECTTIMEOUT=str(round(min(access.timeout_s, 20))),
                   **({"GDAL_HTTP_PROXY": access.proxy} if access.proxy else {}))
    with thread_config(options):
        yield


@contextlib.contextmanager
def thread_config(options: dict[str, str]) -> Iterator[None]:
    """GDAL configuration ``options`` for this thread's GDAL calls only, restored afterwards."""
    previous = {key: gdal.GetThreadLocalConfigOption(key, None) for key in options}
    for key, value in options.items():
        gdal.SetThreadLocalConfigOption(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            gdal.SetThreadLocalConfigOption(key, value)


def _window(geotransform: tuple, size: tuple[int, int], bounds: tuple) -> tuple[int, int, int, int] | None:
    """(col, row, width, height) of the asset pixels covering ``bounds`` plus MARGIN_PX, clipped; None if none."""
    col0 = math.floor((bounds[0] - geotransform[0]) / geotransform[1] + 1e-9) - MARGIN_PX
    col1 = math.ceil((bounds[2] - geotransform[0]) / geotransform[1] - 1e-9) + MARGIN_PX
    row0 = math.floor((geotransform[3] - bounds[3]) / -geotransform[5] + 1e-9) - MARGIN_PX
    row1 = math.ceil((geotransform[3] - bounds[1]) / -geotransform[5] - 1e-9) + MARGIN_PX
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, size[0]), min(row1, size[1])
    if col1 <= col0 or row1 <= row0:
        return None
    return col0, row0, col1 - col0, row1 - row0


class WindowCache:
    """Asset windows in the user cache (``root``: default ``<user cache>/df4lcz/stac``), checked by sha256."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else assets.cache_dir() / "stac"

    def path(self, scene: Scene, asset: Asset, window: tuple[int, int, int, int]) -> Path:
        """The window's file: by item, asset, the asset's URL (without a query string, where signatures change)
        and the window."""
        safe_id = "".join(c if c.isalnum() or c in "._-" else "_" for c in scene.id)
        url = hashlib.sha256(asset.href.split("?")[0].encode()).hexdigest()[:8]
        return self.root / safe_id / f"{asset.key}_{url}_{'_'.join(str(v) for v in window)}.tif"

    def get(self, path: Path) -> Path | None:
        """``path`` if it is complete and intact (its sha256 matches its sidecar's), else None."""
        try:
            recorded = json.loads(Path(f"{path}.json").read_text())["sha256"]
            return path if assets.sha256_of(path) == recorded else None
        except (OSError, ValueError, KeyError):
            return None

    def put(self, path: Path, source: gdal.Dataset, window: tuple[int, int, int, int]) -> Path:
        """Write ``window`` of ``source`` to ``path``, then its sidecar; both atomically."""
        with atomic_output(path) as tmp:
            options = ["COMPRESS=DEFLATE", "PREDICTOR=2", "TILED=YES"]
            gdal.Translate(tmp, source, srcWin=list(window), creationOptions=options)
        kill_point("window")
        digest = {"sha256": assets.sha256_of(path), "source": source.GetDescription(), "window": list(window)}
        with atomic_output(Path(f"{path}.json")) as tmp:
            Path(tmp).write_text(json.dumps(digest))
        return path


@dataclass(frozen=True)
class WindowRead:
    """One asset of one scene to bring into the cache; ``window`` None = not known before opening the COG."""

    scene: Scene
    asset: Asset
    window: tuple[int, int, int, int] | None


def planned_window(scene: Scene, asset: Asset, grid: Grid) -> tuple[int, int, int, int] | None:
    """The window from the item's metadata alone (``proj:shape`` and a resolution-aligned tile origin are not in
    every item: then None and the COG header decides)."""
    if asset.shape is None or asset.transform is None:
        return None
    epsg = asset.epsg or scene.epsg
    if epsg is None:
        return None
    return _window(asset.transform, (asset.shape[1], asset.shape[0]), bounds_in(grid, epsg))


def fetch_window(read: WindowRead, grid: Grid, cache: WindowCache, access: Access) -> tuple[Path | None, int]:
    """The cached window file of ``read`` (None when the asset does not cover the grid) and the bytes it cost
    (0 when it was cached). Raises FetchError for an unreadable, truncated or misplaced COG."""
    if read.window is not None:
        cached = cache.get(cache.path(read.scene, read.asset, read.window))
        if cached:
            return cached, 0
    with http_options(access):
        try:
            source = gdal.Open(gdal_path(read.asset.href, access.signing, access.collection))
            window = _checked_window(read, source, grid)
            if window is None:
                return None, 0
            path = cache.path(read.scene, read.asset, window)
            if cache.get(path):
                return path, 0
            cache.put(path, source, window)
        except RuntimeError as error:
            raise FetchError(f"Item {read.scene.id}, asset {read.asset.key} ({read.asset.href}) could not be read: "
                             f"{error}. The file may be missing or truncated on the server; run again later (what "
                             "was read is cached), or choose another STAC_API.") from None
    return path, os.path.getsize(path)


def _checked_window(read: WindowRead, source: gdal.Dataset, grid: Grid) -> tuple[int, int, int, int] | None:
    epsg = read.asset.epsg or read.scene.epsg
    crs = source.GetSpatialRef()
    if epsg and (crs is None or crs.IsSame(srs_of(epsg)) != 1):
        raise FetchError(f"Item {read.scene.id}, asset {read.asset.key}: the file is not in EPSG:{epsg}, the CRS its "
                         "item declares; this item's metadata cannot be trusted, so it is not read.")
    found = round(abs(source.GetGeoTransform()[1]), 3)
    if abs(found - read.asset.resolution_m) > 0.01 * read.asset.resolution_m:
        raise FetchError(f"Item {read.scene.id}, asset {read.asset.key}: the file has {found} m pixels, its item "
                         f"says {read.asset.resolution_m:g} m; not read.")
    wanted = bounds_in(grid, epsg) if epsg else grid.bounds
    return _window(source.GetGeoTransform(), (source.RasterXSize, source.RasterYSize), wanted)
