"""``df4lcz:assessaccuracy`` ("Assess LCZ map accuracy"): OA, OA_u, OA_bu, OA_w, κ, per-class PA/UA/F1."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBoolean, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsRasterLayer)

from ..df4lcz_plugin.runtime.outputs import check_output_paths
from .base import DF4LCZAlgorithm, ProcessingFeedback, engine_errors, gdal_source, tr


class AssessAccuracyAlgorithm(DF4LCZAlgorithm):
    LCZ = "LCZ"
    REFERENCE = "REFERENCE"
    CLASS_FIELD = "CLASS_FIELD"
    REPORT = "REPORT"
    CSV = "CSV"
    JSON = "JSON"
    AGREEMENT = "AGREEMENT"
    FILTERED = "FILTERED"

    #: What the report says when the reference is another map rather than ground truth.
    AGREEMENT_NOTE = ("Agreement is not accuracy: the reference is another LCZ map (such as the global LCZ map, "
                      "itself a classification with its own errors), not ground truth. These figures say how often the two "
                      "maps give the same class, not how often either is right; disagreement may be either map's "
                      "error. Assess accuracy against training-area polygons.")

    needs = "none"  # assessment needs GDAL and matplotlib only (QGIS has them).
    description = "Compares an LCZ map with reference polygons or an LCZ raster: OA, OA_w, kappa, confusion matrix."
    keywords = ("accuracy", "assessment", "validation", "confusion matrix", "kappa", "oa", "f1")
    icon_name = "assess_accuracy"

    def name(self) -> str:
        return "assessaccuracy"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Assess LCZ map accuracy")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Compares an LCZ map (one band of codes 1–17; 101–107 also read as A–G) with a reference: LCZ "
                "training-area polygons (a class field with 1–17, 101–107 or A–G, or a WUDAPT KML/KMZ), or an LCZ "
                "raster (codes 1–17 or 101–107) in any CRS and resolution, warped onto the map's grid with mode "
                "resampling. Comparison per map cell. A raster that is not an LCZ map (such as the 18-band "
                "probability raster) is refused.\n\n"
                "Metrics (the LCZ community's, see the report for definitions): OA; OA_u (urban classes); OA_bu, "
                "built vs natural, in both meanings found in the literature (the WUDAPT/LCZ Generator one and the "
                "two-class collapse); OA_w with the Bechtel et al. (2020) weights; Cohen's κ; per-class "
                "producer's and user's accuracy and F1; the 17 × 17 confusion matrix.\n\n"
                "AGREEMENT: the reference is another LCZ map, e.g. the window of the global LCZ map from "
                "'Global LCZ map window' with this map as its GRID; the same figures are then reported as "
                "agreement, with the warning that agreement is not accuracy.\n\n"
                "FILTERED: also assess the map after the LCZ Generator's Gaussian filter ('Filter an LCZ map'), the "
                "product most users take, and report both side by side; the LCZ Generator's own figures are those "
                "of the raw map.\n\n"
                "Outputs: an HTML report with a confusion-matrix plot, plus CSV and JSON.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.LCZ, tr("LCZ map")))
        self.addParameter(QgsProcessingParameterFile(self.REFERENCE, tr("Reference (training-area polygons, "
                                                                        "KML/KMZ or LCZ raster)")))
        self.addParameter(QgsProcessingParameterString(self.CLASS_FIELD, tr("Class field of the polygons (empty: "
                                                                            "lcz, class… or the KML folders)"),
                                                        optional=True))
        self.addParameter(QgsProcessingParameterBoolean(self.AGREEMENT, tr("The reference is another LCZ map (e.g. the "
                                                                           "global map): report agreement, not "
                                                                           "accuracy"), False))
        self.addParameter(QgsProcessingParameterBoolean(self.FILTERED, tr("Also assess the map filtered as the LCZ "
                                                                          "Generator does, side by side"), False))
        self.addParameter(QgsProcessingParameterFileDestination(self.REPORT, tr("Accuracy report"), "HTML (*.html)"))
        self.addParameter(QgsProcessingParameterFileDestination(self.CSV, tr("Metrics (CSV)"), "CSV (*.csv)",
                                                                optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(self.JSON, tr("Metrics (JSON)"), "JSON (*.json)",
                                                                optional=True, createByDefault=False))
        for name in ("OA", "OA_u", "OA_bu_wudapt", "OA_bu_binary", "OA_w", "kappa"):
            self.addOutput(QgsProcessingOutputNumber(name, name))
        self.addOutput(QgsProcessingOutputString("METRICS", tr("All metrics (JSON)")))
        self.addOutput(QgsProcessingOutputString("FILTERED_METRICS", tr("All metrics of the filtered map (JSON)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.training.assess import assess
        from ..df4lcz_plugin.training.report import json_safe, write_report

        lcz = self.parameterAsRasterLayer(parameters, self.LCZ, context)
        reference = self.parameterAsFile(parameters, self.REFERENCE, context)
        outputs = {name: self.parameterAsFileOutput(parameters, name, context) or None
                   for name in (self.REPORT, self.CSV, self.JSON)}
        with engine_errors():
            check_output_paths({self.LCZ: gdal_source(lcz, self.LCZ), self.REFERENCE: reference},
                               {self.REPORT: ([outputs[self.REPORT]], (".html", ".htm")),
                                self.CSV: ([outputs[self.CSV]], (".csv",)),
                                self.JSON: ([outputs[self.JSON]], (".json",))})
            cm, metrics = assess(gdal_source(lcz, self.LCZ), reference,
                                 self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
                                 ProcessingFeedback(feedback))
            filtered = self._filtered(parameters, context, lcz, reference, outputs[self.REPORT], feedback)
            agreement = self.parameterAsBool(parameters, self.AGREEMENT, context)
            title = f"LCZ agreement of {lcz.name()} with another map" if agreement else f"LCZ accuracy of {lcz.name()}"
            write_report(outputs[self.REPORT], metrics, cm, title,
                         {"map": lcz.source(), "reference": reference}, csv_path=outputs[self.CSV],
                         json_path=outputs[self.JSON], warnings=(self.AGREEMENT_NOTE,) if agreement else (),
                         filtered=filtered)
        if agreement:
            feedback.pushWarning(self.AGREEMENT_NOTE)
        feedback.pushInfo(("Agreement: " if agreement else "")
                          + ", ".join(f"{k} {metrics[k]:.3f}" for k in ("OA", "OA_u", "OA_bu_wudapt", "OA_w", "kappa")))
        results = {name: path for name, path in outputs.items() if path}
        results.update({k: metrics[k] for k in ("OA", "OA_u", "OA_bu_wudapt", "OA_bu_binary", "OA_w", "kappa")})
        results["METRICS"] = json.dumps(json_safe(metrics))
        if filtered:
            results["FILTERED_METRICS"] = json.dumps(json_safe(filtered))
        return results

    def _filtered(self, parameters: dict[str, Any], context: QgsProcessingContext, lcz: QgsRasterLayer,
                  reference: str, report: str, feedback: QgsProcessingFeedback) -> dict[str, Any] | None:
        """The metrics of the map after the LCZ Generator's filter (FILTERED), or None."""
        from ..df4lcz_plugin.runtime.outputs import scratch_folder
        from ..df4lcz_plugin.training.assess import assess_filtered

        if not self.parameterAsBool(parameters, self.FILTERED, context):
            return None
        with scratch_folder(report) as scratch:
            _, metrics = assess_filtered(gdal_source(lcz, self.LCZ), reference, scratch,
                                         self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
                                         ProcessingFeedback(feedback))
        feedback.pushInfo("Filtered map: " + ", ".join(f"{k} {metrics[k]:.3f}"
                                                       for k in ("OA", "OA_u", "OA_bu_wudapt", "OA_w", "kappa")))
        return metrics
