"""The loopback STAC servers of tests/stac_servers.py themselves: pystac-client pages through the items of the real
``rustac serve`` (bbox and datetime applied, ``query`` silently ignored: the trap a client must avoid), and GDAL reads a
window of a served COG through ``/vsicurl/`` with range requests only, values = the real scene's DN + 1000. The
access log is shown to see the directory listing that GDAL makes without ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``."""

import numpy as np
import pystac_client
from pystac_client.warnings import DoesNotConformTo
import pytest
from osgeo import gdal

from df4lcz_plugin.sentinel2.cog_windows import thread_config
from stac_servers import CLEAR_DATE, CLOUDY_DATE, DN_OFFSET, REJECTED_DATE, stac_scene  # noqa: F401 (the fixture)

JUNE = "2024-06-01/2024-06-30"
#: A 1000 × 1000 px window (column, row, columns, rows) of the west tile's 10 m grid: 2 of its 1024² COG tiles.
WINDOW = (0, 500, 1000, 1000)
LEAN = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}


@pytest.mark.timeout(120)
def test_search_pages_through_six_items_of_three_dates(stac_scene):
    client = pystac_client.Client.open(stac_scene.api_url)
    search = client.search(collections=[stac_scene.collection], bbox=stac_scene.extent_lonlat, datetime=JUNE,
                           limit=2, max_items=10)
    pages = list(search.pages())
    assert [len(page.items) for page in pages] == [2, 2, 2]  # three pages, through the API's `next` links
    dates = {}
    for item in (item for page in pages for item in page.items):
        dates.setdefault(item.datetime.date().isoformat(), set()).add(item.properties["grid:code"])
        assert item.assets["red"].href.startswith(stac_scene.cog_url + "/sentinel-2-c1-l2a/18/S/")
    assert dates == {date: {"MGRS-18SVG", "MGRS-18SWG"} for date in (CLEAR_DATE, CLOUDY_DATE, REJECTED_DATE)}
    one_day = client.search(collections=[stac_scene.collection], bbox=stac_scene.extent_lonlat, datetime=CLEAR_DATE)
    assert sorted(item.id for item in one_day.items()) == sorted(item["id"] for item in stac_scene.items[CLEAR_DATE])
    west_only = client.search(collections=[stac_scene.collection], bbox=(-75.72, 37.6, -75.71, 37.61), datetime=JUNE)
    assert {item.properties["grid:code"] for item in west_only.items()} == {"MGRS-18SVG"}
    with pytest.warns(DoesNotConformTo, match="QUERY"):  # pystac-client warns, sends it, gets 200 and no features
        trap = client.search(collections=[stac_scene.collection], datetime=JUNE, query={"eo:cloud_cover": {"lt": 50}})
    assert list(trap.items()) == []


def _read_window(href: str, options: dict[str, str]) -> np.ndarray:
    """``WINDOW`` of ``/vsicurl/href`` copied by ``gdal.Translate`` (which, unlike a band's ReadAsArray, looks for
    sidecar files as gdal.Warp does) with GDAL ``options``, after emptying GDAL's /vsicurl/ cache."""
    gdal.VSICurlClearCache()
    with thread_config(options):
        return gdal.Translate("", f"/vsicurl/{href}", format="MEM", srcWin=WINDOW).ReadAsArray()


@pytest.mark.timeout(120)
def test_vsicurl_reads_a_window_with_range_requests_only(stac_scene):
    href = stac_scene.items[CLEAR_DATE][0]["assets"]["red"]["href"]
    path = href.removeprefix(stac_scene.cog_url)
    mark = stac_scene.log_mark()
    window = _read_window(href, LEAN)
    lean = stac_scene.requests_since(mark)
    original = gdal.Open(str(stac_scene.band_folder / "s2_B04.jp2")).ReadAsArray(*WINDOW)
    assert original.min() > 0 and window.dtype == np.uint16
    np.testing.assert_array_equal(window, original + DN_OFFSET)
    assert {(r.method, r.path, r.status) for r in lean} == {("HEAD", path, 200), ("GET", path, 206)}, lean
    listing = path.rsplit("/", 1)[0] + "/"
    for options, more_than in (({"CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}, 0), ({}, 10)):
        mark = stac_scene.log_mark()
        _read_window(href, options)
        requests = stac_scene.requests_since(mark)
        extra = [r for r in requests if r.path != path]
        assert len(requests) - len(lean) == len(extra) > more_than, requests
        assert extra[0] == ("GET", listing, 200) and all(r[::2] == ("HEAD", 404) for r in extra[1:]), extra


def _local_window(scene, date: str, tile: int, key: str, rect: tuple[float, ...]) -> np.ndarray:
    """Pixels of ``rect`` (metres, EPSG:32618) in the COG of asset ``key`` of tile ``tile`` (0 west, 1 east) on
    ``date``, read from ``cog_root`` directly."""
    href = scene.items[date][tile]["assets"][key]["href"]
    path = scene.cog_root / href.removeprefix(scene.cog_url + "/")
    xmin, ymin, xmax, ymax = rect
    return gdal.Translate("", str(path), format="MEM", projWin=[xmin, ymax, xmax, ymin]).ReadAsArray()


@pytest.mark.timeout(120)
def test_tiles_share_their_overlap_and_date_2_has_the_synthetic_cloud(stac_scene):
    (west, east), (_, ymin, _, ymax) = stac_scene.tiles, stac_scene.extent_utm
    overlap = (east.x_range_utm[0], ymin, west.x_range_utm[1], ymax)
    for date in (CLEAR_DATE, CLOUDY_DATE):
        for key in ("red", "nir08", "scl"):
            np.testing.assert_array_equal(_local_window(stac_scene, date, 0, key, overlap),
                                          _local_window(stac_scene, date, 1, key, overlap))
    rects = (stac_scene.cloud_rect_utm, stac_scene.shadow_rect_utm)
    cloud, shadow = ((east.x_range_utm[0], *rect[1:]) for rect in rects)  # their parts in the east tile
    assert set(np.unique(_local_window(stac_scene, CLOUDY_DATE, 1, "scl", cloud))) == {9}
    assert set(np.unique(_local_window(stac_scene, CLOUDY_DATE, 1, "scl", shadow))) == {3}
    assert set(np.unique(_local_window(stac_scene, CLEAR_DATE, 1, "scl", cloud))) <= {4, 5, 6}
    bright = _local_window(stac_scene, CLOUDY_DATE, 1, "red", cloud)
    assert bright.min() >= 6000 + DN_OFFSET and bright.max() <= 9000 + DN_OFFSET
    dark, clear = (_local_window(stac_scene, date, 1, "red", shadow) for date in (CLOUDY_DATE, CLEAR_DATE))
    np.testing.assert_array_equal(dark, (clear - DN_OFFSET) // 3 + DN_OFFSET)
    assert [item["properties"]["eo:cloud_cover"] for item in stac_scene.items[REJECTED_DATE]] == [95.0, 95.0]
