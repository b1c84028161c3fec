"""``df4lcz:classifydates``: classify LCZ from several Sentinel-2 stacks of one place (dates, seasonal composites),
averaging the class probabilities over the dates that have data for a cell (``df4lcz_plugin.mapping.multidate``)."""

from __future__ import annotations

from typing import Any, Optional

from qgis.core import (QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingParameterExtent, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterRasterDestination, QgsRasterLayer)

from ..df4lcz_plugin.models.registry import model_files, read_card
from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from .base import ProcessingFeedback, engine_errors, gdal_source, tr, write_filtered_output
from .classify_lcz import ClassifyLCZAlgorithm
from .compat import SOURCE_RASTER
from .styling import style_on_load


class ClassifyDatesAlgorithm(ClassifyLCZAlgorithm):
    """classifylcz's model choice and outputs over several stacks; no VHR stream."""

    AGREEMENT = "AGREEMENT"
    description = "Maps local climate zones from several Sentinel-2 dates or seasons, averaging their probabilities."
    keywords = ("map", "deep learning", "dates", "seasons", "seasonal", "multi-temporal", "average", "agreement")
    icon_name = "classify_dates"

    def name(self) -> str:
        return "classifydates"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Classify LCZ from several dates (average of probabilities)")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Classifies Local Climate Zones from several Sentinel-2 stacks of the same place: dates, or "
                  "seasonal composites. Each stack is classified as 'Classify local climate zones' does (same "
                  "model, 320 m patch per cell, mask band honoured), and each cell's class probabilities are "
                  "averaged over the stacks that classified it: a stack with no data or a masked patch there does "
                  "not count. The map's class is the winner of the average.\n\n"
                  "Stacks: at least 2, each a 10-band stack as 'Classify local climate zones' takes, all in the "
                  "first one's CRS, pixel size and pixel grid; their extents may differ (the map covers the first "
                  "one's extent, or EXTENT within it). A stack on another grid is refused: warp it onto the first "
                  "one's grid (gdalwarp -tap) or build one cloud-free composite of the dates instead. A stack given "
                  "twice is refused.\n\n"
                  "Outputs: the LCZ map (codes 1–17, 0 = no date classified the cell), styled as the single-date "
                  "map; optional probabilities (18 bands in percent: the averaged P(LCZ 1–10, A–G) and the "
                  "winner's); optional AGREEMENT: per cell, the percentage of the dates with data whose own winner "
                  "is the map's class (Byte, 0–100; 255 = no data, since 0 % is a real value: the average's winner "
                  "may be no date's own); optional FILTERED_OUTPUT, the map filtered as the LCZ Generator does. No "
                  "output may be an input; a failed run leaves no partial file (the agreement raster is put in place "
                  "only once the map is, so a failed run keeps a file you had there).\n\n"
                  "The summary adds the number of dates and the cells per number of dates with data "
                  "(cells_by_dates). Time: one classification per date.")

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.SENTINEL2, tr("Sentinel-2 stacks (10 bands), one per date or season, on one pixel grid"),
            SOURCE_RASTER))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent to classify"), optional=True))
        self._add_model_parameters()
        self._add_advanced(self._inference_parameters())
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("LCZ map")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.PROBABILITIES, tr("LCZ probabilities, averaged (%)"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.AGREEMENT, tr("Agreement of the dates with the map (%)"), optional=True, createByDefault=False))
        self._add_filtered_and_summary()

    def _stacks(self, parameters: dict[str, Any], context: QgsProcessingContext) -> tuple[QgsRasterLayer, list[str]]:
        """(first layer, GDAL paths of the stacks). Raises QgsProcessingException with fewer than 2."""
        layers = self.parameterAsLayerList(parameters, self.SENTINEL2, context)
        if len(layers) < 2:
            raise QgsProcessingException(f"SENTINEL2 holds {len(layers)} stack(s); give at least 2 (dates or "
                                         "seasons of the same place). For one stack use 'Classify local climate "
                                         "zones' (df4lcz:classifylcz).")
        return layers[0], [gdal_source(layer, self.SENTINEL2) for layer in layers]

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802 (QGIS API)
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.mapping.classify import classify
        from ..df4lcz_plugin.mapping.multidate import DatesAverage

        layer, paths = self._stacks(parameters, context)
        bounds = self._bounds(parameters, context, layer)
        output: str = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        outputs = {self.OUTPUT: output, **{name: self.parameterAsOutputLayer(parameters, name, context) or None
                                           for name in (self.PROBABILITIES, self.AGREEMENT, self.FILTERED_OUTPUT)}}
        model_path = self._model_path(parameters, context)
        with engine_errors():
            check_output_paths({self.SENTINEL2: paths, self.MODEL_FILE: model_files(model_path)},
                               {name: geotiff_output(path, style=name != self.AGREEMENT)
                                for name, path in outputs.items()})
        engine_feedback = ProcessingFeedback(feedback)
        with engine_errors():
            settings = self._settings(parameters, context)
            card = read_card(model_path)
            # The agreement raster is put in place only once the map is (DatesAverage.writing).
            dates = DatesAverage(paths[1:], card, outputs[self.AGREEMENT])
            summary = classify(paths[0], output, card, settings, bounds=bounds,
                               probabilities_path=outputs[self.PROBABILITIES], feedback=engine_feedback,
                               executor=dates)
            write_filtered_output(output, outputs[self.FILTERED_OUTPUT], settings.palette, engine_feedback)
        style_on_load(context, [(output, True, tr("LCZ map")),
                                (outputs[self.PROBABILITIES], True, tr("LCZ probabilities")),
                                (outputs[self.FILTERED_OUTPUT], True, tr("Filtered LCZ map")),
                                (outputs[self.AGREEMENT], False, tr("Agreement of the dates"))],
                      f"{len(paths)} dates from {layer.name()}")
        return self._summary_results(summary, outputs)
