"""Search a STAC API for Sentinel-2 scenes over an extent, and read what the fetch needs from each item.

Named APIs (``STAC_APIS``), each with its Sentinel-2 L2A collection:

- ``earth-search``: Element 84's Earth Search v1, ``sentinel-2-c1-l2a`` (Collection 1), anonymous https COGs. It keeps
  ESA's digital numbers, the +1000 offset of processing baseline ≥ 04.00 included, and declares it per asset
  (``raster:bands`` ``offset: -0.1``, ``scale: 0.0001``). It lacks Nov 2016 – Nov 2019 and 2022.
- ``planetary-computer``: Microsoft's, ``sentinel-2-l2a``, the whole archive; its blobs need a SAS token, which GDAL
  asks for by itself (``/vsicurl?pc_url_signing=yes``).
- any other STAC API, by its URL.

Items are parsed as plain dicts, in both shapes: STAC 1.0 (``eo:bands``/``raster:bands``, ``proj:epsg``) and 1.1
(merged ``bands``, ``proj:code``). The search is pystac-client's (paging through ``next`` links); it sends the
``query`` or CQL2 ``filter`` on ``eo:cloud_cover`` only when the API's conformance lists that extension (some servers
answer 200 with no items to one they ignore) and always filters again here.
Items of one solar day (UTC time + longitude / 15 h) are one date (``group_by_solar_day``): the MGRS tiles of one
overpass.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .bands import SO2SAT_BANDS, normalise_band_name

#: pystac-client's oldest version with ``items_as_dicts`` and the timeout/retry settings used here. The QGIS "STAC
#: API Browser" plugin puts an older copy (0.3) on ``sys.path``, which must not be used.
MIN_PYSTAC_CLIENT = (0, 7)
#: Reflectance scale of the UInt16 digital numbers: reflectance = DN × 0.0001 (+ offset).
DN_SCALE = 0.0001
#: The offset that processing baseline 04.00 (25 January 2022) added to L1C and L2A digital numbers.
BASELINE_OFFSET_DN = -1000
MAX_ITEMS = 2000


class FetchError(ValueError):
    """The STAC search or an item cannot give the requested imagery; the message says why and what to do."""


@dataclass(frozen=True)
class StacApi:
    """A STAC API and the collection to search. ``signing``: how its asset URLs are signed ("" = not needed)."""

    name: str
    url: str
    collection: str
    signing: str = ""


STAC_APIS = {
    "earth-search": StacApi("earth-search", "https://earth-search.aws.element84.com/v1", "sentinel-2-c1-l2a"),
    "planetary-computer": StacApi("planetary-computer", "https://planetarycomputer.microsoft.com/api/stac/v1",
                                  "sentinel-2-l2a", signing="planetary-computer"),
}


def resolve_api(name_or_url: str, collection: str = "", parameter: str = "STAC_API") -> StacApi:
    """The named API (``STAC_APIS``) or an https/http STAC API URL; ``collection`` overrides the default.

    Raises FetchError for anything else, naming ``parameter`` (where the value was given).
    """
    text = (name_or_url or "earth-search").strip()
    if text in STAC_APIS:
        api = STAC_APIS[text]
        return StacApi(api.name, api.url, collection or api.collection, api.signing)
    if not re.match(r"^https?://", text):
        raise FetchError(f"{parameter}={text} is neither a named API ({', '.join(STAC_APIS)}) nor an http(s) URL of a "
                         "STAC API, e.g. https://earth-search.aws.element84.com/v1.")
    return StacApi(text, text.rstrip("/"), collection or "sentinel-2-c1-l2a")


@dataclass(frozen=True)
class Asset:
    """One band file of an item: its URL, native ground resolution (m), the offset in DN added to its pixels (0 or
    −1000), where that offset came from, and, when the item says, its size in bytes, pixel shape and CRS."""

    key: str
    href: str
    resolution_m: float
    offset_dn: int
    offset_source: str
    size_bytes: int | None = None
    shape: tuple[int, int] | None = None
    epsg: int | None = None
    #: GDAL geotransform (x0, xres, 0, y0, 0, −yres), from STAC's ``proj:transform`` (an affine in rasterio's order).
    transform: tuple[float, ...] | None = None


@dataclass
class Scene:
    """One STAC item: an MGRS tile of one overpass. ``bands``: So2Sat band name → Asset; ``scl``: the scene
    classification asset, if any. ``epsg``: the item's UTM CRS."""

    id: str
    datetime: dt.datetime
    solar_day: dt.date
    platform: str
    cloud_cover: float
    baseline: str
    product_type: str
    epsg: int | None
    bbox: tuple[float, float, float, float]
    nodata_percent: float
    bands: dict[str, Asset] = field(default_factory=dict)
    scl: Asset | None = None


def _band_object(asset: dict) -> dict:
    """The asset's one band description, merged from STAC 1.0 ``eo:bands``/``raster:bands`` or STAC 1.1 ``bands``
    (whose extension fields keep their prefix: ``raster:scale``, ``raster:offset``, ``eo:common_name``)."""
    merged: dict = {}
    for key in ("eo:bands", "raster:bands", "bands"):
        entries = asset.get(key) or []
        if len(entries) == 1 and isinstance(entries[0], dict):
            merged.update(entries[0])
    for key in list(merged):
        if key.startswith(("raster:", "eo:")):
            merged.setdefault(key.split(":", 1)[1], merged[key])
    return merged


def _epsg(obj: dict) -> int | None:
    if obj.get("proj:epsg"):
        return int(obj["proj:epsg"])
    code = str(obj.get("proj:code") or "")
    return int(code.split(":")[1]) if code.upper().startswith("EPSG:") else None


def _baseline_offset(baseline: str) -> int:
    try:
        return BASELINE_OFFSET_DN if float(baseline) >= 4.0 else 0
    except ValueError:
        return 0


def _asset(item_id: str, key: str, asset: dict, band: dict, baseline: str) -> Asset:
    """Raises FetchError for an asset on another reflectance scale than 0.0001 or with an unusable offset."""
    scale, offset = band.get("scale"), band.get("offset")
    if scale is not None and abs(float(scale) - DN_SCALE) > 1e-9:
        raise FetchError(f"Item {item_id}, asset {key}: its values are on the scale {scale}, not Sentinel-2's "
                         f"{DN_SCALE}; this collection is not Sentinel-2 digital numbers. Choose a Sentinel-2 L2A "
                         "collection (COLLECTION).")
    if offset is not None:
        offset_dn = round(float(offset) / DN_SCALE)
        if offset_dn not in (0, BASELINE_OFFSET_DN):
            raise FetchError(f"Item {item_id}, asset {key} declares the offset {offset}, neither 0 nor the "
                             f"{BASELINE_OFFSET_DN * DN_SCALE} of processing baseline 04.00; not read.")
        source = "asset metadata"
    else:
        offset_dn, source = _baseline_offset(baseline), f"processing baseline {baseline}"
    transform = asset.get("proj:transform") or []
    resolution = band.get("spatial_resolution") or asset.get("gsd") or (abs(transform[0]) if transform else 10.0)
    shape = tuple(asset["proj:shape"]) if len(asset.get("proj:shape") or []) == 2 else None
    geotransform = None
    if len(transform) >= 6:
        a, b, c, d, e, f = (float(v) for v in transform[:6])
        geotransform = (c, a, b, f, d, e)
    return Asset(key, asset["href"], float(resolution), offset_dn, source, asset.get("file:size"), shape,
                 _epsg(asset), geotransform)


def _is_raster(asset: dict) -> bool:
    kind, href = str(asset.get("type", "")).lower(), str(asset.get("href", "")).lower().split("?")[0]
    return "tiff" in kind or href.endswith((".tif", ".tiff"))


def parse_item(item: dict) -> Scene:
    """A Scene from a STAC item dict. Band assets are found by their band name (``B04``, ``B8A``), the SCL by key.

    Raises FetchError when an asset is on another scale or declares an unknown offset.
    """
    props = item.get("properties", {})
    when = dt.datetime.fromisoformat(str(props["datetime"]).replace("Z", "+00:00"))
    west, south, east, north = (float(v) for v in (item.get("bbox") or (0, 0, 0, 0))[:4])
    bbox = (west, south, east, north)
    baseline = str(props.get("s2:processing_baseline", "unknown"))
    scene = Scene(item["id"], when, (when + dt.timedelta(hours=(bbox[0] + bbox[2]) / 2 / 15)).date(),
                  str(props.get("platform", "unknown")), float(props.get("eo:cloud_cover", 100.0)), baseline,
                  str(props.get("s2:product_type", "")), _epsg(props), bbox,
                  float(props.get("s2:nodata_pixel_percentage", 0.0)))
    for key, asset in item.get("assets", {}).items():
        if not _is_raster(asset):
            continue
        band = _band_object(asset)
        if key.lower() in ("scl", "scl_20m"):
            scene.scl = _asset(scene.id, key, asset, {"offset": 0}, baseline)  # classes, not reflectance
            continue
        name = normalise_band_name(str(band.get("name", "")))
        if name in SO2SAT_BANDS:
            parsed = _asset(scene.id, key, asset, band, baseline)
            if name not in scene.bands or parsed.resolution_m < scene.bands[name].resolution_m:
                scene.bands[name] = parsed
    return scene


def group_by_solar_day(scenes: Iterable[Scene]) -> dict[dt.date, list[Scene]]:
    """Scenes by solar day, in date order; within a day, the most complete tile first."""
    days: dict[dt.date, list[Scene]] = {}
    for scene in scenes:
        days.setdefault(scene.solar_day, []).append(scene)
    return {day: sorted(days[day], key=lambda s: (s.nodata_percent, s.id)) for day in sorted(days)}


def _client(api: StacApi, proxy: str | None, timeout_s: float) -> Any:
    """pystac-client's Client for ``api``, with timeouts, retries with backoff on 429/5xx, and ``proxy``."""
    import pystac_client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    version = tuple(int(p) for p in re.findall(r"\d+", pystac_client.__version__)[:2])
    if version < MIN_PYSTAC_CLIENT:
        raise FetchError(f"pystac-client {pystac_client.__version__} was imported from {pystac_client.__file__}, "
                         "older than this plugin needs (another plugin puts its own copy first); reinstall the "
                         "DF4LCZ dependencies or disable that plugin.")
    retry = Retry(total=4, backoff_factor=1.0, status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None)
    stac_io = StacApiIO(timeout=timeout_s, max_retries=retry)
    if proxy:
        stac_io.session.proxies.update({"http": proxy, "https": proxy})
    return pystac_client.Client.open(api.url, stac_io=stac_io, timeout=timeout_s)


def _cloud_filter(client: Any, max_cloud: float) -> dict:
    """The server-side cloud filter, only in a form the API says it supports."""
    from pystac_client.conformance import ConformanceClasses

    if client.conforms_to(ConformanceClasses.QUERY):
        return {"query": {"eo:cloud_cover": {"lte": max_cloud}}}
    if client.conforms_to(ConformanceClasses.FILTER):
        return {"filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud]},
                "filter_lang": "cql2-json"}
    return {}


def _unreachable(api: StacApi, error: Exception) -> FetchError:
    others = ", ".join(name for name in STAC_APIS if name != api.name)
    return FetchError(f"The STAC API {api.url} could not be searched ({type(error).__name__}: {error}), after "
                      f"retries. Try again later, or another source (STAC_API={others}).")


def search(api: StacApi, bbox: tuple[float, float, float, float], start: dt.date, end: dt.date, max_cloud: float,
           info: Callable[[str], None] = print, proxy: str | None = None, timeout_s: float = 60.0) -> list[Scene]:
    """The Sentinel-2 scenes of ``api.collection`` whose bbox meets ``bbox`` (WGS 84 degrees: west, south, east,
    north), acquired from ``start`` to ``end`` (whole days, UTC) with ``eo:cloud_cover`` ≤ ``max_cloud`` (%) and all
    10 So2Sat bands. Pages of 100 items; at most MAX_ITEMS. ``timeout_s``: of one request (retried 4 times with
    backoff on connection errors, 429 and 5xx).

    Raises FetchError when the API cannot be reached (after retries), lacks the collection, or finds nothing.
    """
    import requests
    from pystac_client.exceptions import APIError

    try:
        client = _client(api, proxy, timeout_s)
        extra = _cloud_filter(client, max_cloud)
        found = client.search(collections=[api.collection], bbox=list(bbox), limit=100, max_items=MAX_ITEMS,
                              datetime=f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z", **extra)
        items = []
        for page in found.pages_as_dicts():
            items += page.get("features", [])
            info(f"STAC search of {api.collection} at {api.url}: {len(items)} item(s) so far")
    except (APIError, requests.RequestException, OSError) as error:
        raise _unreachable(api, error) from None
    return _select(items, api, bbox, start, end, max_cloud)


def _select(items: list[dict], api: StacApi, bbox: tuple[float, float, float, float], start: dt.date, end: dt.date,
            max_cloud: float) -> list[Scene]:
    """The found items checked again here: over ``bbox``, cloud cover, all 10 bands. Raises FetchError if none."""
    scenes = [parse_item(item) for item in items if _meets(item, bbox)]
    clear = [s for s in scenes if s.cloud_cover <= max_cloud]
    kept = [s for s in clear if not set(SO2SAT_BANDS) - set(s.bands)]
    if clear and not kept:
        lacking = sorted({b for s in clear for b in set(SO2SAT_BANDS) - set(s.bands)}, key=SO2SAT_BANDS.index)
        raise FetchError(f"The {len(clear)} item(s) of {api.collection} ({api.url}) over the extent from {start} to "
                         f"{end} lack the band asset(s) {', '.join(lacking)} (e.g. {clear[0].id}); the LCZ models "
                         "need all 10 of B2 … B12. Choose a Sentinel-2 L2A collection with every band (COLLECTION).")
    if not kept:
        raise FetchError(f"No Sentinel-2 scene of {api.collection} ({api.url}) covers the extent from {start} to "
                         f"{end} with scene cloud cover ≤ {max_cloud:g} % ({len(items)} item(s) found before the "
                         "cloud check). Widen the dates, raise MAX_SCENE_CLOUD, or check that the extent "
                         "is on land or coast (Sentinel-2 does not image the open sea).")
    return kept


def _meets(item: dict, bbox: tuple[float, float, float, float]) -> bool:
    box = item.get("bbox") or [-180, -90, 180, 90]
    return box[0] <= bbox[2] and bbox[0] <= box[2] and box[1] <= bbox[3] and bbox[1] <= box[3]
