"""The one writing path of a classification, in-process or on Dask: the styled LCZ GeoTIFF and the optional
probability and decision-source GeoTIFFs, filled tile by tile under temporary names (``outputs.atomic_output``),
renamed when complete, then given their ``.qml`` sidecars."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..lcz.lcz_raster import (create_lcz_raster, create_probability_raster, create_source_raster,
                         write_probability_style, write_style_sidecar)
from ..runtime.kill_points import kill_point
from ..runtime.outputs import atomic_output

if TYPE_CHECKING:
    from osgeo import gdal

    from ..runtime.grid import OutputGrid
    from .classify import TileResult


class MapWriter:
    """Writes each tile's ``classify.TileResult`` into the open output datasets at the tile's place."""

    def __init__(self, datasets: dict[str, gdal.Dataset]) -> None:
        self.datasets = datasets

    def write(self, tile: tuple[int, int, int, int], result: TileResult) -> None:
        """tile: (row, col, rows, cols) in output cells; result: its TileResult (arrays of rows × cols)."""
        kill_point("mosaic")
        row, col = tile[:2]
        self.datasets["lcz"].GetRasterBand(1).WriteArray(result.codes, col, row)
        if "probabilities" in self.datasets:
            self.datasets["probabilities"].WriteArray(result.probabilities, col, row)
        if "source" in self.datasets:
            self.datasets["source"].GetRasterBand(1).WriteArray(result.source, col, row)


@contextlib.contextmanager
def open_map(grid: OutputGrid, projection: str, metadata: dict[str, str], output_path: Path | str, palette: str,
             probabilities_path: Path | str | None = None,
             source_path: Path | str | None = None) -> Iterator[MapWriter]:
    """Yield a MapWriter over new GeoTIFFs of ``grid`` (``lcz_raster``: LCZ codes with colour table and category
    names; 18-band probabilities in percent; decision source). On success they are renamed into place and the
    ``.qml`` sidecars written; on any error (or SIGTERM) nothing is left behind and existing files are untouched.
    """
    with contextlib.ExitStack() as stack:
        lcz_tmp = stack.enter_context(atomic_output(output_path))
        prob_tmp = stack.enter_context(atomic_output(probabilities_path)) if probabilities_path else None
        source_tmp = stack.enter_context(atomic_output(source_path)) if source_path else None
        datasets: dict[str, gdal.Dataset] = {}
        # Runs first on exit: GDAL must close (and write its .aux.xml) before the files are renamed or removed.
        stack.callback(datasets.clear)
        datasets["lcz"] = create_lcz_raster(lcz_tmp, grid, projection, palette, metadata)
        if prob_tmp:
            datasets["probabilities"] = create_probability_raster(prob_tmp, grid, projection, metadata)
        if source_tmp:
            datasets["source"] = create_source_raster(source_tmp, grid, projection, metadata)
        yield MapWriter(datasets)
    write_style_sidecar(output_path, palette)
    if probabilities_path:
        write_probability_style(probabilities_path)
