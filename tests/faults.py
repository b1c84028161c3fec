"""Fault injection for the long jobs (``test_faults.py``): run a job as a subprocess, stop it at a moment of its
own progress, then check what it left.

A ``Moment`` is either a named checkpoint of the engine (``df4lcz_plugin.runtime.kill_points``: the N-th ``batch`` of a
tile, ``tile`` done, ``mosaic`` write, ``strip``, ``epoch``, ``clear`` of the work folder, ``rename <file>`` just
before a finished file is renamed into place), which the process reaches by its own work whatever the machine's
load, or a time in the first second (before any checkpoint: imports, argument checks, cluster start-up). The
signal is SIGTERM or SIGKILL; a checkpoint reached in a Dask worker stops that worker, not the command.
"""

import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal

#: Longer sweeps (``make faults``) add moments to each job.
LONG = os.environ.get("DF4LCZ_FAULTS") == "long"


@dataclass(frozen=True)
class Moment:
    """Stop at the ``n``-th checkpoint matching ``point`` (an fnmatch pattern), or ``after`` seconds from the
    start when ``point`` is None; with SIG``signal`` (TERM or KILL)."""

    point: str = None
    n: int = 1
    signal: str = "KILL"
    after: float = None

    def __str__(self):
        where = f"{self.after:g}s" if self.point is None else f"{self.point}#{self.n}"
        return f"{where}-{self.signal}"


@dataclass
class Stopped:
    """What a stopped run did: its exit status, its output, whether the moment was reached (``fired``)."""

    returncode: int
    output: str
    fired: bool


def run_stopped(command, moment, flag, env=None, cwd=None, timeout=600):
    """Run ``command`` and stop it at ``moment``; ``flag``: a file the checkpoint creates when it fires. The
    process group (Dask workers a SIGKILL orphaned) is killed once the command has gone, so that nothing of the
    stopped run writes while the next one runs."""
    env = dict(env if env is not None else os.environ)
    if moment.point is not None:
        env["DF4LCZ_KILL_AT"] = f"{moment.point}:{moment.n}:{moment.signal}:{flag}"
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    fired = False
    if moment.point is None:
        try:
            proc.wait(moment.after)
        except subprocess.TimeoutExpired:
            proc.send_signal(getattr(signal, f"SIG{moment.signal}"))
            fired = True
    try:
        output = proc.communicate(timeout=timeout)[0]
    finally:
        _kill_group(proc.pid)
    return Stopped(proc.returncode, output, fired or Path(flag).exists())


def _kill_group(pgid):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(paths):
    """{path: sha256} of the files among ``paths`` that exist."""
    return {str(p): sha256(p) for p in paths if Path(p).is_file()}


def partial_files(folder):
    """Temporary files of ``outputs.atomic_output`` (and scratch folders) left in ``folder``."""
    return sorted(p.name for p in Path(folder).iterdir() if ".partial" in p.name)


def raster_equal(a, b):
    """Whether two rasters hold the same cells, georeference, nodata and metadata (GDAL)."""
    da, db = gdal.Open(str(a)), gdal.Open(str(b))
    same = (da.GetGeoTransform() == db.GetGeoTransform() and da.GetProjection() == db.GetProjection()
            and da.RasterCount == db.RasterCount and np.array_equal(da.ReadAsArray(), db.ReadAsArray()))
    return same and all(da.GetRasterBand(i).GetNoDataValue() == db.GetRasterBand(i).GetNoDataValue()
                        for i in range(1, da.RasterCount + 1))


def same_output(path, reference):
    """Whether ``path`` is the uninterrupted run's ``reference`` output: a raster cell for cell, another file
    byte for byte."""
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        return raster_equal(path, reference)
    return Path(path).read_bytes() == Path(reference).read_bytes()


def check_outputs_after_stop(outputs, before, reference_folder):
    """Each file at an output path is what was there before (``before``: {path: sha256}), absent, or complete
    (the uninterrupted run's, in ``reference_folder`` under the same name). Returns a list of problems."""
    problems = []
    for path in map(Path, outputs):
        if not path.exists():
            continue
        if before.get(str(path)) == sha256(path):
            continue  # the map that was already there survived
        reference = Path(reference_folder) / path.name
        if not reference.exists() or not same_output(path, reference):
            problems.append(f"{path.name} is neither the old file nor the complete new one")
    return problems


def run_until(command, condition, signum, env=None, cwd=None, timeout=300, victim=None):
    """Run ``command`` and send ``signum`` when ``condition()`` first holds (polled every 5 ms: a state of the
    job's own files or processes), or after ``condition`` seconds when it is a number. ``victim(proc)``: the
    psutil process to signal (default the command). Returns a Stopped; ``fired`` says whether the signal went."""
    import psutil

    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    fired, deadline = False, time.monotonic() + timeout
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            due = (time.monotonic() - started >= condition) if isinstance(condition, (int, float)) else condition()
            if due:
                try:
                    target = victim(psutil.Process(proc.pid)) if victim else psutil.Process(proc.pid)
                    if target is not None:
                        target.send_signal(signum)
                        fired = True
                        break
                except psutil.Error:  # the victim ended just now: wait for the next one
                    pass
            time.sleep(0.005)
        output = proc.communicate(timeout=timeout)[0]
    finally:
        _kill_group(proc.pid)
    return Stopped(proc.returncode, output, fired)
