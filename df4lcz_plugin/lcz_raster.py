"""Create the LCZ GeoTIFF (codes 1–17, 0 = no data, colour table, category names) and the probability GeoTIFF,
and write the QML sidecar QGIS reads when it opens the file. See ``shared/design/qgis_anchors_and_conventions.md`` §3.
"""

from pathlib import Path

from osgeo import gdal

from . import legend
from .fusion import SOURCE_LABELS, SOURCE_NODATA

gdal.UseExceptions()

PROBABILITY_NODATA = 255
_OPTIONS = ["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"]


def create_lcz_raster(path, grid, projection, palette_name="official_2022", metadata=None):
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


def create_probability_raster(path, grid, projection, metadata=None):
    """A new 17-band Byte GeoTIFF of class probabilities in percent (0–100), nodata 255."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), grid.cols, grid.rows, len(legend.CODES), gdal.GDT_Byte,
                                              options=_OPTIONS + ["INTERLEAVE=BAND"])
    ds.SetGeoTransform(grid.geotransform)
    ds.SetProjection(projection)
    for code in legend.CODES:
        band = ds.GetRasterBand(code)
        band.SetNoDataValue(PROBABILITY_NODATA)
        band.SetDescription(f"P({legend.label(code)}) %")
    ds.SetMetadata(metadata or {})
    return ds


def create_source_raster(path, grid, projection, metadata=None):
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


def write_style_sidecar(raster_path, palette_name="official_2022"):
    """Write ``<raster>.qml`` (17 labelled classes), which QGIS applies when it opens the raster."""
    qml_path = Path(raster_path).with_suffix(".qml")
    qml_path.write_text(legend.qml(palette_name), encoding="utf-8")
    return qml_path
