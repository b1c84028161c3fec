"""Create the LCZ GeoTIFF (codes 1–17, 0 = no data, colour table, category names) and the probability GeoTIFF,
and write the QML sidecar QGIS reads when it opens the file. See ``shared/design/qgis_anchors_and_conventions.md`` §3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from osgeo import gdal

from . import legend
from ..runtime.outputs import atomic_output

if TYPE_CHECKING:
    from ..runtime.grid import OutputGrid

gdal.UseExceptions()

PROBABILITY_NODATA = 255
#: Codes of the SOURCE band: which stream gave each cell its class (``mapping.fusion``).
SOURCE_NODATA, SOURCE_S2, SOURCE_FUSED = 0, 1, 2
SOURCE_LABELS = {SOURCE_NODATA: "No data", SOURCE_S2: "Sentinel-2 stream only", SOURCE_FUSED: "Sentinel-2 + VHR fused"}
#: Band of the probability raster holding the winning class's probability (after the 17 class bands).
WINNER_BAND = len(legend.CODES) + 1
_OPTIONS = ["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"]


class LCZMapError(ValueError):
    """A raster is not an LCZ map (several bands, fractional values, values that are not LCZ codes), or holds no
    LCZ cell where one is needed."""


def read_lcz_map(path: Path | str) -> tuple[gdal.Dataset, npt.NDArray[np.int64]]:
    """(GDAL dataset, int64 (H, W) codes 0–17) of an LCZ map: one band of codes 1–17 (or 101–107 for A–G).

    Raises LCZMapError when the raster is not an LCZ map (several bands, e.g. the 18-band probability
    raster, or values that are not LCZ codes).
    """
    ds = gdal.Open(str(path))
    if ds.RasterCount != 1:
        hint = (" It looks like the probability raster (PROBABILITIES of 'Classify local climate zones')."
                if ds.RasterCount in (len(legend.CODES), WINNER_BAND) else "")  # 17: before the winner band
        raise LCZMapError(f"The LCZ map {path} has {ds.RasterCount} bands; an LCZ map has one band of LCZ codes "
                              f"1–17.{hint} Give the LCZ map itself (OUTPUT of 'Classify local climate zones').")
    band = ds.GetRasterBand(1)
    values = band.ReadAsArray()
    nodata = band.GetNoDataValue()
    stored = values[values != nodata] if nodata is not None else values.ravel()
    if stored.dtype.kind == "f" and not np.array_equal(stored, np.round(stored)):
        raise LCZMapError(f"The LCZ map {path} holds fractional values, so it is not an LCZ map (codes 1–17). "
                              "Give the LCZ map (OUTPUT of 'Classify local climate zones').")
    foreign = stored[(stored != legend.NODATA) & (legend.normalise_codes(stored) == legend.NODATA)]
    if foreign.size > 0.01 * stored.size:  # a few stray cells are tolerated and left out
        raise LCZMapError(f"The LCZ map {path} is not an LCZ map: {foreign.size} of its cells hold values "
                              f"that are not LCZ codes 1–17 or 101–107 (e.g. "
                              f"{', '.join(f'{v:g}' for v in np.unique(foreign)[:5])}). Give the LCZ map (OUTPUT of "
                              "'Classify local climate zones').")
    return ds, legend.normalise_codes(values)


def create_lcz_raster(path: Path | str, grid: OutputGrid, projection: str, palette_name: str = "official_2022",
                      metadata: dict[str, str] | None = None) -> gdal.Dataset:
    """A new single-band Byte GeoTIFF over ``grid`` styled with the LCZ palette; returns the GDAL dataset.

    The GDAL colour table and category names (stored by GTiff in the ``.aux.xml`` sidecar) give every QGIS
    load path the 17 labelled colours.
    """
    ds = gdal.GetDriverByName("GTiff").Create(str(path), grid.cols, grid.rows, 1, gdal.GDT_Byte, options=_OPTIONS)
    ds.SetGeoTransform(grid.geotransform)
    ds.SetProjection(projection)
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(legend.NODATA)
    table = gdal.ColorTable()
    table.SetColorEntry(legend.NODATA, (0, 0, 0, 0))
    for code, colour in zip(legend.CODES, legend.palette(palette_name)):
        table.SetColorEntry(code, (*legend.rgb(colour), 255))
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetCategoryNames(["No data"] + [legend.label(code) for code in legend.CODES])
    band.SetDescription("LCZ")
    ds.SetMetadata(metadata or {})
    return ds


def palette_of(band: gdal.Band, default: str = "official_2022") -> str:
    """The name of the LCZ palette (``legend.PALETTES``) whose colours codes 1–17 of the GDAL ``band``'s colour
    table hold, or ``default`` when it has none of them (no table, WUDAPT codes 101–107, colours of its own)."""
    table = band.GetColorTable()
    if table is None or table.GetCount() <= max(legend.CODES):
        return default
    colours = tuple(tuple(table.GetColorEntry(code)[:3]) for code in legend.CODES)
    return next((name for name, hexes in legend.PALETTES.items()
                 if colours == tuple(legend.rgb(h) for h in hexes)), default)


def create_probability_raster(path: Path | str, grid: OutputGrid, projection: str,
                              metadata: dict[str, str] | None = None) -> gdal.Dataset:
    """A new 18-band Byte GeoTIFF in percent (0–100), nodata 255: bands 1–17 the probability of LCZ 1–10, A–G,
    band 18 (``WINNER_BAND``) the probability of the winning class, the map's confidence, which the ``.qml``
    of ``write_probability_style`` shows."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), grid.cols, grid.rows, WINNER_BAND, gdal.GDT_Byte,
                                              options=_OPTIONS + ["INTERLEAVE=BAND"])
    ds.SetGeoTransform(grid.geotransform)
    ds.SetProjection(projection)
    for code in legend.CODES:
        ds.GetRasterBand(code).SetDescription(f"P({legend.label(code)}) %")
    ds.GetRasterBand(WINNER_BAND).SetDescription("P(winning class) %")
    for index in range(1, WINNER_BAND + 1):
        ds.GetRasterBand(index).SetNoDataValue(PROBABILITY_NODATA)
    ds.SetMetadata(metadata or {})
    return ds


def probability_percent(probs: npt.NDArray[np.floating], missing: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """uint8 (18, rows, cols) for ``create_probability_raster`` from float (17, rows, cols) probabilities (0–1)
    and bool (rows, cols) cells without a class (written as PROBABILITY_NODATA)."""
    percent = np.rint(np.nan_to_num(probs) * 100)
    stacked = np.concatenate([percent, percent.max(axis=0, keepdims=True)])
    return np.where(missing, PROBABILITY_NODATA, stacked).astype(np.uint8)


def create_source_raster(path: Path | str, grid: OutputGrid, projection: str,
                         metadata: dict[str, str] | None = None) -> gdal.Dataset:
    """A new Byte GeoTIFF saying which streams decided each cell: 0 no data, 1 Sentinel-2 only, 2 fused."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), grid.cols, grid.rows, 1, gdal.GDT_Byte, options=_OPTIONS)
    ds.SetGeoTransform(grid.geotransform)
    ds.SetProjection(projection)
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(SOURCE_NODATA)
    band.SetCategoryNames([SOURCE_LABELS[k] for k in sorted(SOURCE_LABELS)])
    band.SetDescription("LCZ decision source")
    ds.SetMetadata(metadata or {})
    return ds


def write_style_sidecar(raster_path: Path | str, palette_name: str = "official_2022") -> Path:
    """Write ``<raster>.qml`` (17 labelled classes), which QGIS applies when it opens the raster."""
    return _write_qml(raster_path, legend.qml(palette_name))


def write_probability_style(raster_path: Path | str) -> Path:
    """Write ``<raster>.qml`` for a probability raster: its band 18, the winning class's probability, on a
    sequential 0–100 % ramp (the classes' own bands stay readable in the layer's properties)."""
    return _write_qml(raster_path, legend.confidence_qml(WINNER_BAND))


def write_ramp_style(raster_path: Path | str, band: int, minimum: float, maximum: float, unit: str) -> Path:
    """Write ``<raster>.qml`` showing ``band`` on the sequential ramp over ``minimum``–``maximum`` (``unit``)."""
    return _write_qml(raster_path, legend.ramp_qml(band, minimum, maximum, unit))


def _write_qml(raster_path: Path | str, text: str) -> Path:
    # Under a temporary name, renamed when complete: a killed run leaves the old style or the new one.
    qml_path = Path(raster_path).with_suffix(".qml")
    with atomic_output(qml_path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return qml_path
