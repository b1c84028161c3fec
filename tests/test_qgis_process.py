"""End to end through real QGIS: ``qgis_process.bin`` with a throwaway profile, on the real Sentinel-2 scene."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import FARMLAND_EXTENT, MODEL_CARD, QGIS_PROCESS, ROOT, SEA_EXTENT, raster_copy, run_qgis_process
from df4lcz_plugin.lcz.lcz_filter import filter_lcz


def _extent(bounds, crs="EPSG:32618"):
    xmin, ymin, xmax, ymax = bounds
    return f"{xmin},{xmax},{ymin},{ymax} [{crs}]"


def test_provider_and_algorithms_are_listed(qgis_env):
    out = subprocess.run([QGIS_PROCESS, "list"], env=qgis_env, capture_output=True, text=True).stdout
    assert "df4lcz:classifylcz\tClassify local climate zones (DF4LCZ)" in out
    assert "df4lcz:sentinel2stack\tBuild Sentinel-2 band stack" in out
    assert "df4lcz:sentinel2composite\tBuild cloud-free Sentinel-2 composite" in out
    assert "df4lcz:lcz_from_safe\tClassify LCZ from a Sentinel-2 product" in out  # the bundled .model3 files
    assert "df4lcz:lcz_from_composite\tClassify LCZ from a cloud-free composite" in out


def test_stack_then_classify(qgis_env, s2_band_dir, tmp_path):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:sentinel2stack",
                                        {"INPUT": s2_band_dir, "OUTPUT": tmp_path / "stack.tif"})
    assert rc == 0, text
    assert result["results"]["PROCESSING_LEVEL"] == "unknown"
    assert gdal.Open(str(tmp_path / "stack.tif")).RasterCount == 10
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": tmp_path / "stack.tif", "EXTENT": _extent(FARMLAND_EXTENT), "RESOLUTION": 100,
        "OUTPUT": tmp_path / "lcz.tif", "PROBABILITIES": tmp_path / "p.tif", "FILTERED_OUTPUT": tmp_path / "f.tif"})
    assert rc == 0, text
    results = result["results"]
    summary = json.loads(results["SUMMARY"])
    assert results["OUTPUT"] == str(tmp_path / "lcz.tif") and results["PROBABILITIES"] == str(tmp_path / "p.tif")
    assert results["DEVICE_USED"] == "cpu" and results["CELLS_PER_SECOND"] > 0
    assert summary["cells"] == 2500 and summary["area_km2"]["LCZ D: Low plants"] > 5
    codes = gdal.Open(str(tmp_path / "lcz.tif")).ReadAsArray()
    assert codes.shape == (50, 50) and codes.min() >= 1 and codes.max() <= 17
    assert (tmp_path / "lcz.qml").exists()
    # FILTERED_OUTPUT: the engine's filter of the map at 100 m, styled as the map is.
    assert results["FILTERED_OUTPUT"] == str(tmp_path / "f.tif")
    raw, filtered = gdal.Open(str(tmp_path / "lcz.tif")), gdal.Open(str(tmp_path / "f.tif"))  # bands die with them
    assert np.array_equal(filtered.ReadAsArray(), filter_lcz(codes, 100.0, 100.0))
    assert filtered.GetGeoTransform() == raw.GetGeoTransform()
    assert (tmp_path / "f.qml").read_text(encoding="utf-8") == (tmp_path / "lcz.qml").read_text(encoding="utf-8")
    raw_band, filtered_band = raw.GetRasterBand(1), filtered.GetRasterBand(1)
    assert filtered_band.GetCategoryNames() == raw_band.GetCategoryNames()
    assert filtered_band.GetColorTable().GetColorEntry(14) == raw_band.GetColorTable().GetColorEntry(14)


def test_geographic_extent_is_reprojected(qgis_env, s2_stack, tmp_path):
    # The sea window, given in EPSG:4326 (lon/lat); its bounding box in UTM covers the same water.
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "EXTENT": "-75.55,-75.52,37.63,37.66 [EPSG:4326]", "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    wgs84, utm = osr.SpatialReference(), osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    utm.ImportFromEPSG(32618)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_utm = osr.CoordinateTransformation(wgs84, utm)
    corners = [to_utm.TransformPoint(lon, lat)[:2] for lon in (-75.55, -75.52) for lat in (37.63, 37.66)]
    xmin, ymax = min(x for x, _ in corners), max(y for _, y in corners)
    ds = gdal.Open(str(tmp_path / "lcz.tif"))
    x0, res, _, y0, _, _ = ds.GetGeoTransform()
    # The grid starts on the 10 m pixel edge at or just outside the reprojected extent.
    assert xmin - 11 < x0 <= xmin + 1 and ymax - 1 <= y0 < ymax + 11 and res == 100
    assert (ds.ReadAsArray() == 17).mean() > 0.95


def test_model3_runs_headless(qgis_env, s2_band_dir, tmp_path):
    rc, _, text = run_qgis_process(qgis_env, ROOT / "resources/models/lcz_from_safe.model3", {
        "SAFE": s2_band_dir, "EXTENT": _extent(SEA_EXTENT), "RESOLUTION": 200,
        "classify:LCZ_MAP": tmp_path / "lcz.tif"}, json_output=False)
    assert rc == 0, text
    codes = gdal.Open(str(tmp_path / "lcz.tif")).ReadAsArray()
    assert codes.shape == (15, 15) and (codes == 17).all()


def _bad_inputs(s2_stack, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shutil.copy(MODEL_CARD, corrupt / "m.json")
    (corrupt / "m.safetensors").write_bytes(MODEL_CARD.with_suffix(".safetensors").read_bytes()[:5000])
    holed = raster_copy(s2_stack, tmp_path / "holed.tif", srcWin=[500, 500, 400, 400])
    ds = gdal.Open(str(holed), gdal.GA_Update)
    for i in range(10):
        ds.GetRasterBand(i + 1).Fill(0)
    ds = None
    return {
        "three bands": ({"SENTINEL2": raster_copy(s2_stack, tmp_path / "b3.tif", bandList=[1, 2, 3])},
                        "has 3 band(s); the model needs 10 bands in the order B2, B3"),
        "band order": ({"SENTINEL2": raster_copy(s2_stack, tmp_path / "rev.tif", bandList=list(range(10, 0, -1)))},
                       "bands are described as B12, B11"),
        "no overlap": ({"EXTENT": _extent((600000, 4000000, 605000, 4005000))}, "does not overlap"),
        "too small": ({"EXTENT": _extent((440000, 4170000, 440200, 4170200))}, "smaller than one 320 m patch"),
        "all nodata": ({"SENTINEL2": holed}, "holds no data in the extent"),
        "missing model": ({"MODEL_FILE": tmp_path / "absent.safetensors"}, "absent.json is missing"),
        "corrupt model": ({"MODEL_FILE": corrupt / "m.safetensors"}, "corrupt or truncated"),
        # "cuda" is a choice only when the driver reports GPUs (then with cuda:0, cuda:1…): the message lists them.
        "cuda": ({"DEVICE": "cuda"}, "DEVICE=cuda is not a device of this machine"),
        "unknown model": ({"MODEL": "sen2lcznet"}, "MODEL=sen2lcznet is not an installed model; installed: "
                                                   "sen2lcznet_so2sat."),
    }


@pytest.mark.parametrize("case", ["three bands", "band order", "no overlap", "too small", "all nodata",
                                  "missing model", "corrupt model", "cuda", "unknown model"])
def test_bad_input_is_explained_and_leaves_no_output(qgis_env, s2_stack, tmp_path, case):
    overrides, message = _bad_inputs(s2_stack, tmp_path)[case]
    out = tmp_path / "out"
    parameters = {"SENTINEL2": s2_stack, "OUTPUT": out / "lcz.tif", "PROBABILITIES": out / "p.tif", **overrides}
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", parameters, json_output=False)
    assert rc != 0
    assert message in text.replace("\n", " "), text
    assert not out.exists() or list(out.iterdir()) == []


def test_provider_loads_without_torch(qgis_env, s2_stack, tmp_path):
    """A profile whose plugin has no private dependencies: the algorithms are listed, and a CPU classification
    refuses to run, naming the light variant and the command that installs it."""
    env = dict(qgis_env, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / ".local/share"))
    plugin = tmp_path / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz"
    shutil.copytree(Path(qgis_env["HOME"]) / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz",
                    plugin, symlinks=True, ignore=shutil.ignore_patterns(".deps"))
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "df4lcz"], env=env, check=True, capture_output=True)
    listed = subprocess.run([QGIS_PROCESS, "list"], env=env, capture_output=True, text=True).stdout
    assert "df4lcz:classifylcz" in listed
    rc, _, text = run_qgis_process(env, "df4lcz:classifylcz", {"SENTINEL2": s2_stack, "OUTPUT": tmp_path / "o.tif"},
                                   json_output=False)
    text = " ".join(text.split())
    assert rc != 0 and "OpenVINO, safetensors, LightGBM" in text and "cannot be imported in QGIS's Python" in text
    assert "'python3 -m df4lcz_plugin.runtime.dependencies install --variant light'" in text and "Traceback" not in text
    assert not (tmp_path / "o.tif").exists()
