"""Fetch the Sentinel-2 stack of an extent from a STAC API: ``df4lcz:sentinel2fetch`` and the command line.

The output is what ``sentinel2stack`` (one date) or ``sentinel2composite`` (several) write: 10 bands in So2Sat order
(B2 … B12), UInt16 reflectance × 10000, nodata 0, a per-dataset mask band (0 = no data, cloud or shadow), on a 10 m
grid of the extent's UTM zone whose pixel edges are multiples of 10 m, as every MGRS tile's 10 m grid is, so the
10 m bands are taken as they are. It covers the extent plus 160 m on each side (``CONTEXT_MARGIN_M``), so that a
classification of the extent has the 320 m patch of every cell. The 20 m bands are resampled bilinearly by a GDAL
VRT, as ``sentinel2stack`` does.

Steps (``fetch_sentinel2``):
1. Search (``stac.search``): the items over the extent in the date range, scene cloud cover ≤ MAX_SCENE_CLOUD.
   Items of one solar day are one date; their tiles are mosaicked (tiles of another UTM zone are warped).
2. Screening: the SCL window of every date (kilobytes) gives its clear share inside the extent (SCL not 0 no data,
   1 saturated, 3 cloud shadow, 8/9 cloud, 10 cirrus). Dates below MIN_CLEAR are dropped before any band is read;
   the clearest MAX_DATES are kept.
3. Budget: the expected megabytes (from the items' ``file:size`` and the COG tiles the window touches) are logged,
   and a run above MAX_DOWNLOAD_MB is refused before any band is read.
4. Reading: every band window, in parallel, through ``cog_windows`` (``/vsicurl/``, cached and checked).
5. Writing: the offset declared by each asset (or implied by its processing baseline) is removed, clipped at 1 so
   that only true no data stays 0, as ``sentinel2stack`` does. One date is written as the output; several are
   written to a scratch folder and combined by the composite engine (``composite.build_composite``).
The output's metadata records the API, collection, items, dates, platforms, baselines, the offset removed and the
processing level (Level-2A for L2A collections).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal, osr
from scipy.ndimage import binary_dilation

from ..runtime.feedback import Feedback
from ..runtime.kill_points import kill_point
from ..runtime.outputs import atomic_output, scratch_folder
from .bands import SO2SAT_BANDS
from .checks import utm_epsg
from .clouds import CLOUD, SHADOW, SNOW, scl_classes
from .cog_windows import Access, Grid, WindowCache, WindowRead, fetch_window, planned_window, srs_of
from .composite import build_composite
from .stac import Asset, FetchError, Scene, StacApi, group_by_solar_day, search
from .stack import add_mask_band, create_stack_raster, remove_offset

gdal.UseExceptions()

MODES = ("scl", "none")
#: SCL values that are not a clear observation: 0 no data, 1 saturated or defective, 3 cloud shadow, 8 and 9 cloud
#: of medium and high probability, 10 thin cirrus (snow, 11, is kept, as ``sentinel2stack`` keeps it).
NOT_CLEAR_SCL = (0, 1, 3, 8, 9, 10)
#: Largest side of an extent, km: a 110 km MGRS tile's worth. Larger areas: the command line, per tile.
MAX_SIDE_KM = 110.0
#: The COG tile side of Earth Search's and Planetary Computer's Sentinel-2 files, px; used for the estimate only.
COG_BLOCK_PX = 1024
PARALLEL_READS = 4
#: Added around the extent on each side: half the 320 m patch a 100 m cell is classified from, so that classifying
#: the extent from the stack maps every cell of it, the border ones included.
CONTEXT_MARGIN_M = 160.0


@dataclass
class FetchRequest:
    """What to fetch. ``extent``: (xmin, ymin, xmax, ymax) in ``extent_crs`` (any CRS GDAL knows: WKT, "EPSG:n");
    ``start``/``end``: acquisition dates, inclusive; ``max_scene_cloud``: % (the items' ``eo:cloud_cover``);
    ``min_clear``: % of the extent clear in a date's SCL; ``max_download_mb``: refuse above this estimate;
    ``epsg``: output CRS (default: the UTM zone of the extent's centre); ``proxy``: an http(s) proxy URL;
    ``timeout_s``: of one HTTP request, seconds."""

    api: StacApi
    extent: tuple[float, float, float, float]
    extent_crs: str
    start: dt.date
    end: dt.date
    max_scene_cloud: float = 50.0
    cloud_mask: str = "scl"
    max_dates: int = 3
    min_clear: float = 50.0
    max_download_mb: float = 1000.0
    epsg: int | None = None
    proxy: str | None = None
    timeout_s: float = 60.0


@dataclass
class Date:
    """One solar day: its scenes (tiles) and, after screening, its clear and no-data shares of the extent (%)."""

    day: dt.date
    scenes: list[Scene]
    clear_percent: float = 100.0
    nodata_percent: float = 0.0
    windows: dict = field(default_factory=dict)
    #: The date's SCL on the grid (uint8 values, 0 = no data), once screened.
    scl: np.ndarray | None = None


Bounds = tuple[float, float, float, float]


def _wgs84_bbox(source: osr.SpatialReference, extent: Bounds) -> Bounds:
    """The extent's longitude/latitude bounding box. Raises FetchError when the extent's numbers are not a place in
    its CRS (projected metres given as degrees, the usual slip)."""
    try:
        bbox = tuple(osr.CoordinateTransformation(source, srs_of(4326)).TransformBounds(*extent, 21))
    except RuntimeError:
        bbox = (math.inf,) * 4
    if not (all(map(math.isfinite, bbox)) and -180 <= bbox[0] <= bbox[2] <= 180 and -90 <= bbox[1] <= bbox[3] <= 90):
        name = source.GetName() or "its CRS"
        raise FetchError(f"EXTENT {tuple(extent)} is not a place in {name}: its numbers look like another CRS's (UTM "
                         "metres given as longitude and latitude?). Give the extent with its own CRS (on the command "
                         "line: --extent-crs, e.g. EPSG:32618 for UTM zone 18N; the default is EPSG:4326).")
    return bbox


def plan_grid(request: FetchRequest) -> tuple[Grid, Bounds, Bounds]:
    """(the 10 m target grid: the extent plus CONTEXT_MARGIN_M, the extent's WGS 84 bbox, the extent in the grid's
    CRS). Raises FetchError for an empty or too large extent."""
    source = osr.SpatialReference()
    source.SetFromUserInput(request.extent_crs)
    source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    xmin, ymin, xmax, ymax = request.extent
    if not (xmax > xmin and ymax > ymin):
        raise FetchError(f"EXTENT {request.extent} is empty; draw the area to map.")
    bbox = _wgs84_bbox(source, request.extent)
    epsg = request.epsg or utm_epsg((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    to_target = osr.CoordinateTransformation(source, srs_of(epsg))
    x0, y0, x1, y1 = to_target.TransformBounds(xmin, ymin, xmax, ymax, 21)
    m = CONTEXT_MARGIN_M
    bounds = (math.floor((x0 - m) / 10) * 10.0, math.floor((y0 - m) / 10) * 10.0, math.ceil((x1 + m) / 10) * 10.0,
              math.ceil((y1 + m) / 10) * 10.0)
    side_km = max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / 1000
    if side_km > MAX_SIDE_KM:
        raise FetchError(f"EXTENT is {side_km:.0f} km a side, more than one fetch takes ({MAX_SIDE_KM:g} km). Map a "
                         f"smaller extent; map a larger region in blocks of up to {MAX_SIDE_KM:g} km, for example "
                         "with the command line on a Dask cluster (python3 -m df4lcz_plugin classify --stac … "
                         "--workers N), one run per block.")
    return Grid(epsg, bounds), bbox, (x0, y0, x1, y1)


def _on_grid(path: str, scene_epsg: int, grid: Grid, resample: str) -> gdal.Dataset:
    """A raster on the target grid: a VRT in the same CRS (as ``sentinel2stack`` resamples), else warped."""
    if scene_epsg == grid.epsg:
        return gdal.BuildVRT("", [path], outputBounds=grid.bounds, xRes=grid.pixel_m, yRes=grid.pixel_m,
                             resampleAlg=resample)
    return gdal.Warp("", path, format="VRT", dstSRS=grid.wkt, outputBounds=grid.bounds, xRes=grid.pixel_m,
                     yRes=grid.pixel_m, resampleAlg=resample, srcNodata=0, dstNodata=0)


def _dn(ds: gdal.Dataset, offset_dn: int | None) -> np.ndarray:
    """A window's values as int32; with ``offset_dn``, that offset removed (clipped at 1, 0 stays no data)."""
    dn = ds.ReadAsArray().astype(np.int32)
    return dn if offset_dn is None else remove_offset(dn, offset_dn)


def _native_mosaic(windows: list[tuple[str, int | None]], name: str) -> str:
    """The windows of tiles in one CRS, mosaicked on their common native grid (first with data wins) into the
    in-memory GeoTIFF ``name``: resampling then sees across the tiles' seam as it sees inside one file."""
    datasets = [(gdal.Open(path), offset) for path, offset in windows]
    first = datasets[0][0]
    gt = first.GetGeoTransform()
    boxes = [(ds.GetGeoTransform()[0], ds.GetGeoTransform()[3], ds.RasterXSize, ds.RasterYSize) for ds, _ in datasets]
    x0, y0 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    cols = max(round((b[0] - x0) / gt[1]) + b[2] for b in boxes)
    rows = max(round((y0 - b[1]) / -gt[5]) + b[3] for b in boxes)
    out = np.zeros((rows, cols), np.int32)
    for (ds, offset), box in zip(datasets, boxes):
        col, row = round((box[0] - x0) / gt[1]), round((y0 - box[1]) / -gt[5])
        part = out[row:row + box[3], col:col + box[2]]
        part[:] = np.where(part == 0, _dn(ds, offset), part)
    mosaic = gdal.GetDriverByName("GTiff").Create(name, cols, rows, 1, first.GetRasterBand(1).DataType)
    mosaic.SetGeoTransform((x0, gt[1], 0.0, y0, 0.0, gt[5]))
    mosaic.SetProjection(first.GetProjection())
    mosaic.GetRasterBand(1).WriteArray(out)
    mosaic = None
    return name


def _aligned(a: str, b: str) -> bool:
    """Whether two windows' pixel grids coincide (same pixel size, origins a whole number of pixels apart), as
    the grids of MGRS tiles of one UTM zone do."""
    ga, gb = gdal.Open(a).GetGeoTransform(), gdal.Open(str(b)).GetGeoTransform()
    steps = ((gb[0] - ga[0]) / ga[1], (gb[3] - ga[3]) / ga[5])
    return ga[1] == gb[1] and ga[5] == gb[5] and all(abs(v - round(v)) < 1e-6 for v in steps)


def _mosaic(date: Date, key: str, grid: Grid, resample: str, offset: bool) -> np.ndarray:
    """(height, width) of one band (or ``scl``) of a date on the grid, ``resample``d: the tiles in the grid's CRS
    mosaicked at their native resolution first, then tiles of other UTM zones warped into the gaps. With
    ``offset``, each tile's offset removed (clipped at 1, 0 stays no data)."""
    here: list[tuple[tuple[str, int | None], int]] = []
    elsewhere: list[tuple[tuple[str, int | None], int]] = []
    for scene in date.scenes:
        path = date.windows.get((scene.id, key))
        if path is not None:
            window = (str(path), _asset(scene, key).offset_dn if offset else None)
            same_grid = (scene.epsg or grid.epsg) == grid.epsg and (not here or _aligned(here[0][0][0], path))
            (here if same_grid else elsewhere).append((window, scene.epsg or grid.epsg))
    out = np.zeros((grid.height, grid.width), np.int32)
    if here:
        name = f"/vsimem/df4lcz_fetch_{uuid.uuid4().hex}.tif"
        try:
            out = _on_grid(_native_mosaic([w for w, _ in here], name), grid.epsg, grid, resample).ReadAsArray()
            out = out.astype(np.int32)
        finally:
            gdal.Unlink(name)
    for (path, offset_dn), epsg in elsewhere:
        out = np.where(out == 0, _dn(_on_grid(path, epsg, grid, resample), offset_dn), out)
    return out


def _asset(scene: Scene, key: str) -> Asset:
    """The asset of band ``key`` of ``scene``, or its SCL for ``scl`` (asked for only where the scene has one)."""
    asset = scene.scl if key == "scl" else scene.bands[key]
    if asset is None:
        raise FetchError(f"Scene {scene.id} has no SCL asset.")
    return asset


def _estimate_bytes(read: WindowRead) -> float:
    """Bytes a window costs: the COG tiles it touches × the file's bytes per pixel (×2 raw UInt16 without
    ``file:size``); the window as a whole when it is not known before opening."""
    asset, window = read.asset, read.window
    if window is None:
        side = 1000 * 10 / asset.resolution_m
        return side * side * 2
    touched = ((window[0] + window[2] - 1) // COG_BLOCK_PX - window[0] // COG_BLOCK_PX + 1) * \
              ((window[1] + window[3] - 1) // COG_BLOCK_PX - window[1] // COG_BLOCK_PX + 1)
    pixels = touched * COG_BLOCK_PX * COG_BLOCK_PX
    if asset.size_bytes and asset.shape:
        pixels = min(pixels, asset.shape[0] * asset.shape[1])  # a small file is read whole at most
        return pixels * asset.size_bytes / (asset.shape[0] * asset.shape[1] * 4 / 3)  # overviews add about 1/3
    return pixels * 2


class _Reader:
    """Brings windows into the cache, several at a time, with progress, cancel and the megabytes so far."""

    def __init__(self, request: FetchRequest, grid: Grid, cache: WindowCache, feedback: Feedback):
        self.request, self.grid, self.cache, self.feedback = request, grid, cache, feedback
        self.downloaded = 0

    def reads(self, date: Date, keys: tuple[str, ...]) -> list[WindowRead]:
        return [WindowRead(scene, _asset(scene, key), planned_window(scene, _asset(scene, key), self.grid))
                for scene in date.scenes for key in keys if key != "scl" or scene.scl is not None]

    def cached(self, read: WindowRead) -> bool:
        if read.window is None:
            return False
        return self.cache.get(self.cache.path(read.scene, read.asset, read.window)) is not None

    def run(self, jobs: list[tuple[Date, str, WindowRead]], what: str, span: tuple[float, float]) -> None:
        if not jobs:
            return
        request = self.request
        access = Access(request.api.signing, request.api.collection, request.proxy, request.timeout_s)
        with ThreadPoolExecutor(PARALLEL_READS) as pool:
            futures = {pool.submit(fetch_window, read, self.grid, self.cache, access): (date, key, read)
                       for date, key, read in jobs}
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    path, cost = future.result()
                    date, key, read = futures[future]
                    date.windows[(read.scene.id, key)] = path
                    self.downloaded += cost
                    self.feedback.progress(span[0] + (span[1] - span[0]) * done / len(jobs))
                    self.feedback.info(f"{what}: {date.day} {key} of {read.scene.id} ({done}/{len(jobs)}; "
                                       f"{self.downloaded / 1e6:.1f} MB downloaded so far)")
                    self.feedback.check_canceled()
            finally:
                for future in futures:
                    future.cancel()


def _screen(dates: list[Date], reader: _Reader, grid: Grid, feedback: Feedback) -> None:
    """Each date's clear and no-data shares of the grid, from its SCL windows."""
    reader.run([(d, "scl", r) for d in dates for r in reader.reads(d, ("scl",))], "Cloud screening (SCL)",
               (0.0, 0.15))
    for date in dates:
        scl = date.scl = _mosaic(date, "scl", grid, "nearest", offset=False)
        date.clear_percent = round(float(100 * (~np.isin(scl, NOT_CLEAR_SCL)).mean()), 2)
        date.nodata_percent = round(float(100 * (scl == 0).mean()), 2)
        feedback.info(f"{date.day}: {date.clear_percent} % of the extent clear, {date.nodata_percent} % no data "
                      f"({', '.join(s.id for s in date.scenes)})")


def choose_dates(request: FetchRequest, scenes: list[Scene], reader: _Reader, grid: Grid,
                 feedback: Feedback) -> list[Date]:
    """The dates to read: screened by SCL (CLOUD_MASK=scl, for the items that have one), the clearest
    ``max_dates`` in date order. Raises FetchError when none is clear enough."""
    dates = [Date(day, tiles) for day, tiles in group_by_solar_day(scenes).items()]
    if request.cloud_mask == "scl":
        if any(s.scl is None for d in dates for s in d.scenes):
            feedback.warning("Some items have no SCL asset: their dates are screened by scene cloud cover only, "
                             "and their clouds are not masked.")
        _screen(dates, reader, grid, feedback)
        usable = [d for d in dates if d.clear_percent >= request.min_clear]
        if not usable:
            best = max(dates, key=lambda d: d.clear_percent)
            raise FetchError(f"No date from {request.start} to {request.end} has {request.min_clear:g} % of the "
                             f"extent clear (the best, {best.day}, has {best.clear_percent} %). Widen the dates, "
                             "or lower MIN_CLEAR (a composite of several dates fills gaps).")
        dates = usable
    ranked = sorted(dates, key=lambda d: (-d.clear_percent, min(s.cloud_cover for s in d.scenes), d.day))
    return sorted(ranked[:request.max_dates], key=lambda d: d.day)


def _band_reads(dates: list[Date], reader: _Reader) -> list[tuple[Date, str, WindowRead]]:
    """(date, band, read) of every band window of ``dates``, in So2Sat band order."""
    return [(d, band, r) for d in dates for band in SO2SAT_BANDS for r in reader.reads(d, (band,))]


def _budget(request: FetchRequest, dates: list[Date], reader: _Reader, feedback: Feedback) -> list:
    """The band reads of the chosen dates, after logging (and checking) what they are expected to cost."""
    jobs = _band_reads(dates, reader)
    uncached = [r for _, _, r in jobs if not reader.cached(r)]
    megabytes = sum(_estimate_bytes(r) for r in uncached) / 1e6
    feedback.info(f"{len(dates)} date(s) ({', '.join(str(d.day) for d in dates)}), {len(jobs)} band windows, "
                  f"{len(jobs) - len(uncached)} cached; about {megabytes:.0f} MB to download.")
    if megabytes > request.max_download_mb:
        raise FetchError(f"This fetch would download about {megabytes:.0f} MB, above MAX_DOWNLOAD_MB="
                         f"{request.max_download_mb:g}. Raise MAX_DOWNLOAD_MB, lower MAX_DATES or draw a smaller "
                         "extent. Nothing was downloaded but the SCL screening.")
    return jobs


def _processing_level(scenes: list[Scene], collection: str) -> str:
    types = {s.product_type.upper() for s in scenes}
    if types == {"S2MSI2A"} or (types <= {""} and "l2a" in collection.lower()):
        return "Level-2A"
    if types == {"S2MSI1C"} or (types <= {""} and "l1c" in collection.lower()):
        return "Level-1C"
    return "unknown"


def provenance(request: FetchRequest, dates: list[Date]) -> dict[str, str]:
    """The output's GDAL metadata: where and what it was fetched from, and what was done."""
    scenes = [s for d in dates for s in d.scenes]
    offsets = {b: sorted({s.bands[b].offset_dn for s in scenes}) for b in SO2SAT_BANDS}
    items = [{"id": s.id, "date": str(d.day), "datetime": s.datetime.isoformat(), "platform": s.platform,
              "processing_baseline": s.baseline, "offset_dn": s.bands["B2"].offset_dn,
              "offset_from": s.bands["B2"].offset_source, "clear_percent": d.clear_percent}
             for d in dates for s in d.scenes]
    return {
        "SOURCE": "",
        "PROCESSING_LEVEL": _processing_level(scenes, request.api.collection),
        "PROCESSING_BASELINE": ",".join(sorted({s.baseline for s in scenes})),
        "OFFSET_REMOVED": ",".join(str(v[0]) if len(v) == 1 else "per item" for v in offsets.values()),
        "STAC_API": request.api.url,
        "STAC_COLLECTION": request.api.collection,
        "STAC_ITEMS": json.dumps(items),
        "DATES": ",".join(str(d.day) for d in dates),
        "PLATFORMS": ",".join(sorted({s.platform for s in scenes})),
        "CLOUD_MASK_SOURCE": "SCL" if request.cloud_mask == "scl" else "none",
    }


def _write_date(date: Date, grid: Grid, path: str, metadata: dict, use_scl: bool) -> dict[str, float]:
    """One date's stack (bands, mask band) to ``path``; returns its cloud, shadow and snow % of valid pixels.

    The mask band hides the SCL's clouds and shadows and one 10 m pixel around them: bilinear resampling of the
    20 m bands spreads a cloud's values exactly that far beyond its 20 m SCL pixels."""
    classes = None
    if use_scl and date.scl is not None and all((s.id, "scl") in date.windows for s in date.scenes):
        classes = scl_classes(date.scl)  # as screened
    with atomic_output(path) as tmp:
        out = create_stack_raster(tmp, grid.width, grid.height, grid.geotransform, grid.wkt, metadata)
        valid = np.ones((grid.height, grid.width), bool)
        for index, band in enumerate(SO2SAT_BANDS, start=1):
            resample = "nearest" if date.scenes[0].bands[band].resolution_m <= grid.pixel_m else "bilinear"
            values = _mosaic(date, band, grid, resample, offset=True).astype(np.uint16)
            out.GetRasterBand(index).WriteArray(values)
            valid &= values != 0
            kill_point("band")
        shares = {"cloud_percent": 0.0, "shadow_percent": 0.0, "snow_percent": 0.0}
        if classes is not None:
            counts = np.bincount(classes[valid], minlength=SNOW + 1)
            for name, cls in (("cloud_percent", CLOUD), ("shadow_percent", SHADOW), ("snow_percent", SNOW)):
                shares[name] = round(float(100 * counts[cls] / max(valid.sum(), 1)), 2)
            clear = valid & ~binary_dilation(np.isin(classes, (CLOUD, SHADOW)), np.ones((3, 3), bool))
            if not clear[valid].all():
                add_mask_band(out)
                out.GetRasterBand(1).GetMaskBand().WriteArray(np.where(clear, 255, 0).astype(np.uint8))
        for key, value in shares.items():
            out.SetMetadataItem(key.upper(), str(value))
        out.FlushCache()
        out = None
    return shares


@dataclass
class FetchPlan:
    """What a fetch will read, decided before any band is read: the 10 m ``grid`` (the extent plus
    CONTEXT_MARGIN_M), the extent in the grid's CRS (xmin, ymin, xmax, ymax, metres), the chosen ``dates``
    (screened, their SCL on the grid), and the output's ``metadata``."""

    request: FetchRequest
    grid: Grid
    extent: tuple[float, float, float, float]
    dates: list[Date]
    metadata: dict[str, str]

    def light(self) -> FetchPlan:
        """The plan without what screening read (SCL arrays, window files): what a cluster's task is sent."""
        return FetchPlan(self.request, self.grid, self.extent, [Date(d.day, d.scenes) for d in self.dates],
                         self.metadata)

    def describe(self) -> dict:
        """A JSON-safe description: the API, collection, grid, cloud mask and, per date, the items' ids and band
        URLs (what a resumed run's tiles must have been computed from)."""
        return {"api": self.request.api.url, "collection": self.request.api.collection, "epsg": self.grid.epsg,
                "bounds": list(self.grid.bounds), "cloud_mask": self.request.cloud_mask,
                "dates": {str(d.day): {s.id: sorted(a.href for a in s.bands.values()) for s in d.scenes}
                          for d in self.dates}}


def plan_fetch(request: FetchRequest, cache: WindowCache, feedback: Feedback) -> tuple[FetchPlan, list]:
    """(the plan, the band reads it needs): search, SCL screening, the choice of dates and the budget (steps 1–3).
    Raises FetchError (nothing found, unreachable API, bad items, over budget), Canceled."""
    grid, bbox, extent = plan_grid(request)
    feedback.info(f"Output grid: EPSG:{grid.epsg}, {grid.width} × {grid.height} px of 10 m; search bbox {bbox}")
    scenes = search(request.api, bbox, request.start, request.end, request.max_scene_cloud, feedback.info,
                    request.proxy, request.timeout_s)
    reader = _Reader(request, grid, cache, feedback)
    dates = choose_dates(request, scenes, reader, grid, feedback)
    jobs = _budget(request, dates, reader, feedback)
    return FetchPlan(request, grid, extent, dates, provenance(request, dates)), jobs


def _write_dates(plan: FetchPlan, output: str | Path, feedback: Feedback, observations: str | Path | None) -> None:
    """The plan's dates, read into its windows, written to ``output``: one date as it is, several as their median
    composite (step 5)."""
    use_scl = plan.request.cloud_mask == "scl"
    if len(plan.dates) == 1:
        _write_date(plan.dates[0], plan.grid, str(output), plan.metadata, use_scl)
        return
    with scratch_folder(output) as scratch:
        stacks = [str(Path(scratch) / f"{d.day}.tif") for d in plan.dates]
        for date, stack in zip(plan.dates, stacks):
            _write_date(date, plan.grid, stack, dict(plan.metadata, DATES=str(date.day)), use_scl)
        build_composite(stacks, output, observations, feedback=feedback,
                        extra_metadata=dict(plan.metadata, COMPOSITE_INPUTS=""))


def fetch_sentinel2(request: FetchRequest, output: str | Path, feedback: Feedback | None = None,
                    cache: WindowCache | None = None, observations: str | Path | None = None) -> dict:
    """Fetch ``request`` and write the stack (one date) or median composite (several) to ``output`` (GeoTIFF).

    observations: optional GeoTIFF of clear observations per pixel (several dates only; written by the composite).
    Returns a summary dict: api, collection, processing_level, dates (day, items, clear %), megabytes downloaded,
    width, height, epsg. Raises FetchError (nothing found, unreachable API, bad items, over budget),
    Canceled; nothing is left half-written.
    """
    feedback = feedback or Feedback()
    cache = cache or WindowCache()
    check_outside_cache(cache, output, observations)
    plan, jobs = plan_fetch(request, cache, feedback)
    downloaded = fetch_plan(plan, jobs, output, cache, feedback, observations)
    grid, dates = plan.grid, plan.dates
    return {"api": request.api.url, "collection": request.api.collection,
            "processing_level": plan.metadata["PROCESSING_LEVEL"], "epsg": grid.epsg, "width": grid.width,
            "height": grid.height, "megabytes_downloaded": round(downloaded / 1e6, 2),
            "dates": [{"date": str(d.day), "items": [s.id for s in d.scenes], "clear_percent": d.clear_percent}
                      for d in dates]}


def fetch_plan(plan: FetchPlan, jobs: list, output: str | Path, cache: WindowCache, feedback: Feedback,
               observations: str | Path | None = None) -> int:
    """Read ``jobs`` (the band reads of ``plan_fetch``) and write the plan's stack or composite to ``output``
    (steps 4–5); returns the bytes downloaded."""
    reader = _Reader(plan.request, plan.grid, cache, feedback)
    reader.run(jobs, "Reading", (0.15, 0.9))
    _write_dates(plan, output, feedback, observations)
    feedback.progress(1.0)
    return reader.downloaded


def check_outside_cache(cache: WindowCache, *paths: str | Path | None) -> None:
    """Raise FetchError when an output path lies inside the window cache, whose files a fetch reads."""
    for path in paths:
        if path and Path(cache.root).resolve() in Path(path).resolve().parents:
            raise FetchError(f"{path} is inside the window cache ({cache.root}), whose files this fetch reads; "
                             "choose an output elsewhere.")


def fetch_part(plan: FetchPlan, grid: Grid, output: str | Path, cache: WindowCache) -> None:
    """Write the plan's stack or composite over ``grid``, a part of ``plan.grid`` on its pixel grid, to ``output``,
    reading only that part's windows: what one tile of ``classify --stac`` on a cluster reads. The part's pixels
    equal the whole fetch's wherever the part has a margin of 2 pixels or more around them (bilinear resampling and
    the mask's one-pixel dilation look that far)."""
    feedback = Feedback()
    dates = [Date(d.day, d.scenes) for d in plan.dates]
    part = FetchPlan(plan.request, grid, plan.extent, dates, plan.metadata)
    reader = _Reader(plan.request, grid, cache, feedback)
    if plan.request.cloud_mask == "scl":
        _screen(dates, reader, grid, feedback)  # each date's SCL on the part, for its mask
    reader.run(_band_reads(dates, reader), "Reading", (0.15, 0.9))
    _write_dates(part, output, feedback, None)


def grid_template(plan: FetchPlan) -> str:
    """An in-memory VRT of the plan's grid with the stack's 10 bands and metadata and no pixels (every value 0, no
    data): what ``classify`` opens for the grid and the processing level when the tiles of a cluster each fetch
    their own part (``fetch_part``). Its name depends on the plan alone, so a resumed run names it alike."""
    digest = hashlib.sha256(json.dumps(plan.describe(), sort_keys=True).encode()).hexdigest()[:16]
    path = f"/vsimem/df4lcz_stac/{digest}.vrt"
    grid = plan.grid
    ds = gdal.GetDriverByName("VRT").Create(path, grid.width, grid.height, len(SO2SAT_BANDS), gdal.GDT_UInt16)
    ds.SetGeoTransform(grid.geotransform)
    ds.SetProjection(grid.wkt)
    for index, band in enumerate(SO2SAT_BANDS, start=1):
        ds.GetRasterBand(index).SetDescription(band)
        ds.GetRasterBand(index).SetNoDataValue(0)
    ds.SetMetadata({"DF4LCZ_BANDS": ",".join(SO2SAT_BANDS), "REFLECTANCE_SCALE": "10000", **plan.metadata})
    ds = None
    return path
