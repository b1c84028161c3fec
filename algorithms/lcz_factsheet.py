"""``df4lcz:lczfactsheet`` ("LCZ factsheet (LCZ Generator)"): one HTML page with PNG figures beside it, as the
LCZ Generator's factsheet; the engine is ``df4lcz_plugin.training.factsheet``."""

from __future__ import annotations

from typing import Any

from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputNumber,
                       QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString)

from ..df4lcz_plugin.runtime.outputs import check_output_paths
from ..df4lcz_plugin.training.factsheet import factsheet_files
from ..df4lcz_plugin.training.report import report_files
from .base import DF4LCZAlgorithm, engine_errors, gdal_source, tr
from .compat import SOURCE_VECTOR_POLYGON
from .train_model import training_areas_file


class LCZFactsheetAlgorithm(DF4LCZAlgorithm):
    TRAINING_REPORT = "TRAINING_REPORT"
    TRAINING_AREAS = "TRAINING_AREAS"
    CLASS_FIELD = "CLASS_FIELD"
    LCZ_MAP = "LCZ_MAP"
    FILTERED_MAP = "FILTERED_MAP"
    GLOBAL_MAP = "GLOBAL_MAP"
    OUTPUT = "OUTPUT"
    AGREEMENT = "AGREEMENT"

    needs = "none"  # GDAL, numpy and matplotlib
    description = "Writes the LCZ Generator's factsheet of a training and its map: one HTML page with its figures."
    keywords = ("factsheet", "report", "lcz generator", "bootstrap", "quicklook", "agreement", "demuzere")
    icon_name = "lcz_factsheet"

    def name(self) -> str:
        return "lczfactsheet"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("LCZ factsheet (LCZ Generator)")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Writes a factsheet like the LCZ Generator's (Demuzere et al. 2021, Front. Environ. Sci. "
                  "9:637455): one HTML page, with its figures beside it as PNG files named <factsheet>_*.png "
                  "(keep them together when you move it). It shows:\n"
                  "- the training areas per class: polygons and area in km² (as drawn, measured in an equal-area "
                  "projection), a table and a bar chart;\n"
                  "- the bootstrapped accuracy of 'Train DF4LCZ model': median and IQR of OA, OA_u, OA_bu, OA_w and "
                  "kappa and of each class's F1, their boxplots and the averaged confusion matrix (figures of the "
                  "raw map, as the Generator's);\n"
                  "- the suspicious training areas (out-of-fold figures, the rule of 'Train DF4LCZ model');\n"
                  "- quicklooks of the LCZ map and of its filtered map;\n"
                  "- with a local copy of the global LCZ map (GLOBAL_MAP, e.g. the window 'Global LCZ map' writes, "
                  "or lcz_filter_v3.tif), the agreement of each map with it: the share of cells of the same class "
                  "over the cells where both have a class, overall and per class of our map, on our map's grid "
                  "(the global map warped onto it, nearest neighbour). It is agreement between two maps, not "
                  "accuracy.\n\n"
                  "Inputs: TRAINING_REPORT, the report (.html, or its .json) that 'Train DF4LCZ model' wrote (its "
                  ".json must be beside it); TRAINING_AREAS (and CLASS_FIELD), the training areas that model was "
                  "trained on, read as that algorithm reads them; LCZ_MAP, the map classified with the model; "
                  "FILTERED_MAP (optional), its filtered map ('Classify' FILTERED_OUTPUT or 'Filter an LCZ map'). "
                  "Training areas other than the report's are refused, as is a global map that does not overlap "
                  "the map. Output AGREEMENT: the raw map's agreement with the global map (none without it). The "
                  "page and each figure are written via a temporary file: a failed run leaves no partial file.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterFile(
            self.TRAINING_REPORT, tr("Training report of 'Train DF4LCZ model' (.html or its .json)"),
            fileFilter="Training report (*.html *.json)"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.TRAINING_AREAS, tr("LCZ training areas the model was trained on (polygons, or a WUDAPT KML/KMZ)"),
            [SOURCE_VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterString(self.CLASS_FIELD, tr("Class field (empty: lcz, class… or "
                                                                            "the KML folders)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.LCZ_MAP, tr("LCZ map (raw)")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.FILTERED_MAP, tr("Filtered LCZ map"),
                                                            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.GLOBAL_MAP, tr("Global LCZ map, local copy (for the agreement)"), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, tr("LCZ factsheet"), "HTML (*.html)"))
        self.addOutput(QgsProcessingOutputNumber(self.AGREEMENT, tr("Agreement of the raw map with the global map")))

    def _raster(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str | None:
        """The GDAL path of an optional raster parameter, or None."""
        if not parameters.get(name):
            return None
        return gdal_source(self.parameterAsRasterLayer(parameters, name, context), name)

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.training.factsheet import read_training_report, write_factsheet
        from ..df4lcz_plugin.training.training_areas import read_training_areas

        areas_path, areas_layer = training_areas_file(self, parameters, self.TRAINING_AREAS, context, feedback)
        report_path = self.parameterAsFile(parameters, self.TRAINING_REPORT, context)
        rasters = {name: self._raster(parameters, name, context)
                   for name in (self.LCZ_MAP, self.FILTERED_MAP, self.GLOBAL_MAP)}
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        with engine_errors():
            check_output_paths({**rasters, self.TRAINING_AREAS: areas_path,
                                self.TRAINING_REPORT: report_files(report_path)},
                               {self.OUTPUT: (factsheet_files(output), (".html", ".htm"))})
            report = read_training_report(report_path)
            class_field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
            areas = read_training_areas(areas_path, class_field or None, areas_layer or None)
            results = write_factsheet(output, report, areas, rasters[self.LCZ_MAP], rasters[self.FILTERED_MAP],
                                      rasters[self.GLOBAL_MAP])
        out = {self.OUTPUT: output}
        if results:
            out[self.AGREEMENT] = results["raw map"]["agreement"]
            for name, result in results.items():
                feedback.pushInfo(f"Agreement of the {name} with the global LCZ map: {result['agreement']:.3f} "
                                  f"over {result['cells']} cells.")
        return out
