"""No wrong map comes out silently: careless inputs are refused with the reason, or warned about, through real QGIS.

Fixtures are real data made careless the way users do: the real Virginia stack as 0–1 reflectance, with an
L2A offset subtracted without clipping, resampled to 20 m, warped to Web Mercator, bands reversed without
descriptions; the real Zaragoza WUDAPT map recoded 101–107; hostile copies of the shipped model card."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import MODEL_CARD, QGIS_PROCESS, ZURICH, raster_copy, run_qgis_process

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.vhr.imagery import open_vhr, read_patch

from test_data_safety import FARMLAND_WINDOW, _refused


def _stack_as(s2_stack, path, transform, data_type):
    """The 4 km farmland window of the real stack, its values mapped by ``transform``, without band names."""
    window = gdal.Open(str(s2_stack)).ReadAsArray(*FARMLAND_WINDOW).astype(np.float64)
    source = gdal.Translate("", str(s2_stack), format="MEM", srcWin=FARMLAND_WINDOW)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), source.RasterXSize, source.RasterYSize, 10, data_type)
    ds.SetGeoTransform(source.GetGeoTransform())
    ds.SetProjection(source.GetProjection())
    ds.WriteArray(transform(window))
    ds = None
    return path


def _web_mercator(s2_stack, folder):
    """The farmland window warped to EPSG:3857 at 10 CRS units: 7.9 m on the ground at 37.7° N."""
    window = raster_copy(s2_stack, folder / "utm.tif", srcWin=FARMLAND_WINDOW)
    gdal.Warp(str(folder / "mercator.tif"), str(window), dstSRS="EPSG:3857", xRes=10, yRes=10)
    return folder / "mercator.tif"


def _careless_stacks(s2_stack, folder):
    def cloud(values):  # reflectance 0–1 with one saturated bright cloud pixel
        values = values / 10000
        values[:, 10, 10] = 1.6
        return values

    return {
        "reflectance 0-1": (_stack_as(s2_stack, folder / "r01.tif", lambda v: v / 10000, gdal.GDT_Float32),
                            "look like reflectance on a 0–1 scale (99th percentile"),
        "reflectance 0-1 with a cloud": (_stack_as(s2_stack, folder / "cloud.tif", cloud, gdal.GDT_Float32),
                                         "look like reflectance on a 0–1 scale"),
        "percent": (_stack_as(s2_stack, folder / "pct.tif", lambda v: v / 100, gdal.GDT_Float32),
                    "look like reflectance in percent"),
        "20 m pixels": (raster_copy(s2_stack, folder / "s20.tif", srcWin=FARMLAND_WINDOW, xRes=20, yRes=20),
                        "pixels are 20 m; the model was trained on 10 m pixels"),
        "web mercator": (_web_mercator(s2_stack, folder),
                         "(WGS 84 / Pseudo-Mercator) does not measure ground metres here: its 10 m pixels are 7.9"),
    }


@pytest.mark.parametrize("case", ["reflectance 0-1", "reflectance 0-1 with a cloud", "percent", "20 m pixels",
                                  "web mercator"])
def test_wrong_stack_is_refused(qgis_env, s2_stack, tmp_path, case):
    stack, message = _careless_stacks(s2_stack, tmp_path)[case]
    _refused(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack, "OUTPUT": tmp_path / "lcz.tif",
                                              "PROBABILITIES": tmp_path / "p.tif"}, message, tmp_path)


def test_web_mercator_suggests_utm(qgis_env, s2_stack, tmp_path):
    stack, _ = _careless_stacks(s2_stack, tmp_path)["web mercator"]
    _refused(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack, "OUTPUT": tmp_path / "lcz.tif"},
             "gdalwarp -t_srs EPSG:32618 -tr 10 10", tmp_path)


def test_negative_values_are_clipped_and_reported(qgis_env, s2_stack, tmp_path):
    # An L2A BOA_ADD_OFFSET (−1000) subtracted without clipping: dark pixels go negative in Int16.
    stack = _stack_as(s2_stack, tmp_path / "offset.tif", lambda v: v - 1000, gdal.GDT_Int16)
    assert (gdal.Open(str(stack)).ReadAsArray() < 0).mean() > 0.001
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack,
                                                                         "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    assert "are negative (an L2A offset of −1000 subtracted without clipping?); they are clipped to 1" in text
    summary = json.loads(result["results"]["SUMMARY"])
    assert summary["classified_cells"] == summary["cells"] == 1600  # nothing wrapped to 65535 and lost


def test_reversed_bands_without_descriptions_warn(qgis_env, s2_stack, tmp_path):
    stack = _stack_as(s2_stack, tmp_path / "rev.tif", lambda v: v[::-1], gdal.GDT_UInt16)
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack,
                                                                    "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    assert "Spectral check failed: the band in position 7 (B8, near infrared) is darker than the band in position 3" \
        in " ".join(text.split())
    # The same data in the right order passes the check silently.
    ok = _stack_as(s2_stack, tmp_path / "ok.tif", lambda v: v, gdal.GDT_UInt16)
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": ok, "OUTPUT": tmp_path / "ok_lcz.tif"})
    assert rc == 0 and "Spectral check" not in text, text


@pytest.mark.parametrize("parameters, message", [
    ({"RESOLUTION": "nan"}, "RESOLUTION nan is not a positive number of metres"),
    ({"RESOLUTION": 10000}, "RESOLUTION 10000 m is larger than the extent's overlap with the raster (4000 m × 4000 m)"),
    ({"MAX_CLOUD": "nan"}, "MAX_CLOUD nan is not a percentage from 0 to 100"),
])
def test_numbers_get_their_real_reason(qgis_env, s2_stack, tmp_path, parameters, message):
    stack = raster_copy(s2_stack, tmp_path / "stack.tif", srcWin=FARMLAND_WINDOW)
    _refused(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack, **parameters, "OUTPUT": tmp_path / "lcz.tif"},
             message, tmp_path)


def _hostile_cards():
    def unknown_key(card):
        card["streams"]["sentinel2"]["config"]["depth"] = 50

    def no_scaling(card):
        del card["streams"]["sentinel2"]["input_scaling"]

    def streams_list(card):
        card["streams"] = [card["streams"]["sentinel2"]]

    def no_id(card):
        del card["id"]

    def comma_id(card):
        card["id"] = "zurich, v2"  # Processing would split a MODEL value at the comma

    def level_as_in_a_stack(card):
        card["streams"]["sentinel2"]["processing_level"] = "Level-2A"  # a stack's spelling, not a card's

    return {
        "unknown config key": (unknown_key, "gives architecture 'sen2lcznet' the unknown setting(s) depth"),
        "no input_scaling": (no_scaling, "'streams.sentinel2.input_scaling.divide_by' must be a positive number"),
        "streams as a list": (streams_list, "'streams' must be an object with a 'sentinel2' stream"),
        "no id": (no_id, "'id' must be a name of letters, digits"),
        "comma in id": (comma_id, "'id' must be a name of letters, digits"),
        "bad processing level": (level_as_in_a_stack, "'streams.sentinel2.processing_level' is \"Level-2A\"; it "
                                 "must be \"L1C\" (top-of-atmosphere reflectance) or \"L2A\" (surface reflectance)"),
    }


@pytest.mark.parametrize("case", ["unknown config key", "no input_scaling", "streams as a list", "no id",
                                  "comma in id", "bad processing level"])
def test_hostile_model_card(qgis_env, s2_stack, tmp_path, case):
    edit, message = _hostile_cards()[case]
    card = json.loads(MODEL_CARD.read_text())
    edit(card)
    (tmp_path / "m.json").write_text(json.dumps(card))
    shutil.copy(MODEL_CARD.with_suffix(".safetensors"), tmp_path / "m.safetensors")
    stack = raster_copy(s2_stack, tmp_path / "stack.tif", srcWin=FARMLAND_WINDOW)
    _refused(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack, "MODEL_FILE": tmp_path / "m.safetensors",
                                              "OUTPUT": tmp_path / "lcz.tif"}, message, tmp_path)


@pytest.mark.parametrize("level, warned", [("Level-2A", True), ("Level-1C", False)])
def test_stack_of_another_processing_level_warns(qgis_env, s2_stack, tmp_path, level, warned):
    """The farmland window labelled L2A (as a STAC COG fetch labels its stacks) into the shipped L1C model: the
    run warns, with the fix, and the summary says both levels; labelled L1C, it does not."""
    stack = raster_copy(s2_stack, tmp_path / "stack.tif", srcWin=FARMLAND_WINDOW,
                        metadataOptions=[f"PROCESSING_LEVEL={level}"])
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack,
                                                                         "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    expected = ("This stack is Sentinel-2 L2A (surface reflectance); model sen2lcznet_so2sat was trained on L1C "
                "(top-of-atmosphere reflectance).")
    fix = "Fine-tune the model on training areas of your own, from stacks of the same source and level"
    summary = json.loads(result["results"]["SUMMARY"])
    assert summary["processing_level"]["stack"] == level.replace("Level-", "L")
    assert summary["processing_level"]["model"] == "L1C"
    if warned:
        assert expected in " ".join(text.split()) and fix in " ".join(text.split()), text
        assert summary["processing_level"]["warning"].startswith(expected)
    else:
        assert "trained on L1C" not in text and summary["processing_level"]["warning"] is None
    assert summary["classified_cells"] > 0.8 * summary["cells"]  # a warning, not a refusal: the map is made


def test_bad_or_duplicate_user_models_are_left_out_of_the_list(qgis_env, tmp_path):
    """Cards in the user model folder without an id, with a number as id, or with the shipped model's id: the
    provider still loads, and MODEL lists each id once."""
    models = Path(qgis_env["XDG_DATA_HOME"]) / "df4lcz" / "models"
    models.mkdir(parents=True, exist_ok=True)
    made = []
    for name, edit in (("noid", lambda c: c.pop("id")), ("number", lambda c: c.update(id=7)),
                       ("twin", lambda c: None)):
        card = json.loads(MODEL_CARD.read_text())
        edit(card)
        made += [models / f"{name}.json", models / f"{name}.safetensors"]
        made[-2].write_text(json.dumps(card))
        shutil.copy(MODEL_CARD.with_suffix(".safetensors"), made[-1])
    try:
        listing = subprocess.run([QGIS_PROCESS, "help", "df4lcz:classifylcz"], env=qgis_env, capture_output=True,
                                 text=True, timeout=120)
    finally:
        for path in made:
            path.unlink()
    assert listing.returncode == 0 and "Traceback" not in listing.stdout + listing.stderr
    choices = listing.stdout.split("\nMODEL:")[1].split("Acceptable values")[0]
    values = re.findall(r"- \d+: (.+)", choices)  # other tests' trained models may be listed too
    assert values.count("sen2lcznet_so2sat") == 1 and "7" not in values, choices


def test_assess_reads_wudapt_2015_codes(qgis_env, tmp_path):
    """A reference coded 101–107 for A–G is read in full: the map against itself, recoded, is 100 % on all cells."""
    lcz = raster_copy(assets.fetch(assets.ZARAGOZA_LCZ), tmp_path / "map.tif")
    values = gdal.Open(str(lcz)).ReadAsArray()
    recoded = raster_copy(lcz, tmp_path / "ref_101.tif")
    ds = gdal.Open(str(recoded), gdal.GA_Update)
    ds.GetRasterBand(1).WriteArray(np.where((values >= 11) & (values <= 17), values + 90, values))
    ds = None
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:assessaccuracy", {
        "LCZ": lcz, "REFERENCE": recoded, "REPORT": tmp_path / "r.html", "JSON": tmp_path / "r.json"})
    assert rc == 0, text
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert metrics["n"] == int(((values >= 1) & (values <= 17)).sum())  # every cell, A–G (≈ 97 %) included
    assert metrics["OA"] == 1.0 and np.asarray(metrics["support"])[10:].sum() > 0.9 * metrics["n"]


def test_assess_refuses_the_probability_raster(qgis_env, s2_stack, model, tmp_path):
    from df4lcz_plugin.mapping.classify import classify

    classify(s2_stack, tmp_path / "lcz.tif", model, bounds=(450000.0, 4162000.0, 452000.0, 4164000.0),
             probabilities_path=tmp_path / "p.tif")
    ref = raster_copy(tmp_path / "lcz.tif", tmp_path / "ref.tif")
    _refused(qgis_env, "df4lcz:assessaccuracy", {"LCZ": tmp_path / "p.tif", "REFERENCE": ref,
                                                 "REPORT": tmp_path / "r.html"},
             "has 18 bands; an LCZ map has one band of LCZ codes 1–17. It looks like the probability raster",
             tmp_path)
    _refused(qgis_env, "df4lcz:assessaccuracy", {"LCZ": s2_stack, "REFERENCE": ref, "REPORT": tmp_path / "r.html"},
             "has 10 bands; an LCZ map has one band", tmp_path)


def test_16bit_vhr_with_one_saturated_pixel_keeps_its_contrast(tmp_path):
    """Real 8-bit orthophoto × 40 as UInt16, one pixel 65535: the patch looks like the 8-bit one, not black."""
    byte = gdal.Open(str(ZURICH))
    u16 = gdal.Translate(str(tmp_path / "u16.tif"), str(ZURICH), outputType=gdal.GDT_UInt16,
                         scaleParams=[[0, 255, 0, 10200]])
    for band in range(1, 4):
        data = u16.GetRasterBand(band).ReadAsArray()
        data[0, 0] = 65535
        u16.GetRasterBand(band).WriteArray(data)
    u16 = None
    gt = byte.GetGeoTransform()
    footprint = (gt[0], gt[3] - 300, gt[0] + 300, gt[3])
    expected, _ = read_patch(open_vhr(ZURICH), footprint, byte.GetProjection())
    patch, _ = read_patch(open_vhr(tmp_path / "u16.tif"), footprint, byte.GetProjection())
    assert patch.mean() > 0.8 * expected.mean()  # min–max scaling gave ≈ 1/6 of it
    assert np.corrcoef(patch.ravel(), expected.ravel())[0, 1] > 0.95
