"""``df4lcz:lczparameters`` ("LCZ urban canopy parameters"): Stewart & Oke (2012) Tables 3–4 mapped over an
LCZ raster."""

from __future__ import annotations

from typing import Any

from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputString,
                       QgsProcessingParameterEnum, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer)

from ..df4lcz_plugin.lcz.lcz_parameters import CITATION, PROPERTIES, STATISTICS
from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from .base import DF4LCZAlgorithm, engine_errors, gdal_source, tr
from .styling import style_on_load


class LCZParametersAlgorithm(DF4LCZAlgorithm):
    LCZ = "LCZ"
    STATISTIC = "STATISTIC"
    OUTPUT = "OUTPUT"
    CLASSES = "CLASSES"

    needs = "none"  # GDAL and numpy only
    description = "Maps the urban canopy properties of each LCZ (Stewart & Oke 2012): SVF, heights, fractions…"
    keywords = ("urban canopy parameters", "ucp", "sky view factor", "albedo", "admittance", "anthropogenic heat",
                "stewart", "oke", "lcz4r")
    icon_name = "lcz_parameters"

    def name(self) -> str:
        return "lczparameters"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("LCZ urban canopy parameters")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        bands = "; ".join(f"{i}: {p.key}, {p.title.lower()} ({p.unit})" for i, p in enumerate(PROPERTIES, start=1))
        return tr(f"Turns an LCZ map (one band; codes 1–17, or 101–107 for LCZ A–G: ours, WUDAPT, the global map) "
                  f"into a GeoTIFF of the properties of each zone on the same grid, one Float32 band per property, "
                  f"with band descriptions and units: {bands}. Source: {CITATION}.\n\n"
                  "Each class has a range; STATISTIC picks its low or high end or its middle. Open ranges ('> 25 "
                  "m', '< 10 %') take the property's physical limit as the missing bound (0; 100 % for fractions; "
                  "1 for the sky view factor), or, where it has none (aspect ratio > 2, height > 25 m, heat > 300 "
                  "W m⁻²), the stated bound: those values are lower estimates. No data (−9999) where the map has "
                  "none, and for the admittance of LCZ A, unknown in the paper.\n\n"
                  "A raster that is not an LCZ map (several bands, fractional values, values that are not LCZ "
                  "codes) is refused. The values are the class's typical ranges, not measurements of the place.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.LCZ, tr("LCZ map")))
        statistic = QgsProcessingParameterEnum(self.STATISTIC, tr("Value of each class's range"),
                                               options=list(STATISTICS), defaultValue="middle")
        statistic.setUsesStaticStrings(True)
        self.addParameter(statistic)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Urban canopy parameters")))
        self.addOutput(QgsProcessingOutputString(self.CLASSES, tr("Cells per LCZ code (JSON)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        import json

        from ..df4lcz_plugin.lcz.lcz_parameters import write_parameter_raster

        layer = self.parameterAsRasterLayer(parameters, self.LCZ, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        statistic = self.parameterAsEnumString(parameters, self.STATISTIC, context)
        with engine_errors():
            source = gdal_source(layer, self.LCZ)
            check_output_paths({self.LCZ: source}, {self.OUTPUT: geotiff_output(output)})
            classes = write_parameter_raster(source, output, statistic)
        feedback.pushInfo(f"{sum(classes.values())} LCZ cells, {len(classes)} classes; {len(PROPERTIES)} bands "
                          f"({statistic} of each range).")
        style_on_load(context, [(output, True, tr("LCZ urban canopy parameters"))], layer.name())
        return {self.OUTPUT: output, self.CLASSES: json.dumps(classes)}
