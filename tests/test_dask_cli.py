"""The command line ``python -m df4lcz_plugin classify`` in-process and on a real Dask LocalCluster of 2 workers,
against ``df4lcz:classifylcz`` run by ``qgis_process`` on the real scene: the same map and probabilities, a run
killed by SIGTERM resumes from its work folder, a tile that fails is reported by its extent."""

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from osgeo import gdal

from conftest import MODEL_CARD, ROOT, raster_copy, run_qgis_process
from df4lcz_plugin.mapping.classify import TileJob, TileResult
from df4lcz_plugin.mapping.settings import ClassifySettings
from df4lcz_plugin.cli import ConsoleFeedback
from df4lcz_plugin.runtime.feedback import Feedback
from df4lcz_plugin.runtime.folder_lock import lock_path
from df4lcz_plugin.runtime.grid import make_grid
from df4lcz_plugin.mapping.tile_store import MANIFEST, TileStore, WorkDirError, save_tile

# 5 km × 5 km across the corner of four pieces of the 3 × 3 mosaic (pieces meet at 442170 E, 4172970 N).
EXTENT = (439700.0, 4170500.0, 444700.0, 4175500.0)
CLUSTER = ["--workers", "2", "--threads", "1"]


def _cli(*args, **popen):
    """Run the command line from the repository with this Python."""
    command = [sys.executable, "-m", "df4lcz_plugin", "classify", *map(str, args)]
    if popen:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _read(path):
    return gdal.Open(str(path)).ReadAsArray()


@pytest.fixture(scope="module")
def mosaic(s2_stack, tmp_path_factory):
    """The real stack cut into 3 × 3 GeoTIFF pieces and put back together as a VRT (gdalbuildvrt's way)."""
    folder = tmp_path_factory.mktemp("mosaic")
    ds = gdal.Open(str(s2_stack))
    xs = np.linspace(0, ds.RasterXSize, 4).astype(int)
    ys = np.linspace(0, ds.RasterYSize, 4).astype(int)
    pieces = [str(raster_copy(s2_stack, folder / f"piece_{i}{j}.tif",
                              srcWin=[int(xs[j]), int(ys[i]), int(xs[j + 1] - xs[j]), int(ys[i + 1] - ys[i])]))
              for i in range(3) for j in range(3)]
    gdal.BuildVRT(str(folder / "mosaic.vrt"), pieces)
    return folder / "mosaic.vrt"


@pytest.fixture(scope="module")
def reference(qgis_env, s2_stack, tmp_path_factory):
    """(LCZ codes, probabilities) of df4lcz:classifylcz over EXTENT, in one process, through real QGIS."""
    folder = tmp_path_factory.mktemp("reference")
    xmin, ymin, xmax, ymax = EXTENT
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:32618]", "RESOLUTION": 100,
        "OUTPUT": folder / "lcz.tif", "PROBABILITIES": folder / "p.tif"})
    assert rc == 0, text
    return _read(folder / "lcz.tif"), _read(folder / "p.tif")


def test_cluster_and_in_process_equal_qgis_process(mosaic, reference, tmp_path):
    codes, probabilities = reference
    assert codes.shape == (50, 50) and len(np.unique(codes)) > 3  # a real, varied map
    here = _cli(mosaic, tmp_path / "here.tif", "--extent", *EXTENT, "--probabilities", tmp_path / "here_p.tif")
    assert here.returncode == 0, here.stderr
    cluster = _cli(mosaic, tmp_path / "dask.tif", "--extent", *EXTENT, "--probabilities", tmp_path / "dask_p.tif",
                   "--tile-cells", "10", *CLUSTER)
    assert cluster.returncode == 0, cluster.stderr
    summary = json.loads(cluster.stdout)
    assert summary["tiles"] == 25 and summary["workers"] == 2
    assert 1 <= summary["model_loads"] <= 2  # once per worker, not per task
    assert len([line for line in cluster.stderr.splitlines() if line.startswith("Tile ")]) == 25
    assert "Dashboard: http" in cluster.stderr
    for name in ("here", "dask"):
        assert np.array_equal(_read(tmp_path / f"{name}.tif"), codes), name
        assert np.array_equal(_read(tmp_path / f"{name}_p.tif"), probabilities), name
        ds = gdal.Open(str(tmp_path / f"{name}.tif"))  # kept: its band dies with it
        band = ds.GetRasterBand(1)
        assert band.GetNoDataValue() == 0  # (also makes GDAL 3.6 load the .aux.xml, for the category names)
        assert band.GetCategoryNames()[17] == "LCZ G: Water" and band.GetColorTable().GetCount() >= 18
        assert (tmp_path / f"{name}.qml").read_text() == (tmp_path / "here.qml").read_text()
    assert not (tmp_path / "dask.tiles").exists()  # the work folder is emptied once the map is written


def test_killed_run_resumes_identically(mosaic, reference, tmp_path):
    args = [mosaic, tmp_path / "lcz.tif", "--extent", *EXTENT, "--tile-cells", "5", *CLUSTER]
    tiles = tmp_path / "lcz.tiles" / "tiles"
    proc = _cli(*args, popen=True)
    deadline = time.monotonic() + 300
    while len(list(tiles.glob("r*.tif"))) < 10 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "terminated; no map was written, finished tiles are kept in" in output
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []  # the cluster's worker processes went with it
    kept = len(list(tiles.glob("r*.tif")))
    assert 10 <= kept < 100, output  # killed mid-run, finished tiles kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcz.tiles"]  # no map, no partial file
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"{kept} of 100 tiles already in" in again.stderr
    assert json.loads(again.stdout)["tiles_resumed"] == kept
    assert np.array_equal(_read(tmp_path / "lcz.tif"), reference[0])


def test_failing_tile_is_reported_by_its_extent(s2_stack, tmp_path):
    """A real damaged file: a copy of the stack with a cloud mask file (.msk, nothing masked) in 16-pixel blocks,
    one of whose compressed blocks is overwritten. Only the tile whose window reads that block can fail; the
    driver never reads the mask, so the run starts, and the 15 other tiles are kept."""
    stack = raster_copy(s2_stack, tmp_path / "stack.tif", srcWin=[130, 480, 400, 400],
                        creationOptions=["TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16", "COMPRESS=DEFLATE"])
    ds = gdal.Open(str(stack), gdal.GA_Update)
    # A sidecar on every GDAL: newer ones (3.10 of trixie, 3.13 of sid) put it inside the TIFF by default.
    gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "NO")
    try:
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    finally:
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
    ds.GetRasterBand(1).GetMaskBand().Fill(255)
    ds = None
    ds = gdal.Open(str(stack))
    mask_file = next(f for f in ds.GetFileList() if f.endswith(".msk"))
    # Block (8, 8) is pixels 128–143: read only by the tile of cells 10–19 (its window is pixels 89–210).
    offset = int(ds.GetRasterBand(1).GetMaskBand().GetMetadataItem("BLOCK_OFFSET_8_8", "TIFF"))
    size = int(ds.GetRasterBand(1).GetMaskBand().GetMetadataItem("BLOCK_SIZE_8_8", "TIFF"))
    ds = None
    with open(mask_file, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    run = _cli(stack, tmp_path / "lcz.tif", "--tile-cells", "10", "--retries", "1", *CLUSTER)
    assert run.returncode == 1, run.stderr
    x0, _, _, y0, _, _ = gdal.Open(str(stack)).GetGeoTransform()
    bounds = " ".join(f"{v:.1f}" for v in (x0 + 1000, y0 - 2000, x0 + 2000, y0 - 1000))
    assert "1 of 16 tiles failed 2 times" in run.stderr
    assert f"rows 10–19, cols 10–19, --extent {bounds}: RuntimeError" in run.stderr
    assert "Traceback" not in run.stderr
    assert len(list((tmp_path / "lcz.tiles" / "tiles").glob("r*.tif"))) == 15
    assert not (tmp_path / "lcz.tif").exists()


def test_changed_arguments_discard_the_tiles(s2_stack, reference, tmp_path):
    ds = gdal.Open(str(s2_stack))
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), EXTENT, 100)
    settings = ClassifySettings(backend="auto", device="cpu", precision="f32", batch_size=128, max_cloud=10)
    job = TileJob(str(s2_stack), ds.GetProjection(), grid, str(MODEL_CARD), settings, 10000.0, (0.0,) * 10, True, False)
    tile = (0, 0, 10, 10)
    result = TileResult(reference[0][:10, :10], None, None, 0)
    work = tmp_path / "work"
    save_tile(TileStore(work, {"max_cloud": 10}, Feedback()).tiles, job, tile, result, "openvino f32 on cpu")
    assert TileStore(work, {"max_cloud": 10}, Feedback()).has(tile)  # same run: kept

    log = io.StringIO()
    changed = TileStore(work, {"max_cloud": 50}, ConsoleFeedback(log))
    assert not changed.has(tile) and log.getvalue().startswith(f"The 1 tile(s) in {work} were made from another")
    changed.clear()
    assert not work.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a work folder")
    with pytest.raises(WorkDirError, match=f"holds files but no {MANIFEST}"):
        TileStore(tmp_path / "mine", {}, Feedback())


@pytest.mark.parametrize("args, message", [
    (["{missing}", "{out}"], "does not exist"),
    (["{stack}", "{stack}"], "OUTPUT would overwrite the SENTINEL2 input"),
    (["{stack}", "{vrt}"], "must end in .tif or .tiff"),
    (["{stack}", "{out}", "--probabilities", "{stack}"], "--probabilities would overwrite the SENTINEL2 input"),
    (["{stack}", "{out}", "--model", "nonexistent_model"], "is neither an installed model's id (sen2lcznet_so2sat"),
    (["{stack}", "{out}", "--workers", "0"], "argument --workers: 0 is not a whole number ≥ 1"),
    (["{stack}", "{out}", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not allowed with argument"),
    (["{stack}", "{out}", "--work-dir", "{folder}"], "--work-dir is for a run on a cluster"),
    (["{stack}", "{out}", "--extent", "0", "0", "1000", "1000"], "does not overlap the Sentinel-2 raster"),
    (["{stack}", "{out}", "--scheduler", "nonsense"], "Cannot reach the Dask scheduler at nonsense (missing port"),
    (["{stack}", "{out}", "--threads", "2"], "--threads is for a run on a cluster"),
    (["{stack}", "{out}", "--workers", "1", "--threads", "-3"], "argument --threads: -3 is not a whole number ≥ 1"),
    (["{stack}", "{out}", "--retries", "-1"], "argument --retries: -1 is not a whole number ≥ 0"),
    (["{stack}", "{out}", "--probabilities", "{out_upper}"], "would both write"),
    (["{out}"], "give SENTINEL2 and OUTPUT (or --stac API with OUTPUT alone)"),
    (["{stack}", "{out}", "--stac", "earth-search"], "give OUTPUT alone with --stac"),
    (["{out}", "--stac", "earth-search", "--start", "2024-06-01"], "--stac needs --extent, --end"),
    (["{out}", "--stac", "earth search", "--extent", "8.4", "47.3", "8.5", "47.4", "--start", "2024-06-01", "--end",
      "2024-06-02"], "--stac=earth search is neither a named API"),
    (["{out}", "--stac", "earth-search", "--extent", "8.4", "47.3", "8.5", "47.4", "--start", "2024-06-01", "--end",
      "2024-05-02"], "--end 2024-05-02 is before --start 2024-06-01"),
    (["{out}", "--stac", "earth-search", "--start", "2024-13-01"],
     "argument --start: '2024-13-01' is not an ISO date"),
    (["{out}", "--stac", "earth-search", "--extent", "443800", "4165600", "446800", "4168600", "--start",
      "2024-06-01", "--end", "2024-06-02"], "is not a place in WGS 84: its numbers look like another CRS's"),
], ids=["missing-input", "output-is-input", "output-not-geotiff", "probabilities-is-input", "unknown-model", "zero-workers",
        "workers-and-scheduler", "work-dir-without-cluster", "extent-outside", "scheduler-not-an-address",
        "threads-without-cluster", "negative-threads", "negative-retries", "probabilities-style-is-the-maps",
        "output-alone", "stac-with-sentinel2", "stac-without-extent", "stac-bad-api", "stac-dates-reversed",
        "stac-bad-date", "stac-utm-extent-as-lonlat"])
def test_bad_arguments_exit_2_with_the_reason(s2_stack, tmp_path, args, message):
    names = {"missing": tmp_path / "none.tif", "out": tmp_path / "lcz.tif", "out_upper": tmp_path / "lcz.TIF",
             "stack": s2_stack,
             "vrt": tmp_path / "lcz.vrt", "folder": tmp_path}
    run = _cli(*[a.format(**names) for a in args])
    assert run.returncode == 2, run.stderr
    assert message in " ".join(run.stderr.split()) and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_relative_paths_reach_workers_running_elsewhere(s2_stack, tmp_path):
    """A cluster's workers run in folders of their own (here: this test's, not the command's): relative OUTPUT,
    --work-dir and --model must still name the same files there."""
    from distributed import LocalCluster

    models = tmp_path / "models"
    models.mkdir()
    for path in MODEL_CARD.parent.glob(f"{MODEL_CARD.stem}.*"):  # card, weights and OpenVINO form
        shutil.copy2(path, models / path.name)
    extent = ("437000", "4170000", "439000", "4172000")
    # The plugin first, before what PYTHONPATH already holds (another QGIS's test run puts the dependencies there).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        command = [sys.executable, "-m", "df4lcz_plugin", "classify", str(s2_stack), "rel.tif", "--extent", *extent,
                   "--model", f"models/{MODEL_CARD.name}", "--work-dir", "tiles", "--scheduler",
                   cluster.scheduler_address]
        run = subprocess.run(command, cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    here = _cli(s2_stack, tmp_path / "here.tif", "--extent", *extent)
    assert here.returncode == 0, here.stderr
    assert np.array_equal(_read(tmp_path / "rel.tif"), _read(tmp_path / "here.tif"))
    assert not (tmp_path / "tiles").exists()  # emptied after success, where the command said


def _files(folder):
    """Every file under ``folder``: relative path → (size, modification time, sha256)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).digest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_on_a_work_folder_is_refused(s2_stack, tmp_path):
    """The issue's case: a second run on the same output while the first empties its work folder (paused there by
    SIGSTOP at its first ``clear`` checkpoint, the tiles still there). The second is refused at once, naming the
    first, and writes and deletes nothing; the first, continued, ends with the map of a run alone. That run alone
    starts on the lock file of a SIGKILLed run and takes it over."""
    args = ["--extent", "437000", "4170000", "439000", "4172000", "--tile-cells", "5", "--workers", "1",
            "--threads", "1"]
    alone = tmp_path / "alone"
    dead = subprocess.run([sys.executable, "-c", "import os, sys; from df4lcz_plugin.runtime.folder_lock import FolderLock; "
                           "lock = FolderLock(sys.argv[1]); os.kill(os.getpid(), 9)", alone / "lcz.tiles"],
                          cwd=ROOT, timeout=60)
    assert dead.returncode == -signal.SIGKILL and lock_path(alone / "lcz.tiles").is_file()
    run = _cli(s2_stack, alone / "lcz.tif", *args)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in alone.iterdir()) == ["lcz.qml", "lcz.tif", "lcz.tif.aux.xml"]  # lock let go

    both = tmp_path / "both"
    both.mkdir()
    command = [sys.executable, "-m", "df4lcz_plugin", "classify", str(s2_stack), str(both / "lcz.tif"), *args]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "DF4LCZ_KILL_AT": f"clear:1:STOP:{tmp_path / 'paused'}"})
    try:
        deadline = time.monotonic() + 300
        while psutil.Process(first.pid).status() != psutil.STATUS_STOPPED:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate(timeout=60)[0]
            time.sleep(0.1)
        before = _files(both)
        assert len([name for name in before if name.startswith("lcz.tiles/tiles/")]) == 16 and "lcz.tif" in before
        second = _cli(s2_stack, both / "lcz.tif", *args)
        assert _files(both) == before  # nothing written, nothing deleted
        first.send_signal(signal.SIGCONT)
        output = first.communicate(timeout=300)[0]
    finally:
        first.kill()
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    message = " ".join(second.stderr.split())
    assert (f"Another run is using the work folder {both / 'lcz.tiles'}: process {first.pid} on "
            f"{socket.gethostname()}, started 20") in message
    assert f"or stop it with 'kill {first.pid}' (on {socket.gethostname()}), then run this command again" in message
    assert first.returncode == 0, output
    assert np.array_equal(_read(both / "lcz.tif"), _read(alone / "lcz.tif"))
    assert sorted(p.name for p in both.iterdir()) == ["lcz.qml", "lcz.tif", "lcz.tif.aux.xml"]
