"""``df4lcz:sentinel2composite``: a cloud-free Sentinel-2 composite of several dates, ready for classification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingOutputString, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterRasterDestination)

from ..df4lcz_plugin.sentinel2.clouds import MODES
from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from .base import DF4LCZAlgorithm, ProcessingFeedback, engine_errors, enum_parameter, tr
from .compat import SOURCE_FILE


class Sentinel2CompositeAlgorithm(DF4LCZAlgorithm):
    INPUTS = "INPUTS"
    CLOUD_MASK = "CLOUD_MASK"
    OUTPUT = "OUTPUT"
    OBSERVATIONS = "OBSERVATIONS"
    SUMMARY = "SUMMARY"

    needs = "light"  # GDAL, and lightgbm for s2cloudless cloud masks; not PyTorch.
    description = "Combines several Sentinel-2 dates into one cloud-free 10-band stack (per-pixel median)."
    keywords = ("composite", "cloud-free", "median", "multi-temporal", "cloud mask", "safe")
    icon_name = "sentinel2_composite"

    def name(self) -> str:
        return "sentinel2composite"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Build cloud-free Sentinel-2 composite")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Combines several Sentinel-2 acquisitions of the same place into one cloud-free 10-band stack "
                "(B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12, 10 m, 0–10000), as the LCZ models expect: So2Sat LCZ42 "
                "and the LCZ Generator work on cloud-free composites.\n\n"
                "Inputs: product folders (.SAFE or folders of band files; each is stacked first with its cloud and "
                "shadow mask, CLOUD_MASK as in 'Build Sentinel-2 band stack') or stacks made by that algorithm "
                "(their mask band and nodata are honoured), of the same or overlapping tiles.\n\n"
                "Per pixel and band, the composite is the median of the clear observations (not no data, not "
                "masked), robust to clouds and shadows the mask missed. All inputs are put on the first input's "
                "10 m grid over the union of their extents. OBSERVATIONS counts the clear observations of each "
                "pixel (0 = no clear observation: no data in the composite). Written in strips, so memory stays "
                "bounded; progress and cancel per strip.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUTS, tr("Sentinel-2 products (folders) or stacks"), SOURCE_FILE))
        self.addParameter(enum_parameter(self.CLOUD_MASK, tr("Cloud and shadow mask of product folders"), MODES))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Cloud-free composite")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OBSERVATIONS, tr("Clear observations per pixel"),
                                                                  optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputString(self.SUMMARY, tr("Summary (JSON)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.sentinel2.composite import build_composite
        from ..df4lcz_plugin.sentinel2.stack import read_product_info

        inputs = self.parameterAsFileList(parameters, self.INPUTS, context)
        if not inputs:
            raise QgsProcessingException("INPUTS is empty: give the Sentinel-2 products or stacks to composite.")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        observations = self.parameterAsOutputLayer(parameters, self.OBSERVATIONS, context) or None
        with engine_errors():
            read = [list(read_product_info(p).band_files.values()) if Path(p).is_dir() else [p] for p in inputs]
            check_output_paths({self.INPUTS: [f for files in read for f in files]},
                               {self.OUTPUT: geotiff_output(output), self.OBSERVATIONS: geotiff_output(observations)})
            summary = build_composite(inputs, output, observations,
                                      self.parameterAsEnumString(parameters, self.CLOUD_MASK, context),
                                      ProcessingFeedback(feedback))
        results = {self.OUTPUT: output, self.SUMMARY: json.dumps(summary)}
        if observations:
            results[self.OBSERVATIONS] = observations
        return results
