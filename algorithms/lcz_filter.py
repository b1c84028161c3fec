"""``df4lcz:lczfilter`` ("Filter an LCZ map (LCZ Generator Gaussian filter)"): the LCZ Generator's filtered map
of any LCZ raster; the engine is ``df4lcz_plugin.lcz.lcz_filter``."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputString,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer)

from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from .base import DF4LCZAlgorithm, ProcessingFeedback, engine_errors, gdal_source, tr
from .styling import style_on_load

#: The rule as the help and docs/guide/lczfilter.md state it (``lcz_filter.KERNELS``).
FILTER_HELP = ("Each class's one-hot mask is convolved with a normalised Gaussian kernel of that class's radius and "
               "σ in metres (LCZ 1: 200/100; LCZ 2–7 and 9: 300/150; LCZ 8 and 10: 500/250; A–D and F: 200/75; "
               "E: 300/150; G: 50/25), and each cell keeps the class whose smoothed value is highest: a single cell "
               "inside fields or a built-up area (speckle) goes, while water (G's kernel barely reaches the next "
               "cell at 100 m) neither spreads nor clears what lies in it. Along each axis the kernel reaches "
               "radius / pixel size cells, rounded half up; on a geographic CRS the pixel size in metres is that "
               "at the map's centre. No-data cells count in no class and stay no data. Ties keep the raw class "
               "(otherwise the lowest LCZ code of the tied ones wins). Edges: the whole extent is kept and cells "
               "outside the map count in no class; the LCZ Generator instead cuts 500 m off every side of its "
               "map to hide these edge effects.")


class LCZFilterAlgorithm(DF4LCZAlgorithm):
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"
    CLASSES = "CLASSES"

    needs = "none"  # GDAL and numpy only
    description = "Filters an LCZ map as the LCZ Generator does (per-class Gaussian kernels): its recommended map."
    keywords = ("filter", "gaussian", "smooth", "speckle", "lcz generator", "lczfilter", "majority", "demuzere")
    icon_name = "lcz_filter"

    def name(self) -> str:
        return "lczfilter"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Filter an LCZ map (LCZ Generator Gaussian filter)")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Makes the filtered LCZ map of the LCZ Generator (Demuzere et al. 2021, Front. Environ. Sci. "
                  "9:637455; the lcz_filter band of the global LCZ map, 'recommended for most users') from any LCZ "
                  "map: ours, WUDAPT's, the global map (one band; codes 1–17, or 101–107 for LCZ A–G; any CRS). "
                  f"{FILTER_HELP}\n\n"
                  "Output: a GeoTIFF (.tif) on the input's grid, codes 1–17, 0 = no data, with the LCZ colour "
                  "table, class names and a .qml style (the input's LCZ palette when it has one). Accuracy "
                  "figures of the LCZ Generator are those of the raw map, not the filtered one.\n\n"
                  "A raster that is not an LCZ map (several bands, fractional values, values that are not LCZ "
                  "codes) is refused, as is an OUTPUT that is the INPUT; a failed or cancelled run leaves no "
                  "partial file.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("LCZ map")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Filtered LCZ map")))
        self.addOutput(QgsProcessingOutputString(self.CLASSES, tr("Cells per LCZ code of the filtered map (JSON)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.lcz.lcz_filter import write_filtered

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        with engine_errors():
            source = gdal_source(layer, self.INPUT)
            check_output_paths({self.INPUT: source}, {self.OUTPUT: geotiff_output(output, style=True)})
            classes = write_filtered(source, output, feedback=ProcessingFeedback(feedback))
        feedback.pushInfo(f"{sum(classes.values())} LCZ cells, {len(classes)} classes after filtering.")
        style_on_load(context, [(output, True, tr("Filtered LCZ map"))], layer.name())
        return {self.OUTPUT: output, self.CLASSES: json.dumps(classes)}
