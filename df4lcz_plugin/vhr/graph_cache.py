"""SAM work is never repeated: the object graph of every footprint is kept in an on-disk cache.

One ``.npz`` file per graph (``x``, ``edge_index``, ``edge_weight``; numpy only, no pickles), and one per
shared-segmentation SAM tile (``sam_tiles.pack``: bit-packed masks, compressed), named by the sha256 of
its key: the VHR source's identity (``source_id``: path, size and modification time of a file, or a web layer's
URI), the footprint (xmin, ymin, xmax, ymax, rounded to the centimetre) and its CRS, the SAM checkpoint's sha256,
the AMG settings and the graph rule. Any change of imagery, checkpoint or settings is a new key, so a stale graph
is never used.

The cache is per user (``$XDG_CACHE_HOME/df4lcz/graphs``, or ``$DF4LCZ_GRAPH_CACHE``), written via temporary files,
safe to delete at any time, and capped (``DF4LCZ_GRAPH_CACHE_MB``, default 2048 MB; the least recently used
graphs go first). A graph of a few dozen nodes is about 2–5 kB, so the default holds about half a million.
"""

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .graph import ObjectGraph
from ..runtime.outputs import atomic_output

DEFAULT_CAP_MB = 2048
_TRIM_EVERY = 256  # writes between two checks of the cache's size


def file_identity(path: Path | str) -> str:
    """``source_id`` of a raster file: its absolute path, size and modification time."""
    stat = os.stat(path)
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


class GraphCache:
    """Object graphs of footprints on disk. ``folder`` defaults to the per-user cache."""

    def __init__(self, folder: Path | str | None = None, cap_bytes: int | None = None) -> None:
        from ..runtime.assets import cache_dir

        self.folder = Path(folder or os.environ.get("DF4LCZ_GRAPH_CACHE") or cache_dir() / "graphs")
        self.cap_bytes = cap_bytes or int(os.environ.get("DF4LCZ_GRAPH_CACHE_MB", DEFAULT_CAP_MB)) << 20
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writes = 0

    @staticmethod
    def key(source_id: str, footprint: Sequence[float], srs_wkt: str, checkpoint_sha256: str,
            amg_settings: dict[str, Any], graph_rule: dict[str, Any]) -> str:
        """Hex sha256 naming the graph of ``footprint`` under these imagery, checkpoint and settings."""
        text = json.dumps({"source": source_id, "footprint": [round(v, 2) for v in footprint],
                           "crs": hashlib.sha256(srs_wkt.encode()).hexdigest(), "sam": checkpoint_sha256,
                           "amg": amg_settings, "rule": graph_rule}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()

    def get(self, key: str) -> ObjectGraph | None:
        """The cached ObjectGraph, or None. A hit refreshes the file's time (least recently used goes first)."""
        data = self.get_arrays(key)
        try:
            return None if data is None else ObjectGraph(data["x"], data["edge_index"], data["edge_weight"])
        except KeyError:  # not a graph: recompute
            return None

    def put(self, key: str, graph: ObjectGraph) -> None:
        self.put_arrays(key, {"x": graph.x, "edge_index": graph.edge_index, "edge_weight": graph.edge_weight})

    def get_arrays(self, key: str) -> dict[str, npt.NDArray[Any]] | None:
        """The cached dict of arrays (a graph, or the SAM masks of a shared-segmentation tile), or None."""
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            os.utime(path)
            return arrays
        except (OSError, ValueError, EOFError):  # absent, or half a file from a crash: recompute
            return None

    def put_arrays(self, key: str, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        path = self._path(key)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)
        self._writes += 1
        if self._writes % _TRIM_EVERY == 1:
            self.trim()

    def trim(self) -> None:
        """Delete the least recently used graphs until the cache is within its cap."""
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.folder.glob("*/*.npz")]
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.cap_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
