"""``df4lcz:globallczmap`` ("Global LCZ map window"): the window of the global 100 m LCZ map (Demuzere et al.
2022) over an extent or on an LCZ map's grid, for comparing with ours."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingOutputString, QgsProcessingParameterExtent,
                       QgsProcessingParameterFile, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer)

from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from .base import DF4LCZAlgorithm, engine_errors, gdal_source, tr
from .styling import style_on_load


class GlobalLCZMapAlgorithm(DF4LCZAlgorithm):
    EXTENT = "EXTENT"
    GRID = "GRID"
    LOCAL_COPY = "LOCAL_COPY"
    OUTPUT = "OUTPUT"
    CLASSES = "CLASSES"
    READ_FROM = "READ_FROM"

    needs = "none"
    description = "Reads the global 100 m LCZ map (Demuzere et al. 2022) over an extent or onto an LCZ map's grid."
    keywords = ("global lcz map", "demuzere", "zenodo", "compare", "agreement", "download", "lcz_get_map")
    icon_name = "global_lcz_map"

    def name(self) -> str:
        return "globallczmap"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Global LCZ map window")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Reads the window of the global LCZ map (Demuzere et al. 2022, ESSD 14:3835; lcz_filter_v3.tif, "
                  "Zenodo record 8419340, 100 m, EPSG:4326, CC BY 4.0) that covers EXTENT, or the grid of an LCZ "
                  "map (GRID: the output then has that map's CRS, cells and size, ready for 'Assess LCZ map "
                  "accuracy'). Only the window is read, by GDAL over /vsicurl/ from Zenodo; offline, a local copy "
                  "of the file is read instead (LOCAL_COPY, or data/lcz_filter_v3.tif in a DF4LCZ_ASSET_MIRROR "
                  "folder). Resampling: mode, the majority of the source cells in each output cell (nearest "
                  "neighbour would keep one arbitrary cell). Without GRID the window keeps the map's own cells, "
                  "in EPSG:4326. The output is an LCZ GeoTIFF (codes 1–17, 0 = no data) with the LCZ colours. "
                  "An extent outside the map, a window of only no data, a file that is not an LCZ map, and an "
                  "offline run without a local copy are refused with the reason.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent (ignored with a grid)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.GRID, tr("Grid of this LCZ map (optional)"),
                                                            optional=True))
        self.addParameter(QgsProcessingParameterFile(self.LOCAL_COPY, tr("Local copy of lcz_filter_v3.tif "
                                                                         "(optional)"),
                                                     optional=True, fileFilter="GeoTIFF (*.tif *.tiff)"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Global LCZ map window")))
        self.addOutput(QgsProcessingOutputString(self.CLASSES, tr("Cells per LCZ code (JSON)")))
        self.addOutput(QgsProcessingOutputString(self.READ_FROM, tr("Where the global map was read")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from osgeo import gdal

        from ..df4lcz_plugin.runtime import assets
        from ..df4lcz_plugin.lcz.global_lcz import write_window

        grid = self.parameterAsRasterLayer(parameters, self.GRID, context) if parameters.get(self.GRID) else None
        local_copy = self.parameterAsFile(parameters, self.LOCAL_COPY, context) or None
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        with engine_errors():
            grid_path = gdal_source(grid, self.GRID) if grid is not None else None
            check_output_paths({self.GRID: grid_path, self.LOCAL_COPY: local_copy},
                               {self.OUTPUT: geotiff_output(output, style=True)})
            if grid_path:
                target = gdal.Open(grid_path)
                gt = target.GetGeoTransform()
                bounds = (gt[0], gt[3] + gt[5] * target.RasterYSize, gt[0] + gt[1] * target.RasterXSize, gt[3])
                wkt, size = target.GetProjection(), (target.RasterXSize, target.RasterYSize)
            elif parameters.get(self.EXTENT):
                wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
                extent = self.parameterAsExtent(parameters, self.EXTENT, context, wgs84)
                bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
                wkt, size = wgs84.toWkt(), None
            else:
                raise QgsProcessingException("Give an EXTENT, or an LCZ map as GRID, to say which window to read.")
            source, read_from = assets.open_remote_raster(assets.GLOBAL_LCZ_MAP, local_copy)
            feedback.pushInfo(f"Reading the global LCZ map from {read_from}.")
            classes = write_window(source, output, bounds, wkt, size,
                                   metadata={"source": assets.GLOBAL_LCZ_MAP.description, "read_from": read_from})
        style_on_load(context, [(output, True, tr("Global LCZ map"))], grid.name() if grid else "extent")
        return {self.OUTPUT: output, self.CLASSES: json.dumps(classes), self.READ_FROM: read_from}
