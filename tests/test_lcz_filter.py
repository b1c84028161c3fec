"""The LCZ Generator's Gaussian filter (``df4lcz_plugin/lcz/lcz_filter.py``, ``df4lcz:lczfilter``).

The engine is checked against a slow, literal implementation of the rule written here from the issue's table
(LCZ Generator, ``create_lcz_map.py::_gaussian_filter``), not from the module; then through real QGIS on the real
WUDAPT map of Zaragoza."""

import json
import math
import shutil

import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import ZURICH, raster_copy, run_qgis_process
from df4lcz_plugin.runtime import assets
from df4lcz_plugin.lcz import legend
from df4lcz_plugin.lcz.lcz_filter import filter_lcz, pixel_size_m

ZARAGOZA = assets.fetch(assets.ZARAGOZA_LCZ)  # codes 1–17, nodata −999, EPSG:4326 (© M. Demuzere, WUDAPT)

#: The Generator's radius and σ in metres per LCZ code, copied from the issue's table.
TABLE = {1: (200, 100), **{c: (300, 150) for c in (2, 3, 4, 5, 6, 7, 9)}, 8: (500, 250), 10: (500, 250),
         **{c: (200, 75) for c in (11, 12, 13, 14, 16)}, 15: (300, 150), 17: (50, 25)}


def literal_filter(codes, pixel_x, pixel_y):
    """The rule, one cell and one neighbour at a time: the kernel reaches round-half-up(radius / pixel) cells
    along each axis; weights exp(−(dx² + dy²)/2σ²) in metres, divided by their sum over the whole kernel; cells
    outside the map and no-data cells count in no class; the highest smoothed value wins, ties (float rounding)
    keep the raw class, else the lowest code."""
    rows, cols = codes.shape
    out = np.zeros_like(codes)
    for r in range(rows):
        for c in range(cols):
            if codes[r, c] == 0:
                continue
            value = {}
            for code, (radius, sigma) in TABLE.items():
                hx, hy = math.floor(radius / pixel_x + 0.5), math.floor(radius / pixel_y + 0.5)
                total = sum(math.exp(-((i * pixel_x) ** 2 + (j * pixel_y) ** 2) / (2 * sigma ** 2))
                            for i in range(-hx, hx + 1) for j in range(-hy, hy + 1))
                value[code] = sum(math.exp(-(((c2 - c) * pixel_x) ** 2 + ((r2 - r) * pixel_y) ** 2) / (2 * sigma ** 2))
                                  for r2 in range(max(0, r - hy), min(rows, r + hy + 1))
                                  for c2 in range(max(0, c - hx), min(cols, c + hx + 1))
                                  if codes[r2, c2] == code) / total
            best = max(value.values())
            tied = [code for code in sorted(value) if value[code] >= best - 1e-13]
            out[r, c] = codes[r, c] if codes[r, c] in tied else tied[0]
    return out


def synthetic_map():
    """FIXTURE: a 12 × 12 map mixing every kernel size: a block of LCZ 2 with an LCZ 1 core, LCZ 8 and 10 strips,
    a channel of water (G) with an LCZ E cell, fields (D) with trees (A), scattered cells, and no-data cells."""
    rng = np.random.default_rng(26)
    codes = np.full((12, 12), 14, dtype=np.uint8)
    codes[0:5, 0:5] = 2
    codes[1:3, 1:3] = 1
    codes[6:8, 0:6] = 8
    codes[9:12, 0:4] = 10
    codes[:, 8] = 17
    codes[4, 8] = 15
    codes[2:4, 10:12] = 11
    codes[rng.integers(0, 12, 12), rng.integers(0, 12, 12)] = rng.choice([3, 6, 9, 12, 13, 16], 12)
    codes[5, 5] = codes[10, 10] = codes[0, 11] = 0
    return codes


def random_map():
    """FIXTURE: 14 × 14 cells of random codes 0–17: every cell a close contest, so that a wrong radius, σ or
    rounding changes some winners."""
    return np.random.default_rng(1).integers(0, 18, (14, 14)).astype(np.uint8)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fixture, pixels", [
    (synthetic_map, (100.0, 100.0)),  # G reaches 0.5 → 1 cell
    (synthetic_map, (30.0, 45.0)),    # kernels wider than the map
    (synthetic_map, (250.0, 250.0)),
    (random_map, (100.0, 100.0)),
    (random_map, (40.0, 40.0)),
    (random_map, (120.0, 150.0)),     # 300 m / 120 m = 2.5 → 3 cells
], ids=lambda v: v.__name__ if callable(v) else f"{v[0]:g}x{v[1]:g}m")
def test_filter_equals_the_rule_cell_for_cell(fixture, pixels):
    codes = fixture()
    filtered = filter_lcz(codes, *pixels)
    assert filtered.dtype == np.uint8
    expected = literal_filter(codes, *pixels)
    assert np.array_equal(filtered, expected), np.argwhere(filtered != expected)
    assert np.array_equal(filtered == 0, codes == 0)  # no data stays no data, and only there
    assert (filtered != codes).any()  # the fixture gives the filter something to do at each pixel size


@pytest.mark.timeout(60)
def test_hand_checked_cells():
    """At 100 m. An LCZ 10 cell alone in fields (D): its own weight 1/6.10² = 0.027 against D's 1 − 1/1.879² = 0.717
    → D. Alone in water it stays: G's kernel (50 m, σ 25 m) gives a neighbour exp(−8) = 3.4e-4 of the centre, so
    G reaches 0.0013 there against LCZ 10's 0.027. WUDAPT's 101–107 are LCZ A–G."""
    fields = np.full((11, 11), 14)
    fields[5, 5] = 10
    assert (filter_lcz(fields, 100, 100) == 14).all()
    water = np.full((11, 11), 17)
    water[5, 5] = 10
    assert np.array_equal(filter_lcz(water, 100, 100), water)
    assert np.array_equal(filter_lcz(np.where(fields == 14, 104, fields), 100, 100), filter_lcz(fields, 100, 100))


@pytest.mark.timeout(60)
def test_a_tie_goes_to_the_raw_class_else_the_lowest_code():
    """A single LCZ 2 cell between mirror images of LCZ 3 and LCZ 4 (same kernel): 3 and 4 tie exactly, above
    2's own 0.073, so the lowest code wins, whichever side it is on. A raw class cannot tie exactly (it alone holds
    the centre weight), so ``TIE`` only absorbs rounding: the LCZ 2 cell between two LCZ 2 cells stays."""
    row = np.array([[3, 3, 3, 2, 4, 4, 4]])
    assert filter_lcz(row, 100, 100)[0, 3] == 3
    assert filter_lcz(np.where(row == 3, 4, np.where(row == 4, 3, row)), 100, 100)[0, 3] == 3
    assert filter_lcz(np.array([[3, 3, 2, 2, 2, 4, 4]]), 100, 100)[0, 3] == 2


@pytest.mark.timeout(60)
def test_geographic_pixel_sizes_are_those_at_the_centre(tmp_path):
    """Measured independently: the ground distance across one pixel at the raster's centre, in an azimuthal
    equidistant projection centred there (distances from its centre are true)."""
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    gt = (-0.95, 0.0013474837, 0.0, 41.75, 0.0, -0.0013474837)
    lon, lat = gt[0] + gt[1] * 60, gt[3] + gt[5] * 40
    aeqd = osr.SpatialReference()
    aeqd.ImportFromProj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +ellps=WGS84 +units=m")
    to_aeqd = osr.CoordinateTransformation(wgs84, aeqd)
    x = to_aeqd.TransformPoint(lon + gt[1] / 2, lat)[0] * 2
    y = to_aeqd.TransformPoint(lon, lat - gt[5] / 2)[1] * 2
    px, py = pixel_size_m(gt, wgs84.ExportToWkt(), (120, 80))
    assert px == pytest.approx(x, abs=0.01) and py == pytest.approx(y, abs=0.01)
    assert (round(px), round(py)) == (112, 150)  # x shrinks with cos φ; a 100 m LCZ kernel is not square here
    codes = synthetic_map()
    assert np.array_equal(filter_lcz(codes, px, py), literal_filter(codes, x, y))


@pytest.fixture(scope="module")
def zaragoza_filtered(qgis_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("filter") / "filtered.tif"
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:lczfilter", {"INPUT": ZARAGOZA, "OUTPUT": out})
    assert rc == 0, text
    return out, result


@pytest.mark.timeout(120)
def test_lczfilter_on_the_real_zaragoza_map(zaragoza_filtered):
    out, result = zaragoza_filtered
    source = gdal.Open(str(ZARAGOZA))
    ds = gdal.Open(str(out))
    assert ds.GetGeoTransform() == source.GetGeoTransform() and ds.GetProjection() == source.GetProjection()
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 0
    assert band.GetColorTable().GetColorEntry(17)[:3] == legend.rgb(legend.OFFICIAL_2022[16])
    assert band.GetCategoryNames()[17] == "LCZ G: Water"
    assert out.with_suffix(".qml").read_text(encoding="utf-8") == legend.qml()
    codes = legend.normalise_codes(source.ReadAsArray())
    filtered = ds.ReadAsArray()
    px, py = pixel_size_m(source.GetGeoTransform(), source.GetProjection(), (source.RasterXSize, source.RasterYSize))
    assert np.array_equal(filtered, filter_lcz(codes, px, py))
    assert np.array_equal(filtered == 0, codes == 0)
    changed = (filtered != codes).mean()
    assert 0.001 < changed < 0.1, changed  # speckle smoothed, the map kept (1 % here: a WUDAPT map is smooth)
    classes = {int(k): v for k, v in json.loads(result["results"]["CLASSES"]).items()}
    assert classes == {c: int((filtered == c).sum()) for c in legend.CODES if (filtered == c).any()}


def _refusals(tmp_path):
    one_band = raster_copy(ZURICH, tmp_path / "zurich_red.tif", bandList=[1])
    lcz = shutil.copy(ZARAGOZA, tmp_path / "zaragoza.tif")  # never the asset cache's own copy
    (tmp_path / "zaragoza.qml").write_text("<qgis><!-- the user's own style --></qgis>\n")
    return {
        "RGB orthophoto": ({"INPUT": ZURICH}, "has 3 bands"),
        "one-band image": ({"INPUT": one_band}, "values that are not LCZ codes 1–17 or 101–107"),
        "output is the input": ({"INPUT": lcz, "OUTPUT": lcz}, "OUTPUT would overwrite the INPUT input"),
        # zaragoza.tiff's style would be zaragoza.qml: the input's own (a user's edits to it included).
        "output's style is the input's": ({"INPUT": lcz, "OUTPUT": tmp_path / "zaragoza.tiff"},
                                          "OUTPUT would overwrite the INPUT style input"),
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["RGB orthophoto", "one-band image", "output is the input",
                                  "output's style is the input's"])
def test_lczfilter_refuses_what_is_not_an_lcz_map(qgis_env, tmp_path, case):
    parameters, message = _refusals(tmp_path)[case]
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    out = tmp_path / "out"
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:lczfilter", {"OUTPUT": out / "f.tif", **parameters},
                                   json_output=False)
    assert rc != 0 and message in " ".join(text.split()) and "Traceback" not in text, text
    assert not out.exists() or list(out.iterdir()) == []
    assert {path: path.read_bytes() for path in before} == before  # (QGIS may add an .aux.xml of statistics)


@pytest.mark.timeout(60)
def test_the_filtered_map_keeps_the_input_palette(tmp_path):
    """A map written in the classic WUDAPT colours (as classifylcz PALETTE=classic_wudapt writes it) is filtered
    into the same colours and style."""
    from df4lcz_plugin.runtime.grid import OutputGrid
    from df4lcz_plugin.lcz.lcz_filter import write_filtered
    from df4lcz_plugin.lcz.lcz_raster import create_lcz_raster

    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32618)
    codes = synthetic_map()
    grid = OutputGrid(0, 0, 12, 12, 1, (440000.0, 100.0, 0.0, 4170000.0, 0.0, -100.0))
    ds = create_lcz_raster(tmp_path / "classic.tif", grid, utm.ExportToWkt(), "classic_wudapt")
    ds.GetRasterBand(1).WriteArray(codes)
    ds = None
    classes = write_filtered(tmp_path / "classic.tif", tmp_path / "filtered.tif")
    out = gdal.Open(str(tmp_path / "filtered.tif"))
    assert np.array_equal(out.ReadAsArray(), literal_filter(codes, 100.0, 100.0))
    assert out.GetRasterBand(1).GetColorTable().GetColorEntry(1)[:3] == legend.rgb(legend.CLASSIC_WUDAPT[0])
    assert (tmp_path / "filtered.qml").read_text(encoding="utf-8") == legend.qml("classic_wudapt")
    assert sum(classes.values()) == (codes != 0).sum()
