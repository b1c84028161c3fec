"""VHR imagery as the engine reads it: a GDAL file. Layers of other providers (WMS/WMTS, XYZ tiles, …) are
rendered by QGIS over the extent at 1 m into a temporary GeoTIFF first."""

from __future__ import annotations

import math

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProcessingUtils, QgsRasterFileWriter,
                       QgsRasterLayer, QgsRasterPipe, QgsRasterProjector, QgsRectangle)

from .base import gdal_source
from .compat import RASTER_WRITER_SUCCESS

EXPORT_PIXEL_M = 1.0
PATCH_MARGIN_M = 320.0


def metric_crs(crs: QgsCoordinateReferenceSystem, extent_centre: QgsPointXY,
               context: QgsProcessingContext) -> QgsCoordinateReferenceSystem:
    """``crs`` if it is projected in true metres; else (geographic, Web Mercator) the UTM zone of the centre.

    extent_centre: a QgsPointXY in ``crs``.
    """
    if not crs.isGeographic() and crs.authid() != "EPSG:3857":
        return crs
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    centre = QgsCoordinateTransform(crs, wgs84, context.transformContext()).transform(QgsPointXY(extent_centre))
    zone = int((centre.x() + 180) // 6) + 1
    return QgsCoordinateReferenceSystem(f"EPSG:{(32600 if centre.y() >= 0 else 32700) + zone}")


def vhr_path(layer: QgsRasterLayer, bounds: tuple[float, float, float, float] | None,
             crs: QgsCoordinateReferenceSystem, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> str:
    """A GDAL-readable path of ``layer`` covering ``bounds`` (xmin, ymin, xmax, ymax in ``crs``).

    GDAL layers are used as they are. Other providers need ``bounds``: the layer is rendered over them plus a
    320 m margin, at 1 m in ``crs``. Raises QgsProcessingException when bounds are missing or writing fails.
    """
    if layer.providerType() == "gdal":
        return gdal_source(layer, "VHR")
    if bounds is None:
        raise QgsProcessingException(f"The VHR layer '{layer.name()}' comes from the '{layer.providerType()}' "
                                     "provider (web or tile imagery): it is fetched at 1 m over an EXTENT, so give one "
                                     "(to train on it, save the imagery as a GeoTIFF first).")
    extent = QgsRectangle(*bounds)
    extent.grow(PATCH_MARGIN_M)
    path = QgsProcessingUtils.generateTempFilename("vhr_rendered.tif")
    pipe = QgsRasterPipe()
    pipe.set(layer.dataProvider().clone())
    pipe.set(layer.renderer().clone())
    projector = QgsRasterProjector()
    projector.setCrs(layer.crs(), crs, context.transformContext())
    pipe.insert(2, projector)
    width, height = (math.ceil(size / EXPORT_PIXEL_M) for size in (extent.width(), extent.height()))
    feedback.pushInfo(f"Rendering the VHR layer '{layer.name()}' at 1 m ({width} × {height} px) into {path}")
    error = QgsRasterFileWriter(path).writeRaster(pipe, width, height, extent, crs, context.transformContext())
    if error != RASTER_WRITER_SUCCESS:
        raise QgsProcessingException(f"Could not render the VHR layer '{layer.name()}' (QgsRasterFileWriter "
                                     f"error {int(error)}).")
    return path


def vhr_source_id(layer: QgsRasterLayer) -> str | None:
    """The imagery's identity in the graph cache: None for a GDAL file (the engine keys it by path, size and
    modification time), else the layer's provider and URI, which stay the same from one rendering to the next."""
    return None if layer.providerType() == "gdal" else f"{layer.providerType()}|{layer.source()}"
