"""The work folder of a distributed classification: one small GeoTIFF per finished tile, and a manifest of
everything the tiles depend on, so that a killed run resumes where it stopped and a changed run starts over.

Layout: ``<work>/df4lcz-manifest.json`` and ``<work>/tiles/r<row>_c<col>.tif`` (row and column of the tile's
first output cell, six digits). A tile file is band 1 the LCZ codes, then the 18 probability bands when the run
writes probabilities; its metadata holds the cells masked for cloud and the back-end that computed it. Each file
is written under a temporary name and renamed (``outputs.atomic_output``), so a tile that is there is complete;
one that cannot be read all the same (a damaged disk, a copy cut short) counts as not done and is computed again.
The manifest is written atomically and deleted first by ``clear``: a clean-up stopped half-way leaves tiles
without a manifest, which the next run recognises as a work folder and discards.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from osgeo import gdal

from .classify import TileResult
from ..runtime.kill_points import kill_point
from ..runtime.outputs import atomic_output

if TYPE_CHECKING:
    from ..runtime.feedback import Feedback
    from .classify import TileJob

#: (row, col, rows, cols) of a tile in output cells.
Tile = tuple[int, int, int, int]

gdal.UseExceptions()

MANIFEST = "df4lcz-manifest.json"
_TILE_FILE = re.compile(r"r\d{6}_c\d{6}\.tif")
_TILE_PARTIAL = re.compile(r"\.r\d{6}_c\d{6}\..+\.partial\.tif(\.aux\.xml)?")  # outputs.atomic_output's name
_CLOUD_KEY, _ENGINE_KEY = "DF4LCZ_CLOUD_CELLS", "DF4LCZ_BACKEND"


class WorkDirError(ValueError):
    """The work folder cannot hold this run's tiles."""


def tile_file(folder: Path | str, tile: Tile) -> Path:
    """Path of ``tile`` (row, col, rows, cols)'s GeoTIFF in the tiles ``folder``."""
    return Path(folder) / f"r{tile[0]:06d}_c{tile[1]:06d}.tif"


def save_tile(folder: Path | str, job: TileJob, tile: Tile, result: TileResult, engine: str) -> None:
    """Write ``result`` (a ``classify.TileResult``) of ``tile`` of ``job``'s grid into ``folder``, georeferenced,
    under a temporary name then renamed. ``engine``: the back-end that computed it, kept in its metadata."""
    row, col, rows, cols = tile
    bands = [result.codes] + (list(result.probabilities) if result.probabilities is not None else [])
    xmin, _, _, ymax = job.grid.bounds(row, col, rows, cols)
    _, size, _, _, _, neg = job.grid.geotransform
    with atomic_output(tile_file(folder, tile)) as tmp:
        ds = gdal.GetDriverByName("GTiff").Create(tmp, cols, rows, len(bands), gdal.GDT_Byte,
                                                  options=["COMPRESS=DEFLATE"])
        ds.SetGeoTransform((xmin, size, 0.0, ymax, 0.0, neg))
        ds.SetProjection(job.projection)
        ds.SetMetadata({_CLOUD_KEY: str(result.cloud_cells), _ENGINE_KEY: engine})
        ds.WriteArray(np.stack(bands))
        ds = None  # closed (flushed) before the rename


def load_tile(folder: Path | str, tile: Tile) -> TileResult:
    """The TileResult of ``tile``'s GeoTIFF in ``folder``, as ``save_tile`` wrote it (no source raster)."""
    ds = gdal.Open(str(tile_file(folder, tile)))
    data = ds.ReadAsArray().reshape(ds.RasterCount, ds.RasterYSize, ds.RasterXSize)
    return TileResult(data[0], data[1:] if len(data) > 1 else None, None, int(ds.GetMetadataItem(_CLOUD_KEY)))


def tile_engine(folder: Path | str, tile: Tile) -> str | None:
    """The back-end that computed ``tile``'s GeoTIFF in ``folder`` (e.g. 'openvino f32 on cpu')."""
    return gdal.Open(str(tile_file(folder, tile))).GetMetadataItem(_ENGINE_KEY)


def _tiles_only(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but a ``tiles`` folder of tile files and their partial files: what a
    ``clear`` stopped after deleting the manifest leaves."""
    entries = list(folder.iterdir())
    if [p.name for p in entries] != ["tiles"] or not entries[0].is_dir():
        return False
    return all(p.is_file() and (_TILE_FILE.fullmatch(p.name) or _TILE_PARTIAL.fullmatch(p.name))
               for p in entries[0].iterdir())


def check_work_dir(folder: Path | str) -> None:
    """Raise WorkDirError unless ``folder`` is new, empty, or a work folder (it holds a manifest, or only tiles
    left by a stopped clean-up)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WorkDirError(f"The work folder {folder} is a file; give a folder (new or empty).")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MANIFEST).is_file() and not _tiles_only(folder):
        raise WorkDirError(f"The work folder {folder} holds files but no {MANIFEST}: it is not a DF4LCZ work "
                           "folder, and nothing in it is deleted. Give a new or empty folder.")


class TileStore:
    """The work ``folder`` of a run described by ``manifest`` (a JSON-serialisable dict).

    An empty or new folder is set up; a folder of an earlier run with the same manifest keeps its finished
    tiles; one with another manifest loses them (reported through ``feedback``). Raises WorkDirError when the
    folder is a file, or holds other files and no manifest (it is not a work folder: nothing is deleted).
    """

    def __init__(self, folder: Path | str, manifest: dict[str, Any], feedback: Feedback) -> None:
        self.folder = Path(folder)
        self.tiles = self.folder / "tiles"
        # Compared as text: JSON turns tuples into lists, and a NaN nodata value is never equal to itself.
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        manifest_path = self.folder / MANIFEST
        check_work_dir(self.folder)
        old = manifest_path.read_text(encoding="utf-8") if manifest_path.is_file() else None
        if old != text:
            stale = self.finished()
            for path in stale:
                path.unlink()
            if old is not None:
                feedback.info(f"The {len(stale)} tile(s) in {self.folder} were made from another input, model or "
                              "arguments; they are discarded.")
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_output(manifest_path) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
        self.tiles.mkdir(exist_ok=True)

    def finished(self) -> list[Path]:
        """Paths of the finished tile files."""
        return sorted(p for p in self.tiles.glob("r*_c*.tif") if _TILE_FILE.fullmatch(p.name))

    def has(self, tile: Tile) -> bool:
        """Whether ``tile``'s file is there and reads back whole; one that does not is deleted (not done)."""
        path = tile_file(self.tiles, tile)
        if not path.is_file():
            return False
        try:
            whole = load_tile(self.tiles, tile).codes.shape == tuple(tile[2:])
            if not whole:  # another tile size: not this run's
                path.unlink()
            return whole
        except (RuntimeError, TypeError, ValueError):  # GDAL cannot read it, or its metadata is gone
            path.unlink(missing_ok=True)
            return False

    def clear(self) -> None:
        """Delete the manifest, then the tiles, then the folders if nothing else is in them."""
        (self.folder / MANIFEST).unlink(missing_ok=True)
        for path in self.finished():
            kill_point("clear")
            path.unlink()
        for folder in (self.tiles, self.folder):
            with contextlib.suppress(OSError):  # not empty: not ours to delete
                folder.rmdir()
