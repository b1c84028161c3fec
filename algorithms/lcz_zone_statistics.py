"""``df4lcz:lczzonestatistics`` ("LCZ share per zone"): km² and % of each LCZ in each polygon of a vector
layer, counted by QGIS's own ``native:zonalhistogram``."""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsDistanceArea,
                       QgsFeature, QgsFeatureSink, QgsFields, QgsGeometry, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterRasterLayer, QgsProcessingUtils,
                       QgsRasterLayer, QgsRectangle, QgsVectorLayer)
from qgis.PyQt.QtCore import QMetaType

from ..df4lcz_plugin.lcz import legend
from .base import DF4LCZAlgorithm, engine_errors, gdal_source, tr
from .compat import AREA_SQUARE_KILOMETERS, DISTANCE_METERS, SOURCE_VECTOR_POLYGON, field


def field_names(code: int) -> tuple[str, str]:
    """(km², %) field names of an LCZ code: its legend label without ':' and ',', e.g. "LCZ C Bush scrub km2"."""
    name = re.sub(r"[:,]", "", legend.label(code))
    return f"{name} km2", f"{name} pct"


class LCZZoneStatisticsAlgorithm(DF4LCZAlgorithm):
    LCZ = "LCZ"
    ZONES = "ZONES"
    OUTPUT = "OUTPUT"

    needs = "none"
    description = "Area (km²) and share (%) of each LCZ in each polygon, e.g. districts (native:zonalhistogram)."
    keywords = ("zonal statistics", "zonal histogram", "area", "districts", "share", "lcz_cal_area")
    icon_name = "lcz_zone_statistics"

    def name(self) -> str:
        return "lczzonestatistics"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("LCZ share per zone")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("For each polygon of ZONES (districts, wards…), the area in km² and the share in % of each LCZ "
                  "of the LCZ map (one band; codes 1–17, or 101–107 for A–G). The cells are counted by QGIS's "
                  "Zonal histogram (native:zonalhistogram: a cell counts when its centre is inside the polygon; "
                  "polygons in another CRS are reprojected). The share is of the polygon's LCZ cells (no data left "
                  "out); km² = cells × cell area, the cell area measured on the ellipsoid at the polygon's centre "
                  "for a geographic map (EPSG:4326). Output: the polygons with their fields plus 'LCZ <code> "
                  "<name> km2' and '… pct' for LCZ 1–10, A–G and 'LCZ cells km2' (GeoPackage keeps the names; a "
                  "shapefile truncates them to 10 characters). A raster that is not an LCZ map is refused.")

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.LCZ, tr("LCZ map")))
        self.addParameter(QgsProcessingParameterFeatureSource(self.ZONES, tr("Zones (polygons)"),
                                                              [SOURCE_VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, tr("LCZ share per zone"),
                                                            SOURCE_VECTOR_POLYGON))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802 (QGIS API)
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.lcz.lcz_raster import read_lcz_map

        layer = self.parameterAsRasterLayer(parameters, self.LCZ, context)
        zones = self.parameterAsSource(parameters, self.ZONES, context)
        if zones is None:
            raise QgsProcessingException(f"{self.ZONES} must be a polygon layer.")
        with engine_errors():
            read_lcz_map(gdal_source(layer, self.LCZ))  # refuse a raster that is not an LCZ map, before counting
        counted = self._zonal_histogram(layer, parameters, context, feedback)
        histo = {f.name(): int(f.name()[6:]) for f in counted.fields()
                 if f.name().startswith("HISTO_") and f.name()[6:].lstrip("-").isdigit()}
        original = [f.name() for f in zones.fields()]
        fields = _output_fields(zones.fields())
        sink, dest = self.parameterAsSink(parameters, self.OUTPUT, context, fields, zones.wkbType(),
                                          zones.sourceCrs())
        cell_km2 = self._cell_area(layer, zones.sourceCrs(), context)
        total = counted.featureCount() or 1
        for index, feature in enumerate(counted.getFeatures()):
            if feedback.isCanceled():
                break
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            lcz = _lcz_attributes(_lcz_counts(feature, histo), cell_km2(feature.geometry()))
            out.setAttributes([feature[name] for name in original] + lcz)
            sink.addFeature(out, QgsFeatureSink.Flag.FastInsert)
            feedback.setProgress(100.0 * (index + 1) / total)
        return {self.OUTPUT: dest}

    def _zonal_histogram(self, layer: QgsRasterLayer, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> QgsVectorLayer:
        """The ZONES polygons with QGIS's ``native:zonalhistogram`` counts of the LCZ map's values (fields
        ``HISTO_<value>``)."""
        histogram = QgsApplication.processingRegistry().algorithmById("native:zonalhistogram")
        result, ok = histogram.run({"INPUT_RASTER": layer, "RASTER_BAND": 1, "INPUT_VECTOR": parameters[self.ZONES],
                                    "COLUMN_PREFIX": "HISTO_", "OUTPUT": "TEMPORARY_OUTPUT"}, context, feedback)
        if not ok:
            raise QgsProcessingException("QGIS's Zonal histogram failed; see the log above.")
        return QgsProcessingUtils.mapLayerFromString(result["OUTPUT"], context)

    @staticmethod
    def _cell_area(layer: QgsRasterLayer, zones_crs: QgsCoordinateReferenceSystem, context: QgsProcessingContext
                   ) -> Callable[[QgsGeometry], float]:
        """geometry (in ``zones_crs``) → km² of one LCZ cell there: constant for a map in metres, measured on
        the ellipsoid at the geometry's centre for a geographic map."""
        crs = layer.crs()
        dx, dy = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
        if not crs.isGeographic():
            if crs.mapUnits() != DISTANCE_METERS:
                raise QgsProcessingException(f"The LCZ map's CRS ({crs.authid()}) is in neither metres nor degrees; "
                                             "reproject it (Warp) to a metric CRS first.")
            return lambda geometry: dx * dy / 1e6
        distance = QgsDistanceArea()
        distance.setSourceCrs(crs, context.transformContext())
        distance.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030")
        to_map = QgsCoordinateTransform(zones_crs, crs, context.transformContext())

        def area(geometry: QgsGeometry) -> float:
            centre = to_map.transform(geometry.centroid().asPoint())
            cell = QgsGeometry.fromRect(QgsRectangle(centre.x(), centre.y(), centre.x() + dx, centre.y() + dy))
            return distance.convertAreaMeasurement(distance.measureArea(cell), AREA_SQUARE_KILOMETERS)
        return area


def _output_fields(zone_fields: QgsFields) -> QgsFields:
    """The zones' fields, then km² and % of each LCZ (``field_names``) and the km² of all LCZ cells."""
    fields = QgsFields(zone_fields)
    for code in legend.CODES:
        for name in field_names(code):
            fields.append(field(name, QMetaType.Type.Double))
    fields.append(field("LCZ cells km2", QMetaType.Type.Double))
    return fields


def _lcz_counts(feature: QgsFeature, histo: dict[str, int]) -> dict[int, int]:
    """LCZ code → cells of that LCZ in a zone ``feature``, from its ``histo`` fields {field name: raster value}
    (values normalised to codes 1–17; no data and values that are no LCZ left out)."""
    counts = dict.fromkeys(legend.CODES, 0)
    for name, value in histo.items():
        code = int(legend.normalise_codes([value])[0])
        if code:
            counts[code] += int(feature[name] or 0)
    return counts


def _lcz_attributes(counts: dict[int, int], km2: float) -> list[Optional[float]]:
    """The LCZ fields of a zone (``_output_fields`` order): km² and % of each LCZ, then km² of all LCZ cells;
    ``counts``: LCZ code → cells, ``km2``: area of one cell there. The % are None in a zone without LCZ cells."""
    cells = sum(counts.values())
    attributes: list[Optional[float]] = []
    for code in legend.CODES:
        attributes += [counts[code] * km2, 100.0 * counts[code] / cells if cells else None]
    attributes.append(cells * km2)
    return attributes
