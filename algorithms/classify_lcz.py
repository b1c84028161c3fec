"""``df4lcz:classifylcz``: classify local climate zones over a drawn extent (DF4LCZ, Sentinel-2 stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from qgis.core import (QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsRasterLayer)

from ..df4lcz_plugin.lcz import legend
from ..df4lcz_plugin.mapping.settings import ClassifySettings
from ..df4lcz_plugin.sentinel2.clouds import MAX_CLOUD_PERCENT
from ..df4lcz_plugin.models.backends import BACKENDS, PRECISIONS, converted_path
from ..df4lcz_plugin.models.registry import ModelCard, ModelError, ensemble_members, list_models, model_files, read_card
from ..df4lcz_plugin.runtime.outputs import check_output_paths, geotiff_output
from ..df4lcz_plugin.sentinel2.stack import built_from
from .base import (DF4LCZAlgorithm, ProcessingFeedback, device_parameter, engine_errors, enum_parameter, gdal_source,
                   tr, write_filtered_output)
from .compat import FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER
from .styling import style_on_load
from .vhr_source import vhr_path, vhr_source_id

#: MODEL's one choice when no model is installed (MODEL_FILE must then name one).
NO_MODEL = "none installed: give a model file"


class ClassifyLCZAlgorithm(DF4LCZAlgorithm):
    SENTINEL2 = "SENTINEL2"
    EXTENT = "EXTENT"
    VHR = "VHR"
    MODEL = "MODEL"
    MODEL_FILE = "MODEL_FILE"
    RESOLUTION = "RESOLUTION"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    MAX_CLOUD = "MAX_CLOUD"
    BACKEND = "BACKEND"
    PRECISION = "PRECISION"
    FAST_SAM = "FAST_SAM"
    PALETTE = "PALETTE"
    OUTPUT = "OUTPUT"
    PROBABILITIES = "PROBABILITIES"
    SOURCE = "SOURCE"
    FILTERED_OUTPUT = "FILTERED_OUTPUT"
    TTA = "TTA"
    SAM_CHECKPOINT = "SAM_CHECKPOINT"
    SUMMARY = "SUMMARY"
    CELLS_PER_SECOND = "CELLS_PER_SECOND"
    DEVICE_USED = "DEVICE_USED"

    needs = "light"  # a Sentinel-2-only model on the CPU (OpenVINO); needs_for says when PyTorch is needed.
    description = "Maps local climate zones (LCZ 1–10, A–G) from a Sentinel-2 stack, optionally fused with VHR."
    keywords: tuple[str, ...] = ("map", "deep learning", "so2sat", "sen2lcz-net", "df4lcz", "fusion", "vhr")

    icon_name = "classify_lcz"

    def __init__(self) -> None:
        super().__init__()
        self.models = list_models()

    def name(self) -> str:
        return "classifylcz"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Classify local climate zones (DF4LCZ)")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Classifies Local Climate Zones (Stewart & Oke 2012) over an extent. The extent is tiled into "
                  "output cells of RESOLUTION metres; each cell is classified from the 32×32-pixel (320 m) "
                  "Sentinel-2 patch centred on it, in batches, on the GPU when DEVICE=auto finds one.\n\n"
                  "Sentinel-2 raster: 10 bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 at 10 m on the 0–10000 "
                  "scale (make it with 'Build Sentinel-2 band stack'), in a projected CRS in ground metres (UTM). "
                  "A stack on another scale (reflectance 0–1), with other pixels (20 m) or in Web Mercator is refused "
                  "with the fix; negative values are clipped to 1; without band descriptions, a spectral check warns "
                  "when the bands look out of order. The extent may be in any CRS; it is reprojected to the raster's. "
                  "Empty extent = the whole raster.\n\n"
                  "Output: GeoTIFF (.tif), codes 1–17 = LCZ 1–10, A–G, 0 = no data (a patch with no-data pixels), "
                  "with the LCZ colour table, class names and a .qml style. Optional probabilities: 18 bands in "
                  "percent, P(LCZ 1–10, A–G) in bands 1–17 and the winning class's (the confidence) in band 18, "
                  "styled on a 0–100 % ramp. Optional FILTERED_OUTPUT: the map filtered as the LCZ Generator does "
                  "(per-class Gaussian kernels; see 'Filter an LCZ map'), styled the same. No output may be an "
                  "input or share a file with another output; a failed or killed run leaves no partial file.\n\n"
                  "Model: an installed model, chosen by its id (default: sen2lcznet_so2sat, Sen2LCZ-Net pretrained on "
                  "So2Sat LCZ42; trained models are listed by their file name), or a model file (.safetensors with "
                  "its .json card). Processing level: a stack whose PROCESSING_LEVEL metadata (L1C "
                  "top-of-atmosphere or L2A surface reflectance, written by 'Build Sentinel-2 band stack') differs "
                  "from the level the model was trained on (its card; the shipped model: L1C, as So2Sat LCZ42) is "
                  "classified with a warning: expect a shift, which fine-tuning the model on your own training areas "
                  "from stacks of the same source ('Train DF4LCZ model') removes.\n\n"
                  "VHR imagery (optional; RGB in bands 1–3, ≤ 5 m, any CRS; web/tile layers are rendered at 1 m over "
                  "the EXTENT) feeds models with a high-resolution stream: "
                  "each cell's 320 m footprint goes through SAM, the object graph and the GCN, and the two streams "
                  "are fused, P = α·P_S2 + (1−α)·P_VHR (α from the model card). Cells whose footprint the imagery "
                  "covers less than 90 % or where SAM finds no object keep the Sentinel-2 result; the optional "
                  "SOURCE raster records which streams decided each cell. The segmentation is the one the model was "
                  "trained with (its card): shared (SAM once per 320 m tile, each footprint composed from its "
                  "tiles; the default of 'Train DF4LCZ model') or the paper's, SAM on each footprint. With a "
                  "Sentinel-2-only model the VHR "
                  "layer is ignored, with a warning.\n\n"
                  "Clouds: the stack's GDAL mask band (written by 'Build Sentinel-2 band stack' for clouds and "
                  "shadows, or any mask or nodata of your own) is honoured: a cell whose 320 m patch has more than "
                  "MAX_CLOUD % of its pixels masked is no data (advanced; default 10 %, chosen on a real cloudy "
                  "scene). Above 30 % of the extent masked, a warning suggests a composite of several dates.\n\n"
                  "Speed: on a CPU the Sentinel-2 stream runs on OpenVINO (BACKEND auto; the network is converted "
                  "from the model once and kept beside it; fp32, same probabilities as PyTorch within 1e-4), on a GPU "
                  "on PyTorch. PRECISION bf16 is an opt-in for CPUs with bf16 support: 3× faster here, with 99.5 % "
                  "of cells given the same class as fp32. SAM's exact fast path (OpenVINO image encoder on a CPU, "
                  "a folded mask decoder) gives the paper-exact masks 3.8× faster than segment-anything's "
                  "generator here (8.6 s instead of 32.5 s per 320 m patch on 2 cores); FAST_SAM runs SAM under "
                  "bfloat16 (96 % of the paper-exact masks matched), which pays on a GPU only (0.49× here on a "
                  "CPU). Object graphs are cached on disk, so SAM never runs twice on a "
                  "footprint. TTA (advanced, off): each patch's probabilities averaged over its 8 flips and rotations, "
                  "about 7× the Sentinel-2 time.\n\n"
                  "The run ends with a JSON summary: area per class in km², cells masked for cloud, device, back-end, "
                  "cells/s and the stack's and the model's processing level.")

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.SENTINEL2, tr("Sentinel-2 stack (10 bands)")))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent to classify"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.VHR, tr("High-resolution (VHR) imagery"),
                                                            optional=True))
        self._add_model_parameters()
        sam_checkpoint = QgsProcessingParameterFile(self.SAM_CHECKPOINT, tr("SAM checkpoint (default: MobileSAM)"),
                                                    optional=True, fileFilter="PyTorch checkpoint (*.pt *.pth)")
        fast_sam = QgsProcessingParameterBoolean(
            self.FAST_SAM, tr("Fast SAM (bfloat16, pays on a GPU only; not the paper-exact masks)"), False)
        self._add_advanced((sam_checkpoint, fast_sam) + self._inference_parameters())
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("LCZ map")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.PROBABILITIES, tr("LCZ probabilities (%)"),
                                                                  optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.SOURCE, tr("Decision source (1 Sentinel-2 only, 2 fused with VHR)"), optional=True,
            createByDefault=False))
        self._add_filtered_and_summary()

    def _add_model_parameters(self) -> None:
        """MODEL, MODEL_FILE, RESOLUTION and DEVICE."""
        self.addParameter(self._model_parameter())
        self.addParameter(QgsProcessingParameterFile(self.MODEL_FILE, tr("Model file (overrides Model)"),
                                                     optional=True, fileFilter="DF4LCZ model (*.safetensors *.json)"))
        self.addParameter(QgsProcessingParameterNumber(self.RESOLUTION, tr("Output resolution (m)"),
                                                       NUMBER_DOUBLE, 100.0, minValue=10.0))
        self.addParameter(device_parameter(self.DEVICE))

    def _inference_parameters(self) -> tuple[QgsProcessingParameterDefinition, ...]:
        """The advanced BATCH_SIZE, MAX_CLOUD, BACKEND, PRECISION, TTA and PALETTE parameters (not yet added)."""
        batch = QgsProcessingParameterNumber(self.BATCH_SIZE, tr("Batch size (patches)"),
                                             NUMBER_INTEGER, 128, minValue=1)
        max_cloud = QgsProcessingParameterNumber(self.MAX_CLOUD, tr("Most masked (cloud, shadow) pixels in a cell's "
                                                                    "patch (%)"), NUMBER_DOUBLE,
                                                 MAX_CLOUD_PERCENT, minValue=0, maxValue=100)
        palette = enum_parameter(self.PALETTE, tr("Colour palette") + " (" + "; ".join(
            f"{key}: {title}" for key, title in legend.PALETTE_TITLES.items()) + ")", legend.PALETTE_TITLES)
        backend = enum_parameter(self.BACKEND, tr("Inference back-end of the Sentinel-2 stream (auto: OpenVINO on "
                                                  "CPU, PyTorch on a GPU)"), BACKENDS)
        precision = enum_parameter(self.PRECISION, tr("OpenVINO precision (bf16: faster on CPUs with bf16, 99.5 % of "
                                                      "cells with the same class)"), PRECISIONS)
        tta = QgsProcessingParameterBoolean(self.TTA, tr("Test-time augmentation: average over the 8 flips and "
                                                         "rotations of each patch (8× the inference)"), False)
        return batch, max_cloud, backend, precision, tta, palette

    def _add_advanced(self, parameters: tuple[QgsProcessingParameterDefinition, ...]) -> None:
        """Add ``parameters`` under the dialog's Advanced Parameters."""
        for parameter in parameters:
            parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
            self.addParameter(parameter)

    def _add_filtered_and_summary(self) -> None:
        """FILTERED_OUTPUT, then the SUMMARY, CELLS_PER_SECOND and DEVICE_USED outputs."""
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.FILTERED_OUTPUT, tr("Filtered LCZ map (LCZ Generator Gaussian filter)"), optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputString(self.SUMMARY, tr("Summary (JSON)")))
        self.addOutput(QgsProcessingOutputNumber(self.CELLS_PER_SECOND, tr("Cells per second")))
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, tr("Device used")))

    def _model_parameter(self) -> QgsProcessingParameterEnum:
        """MODEL: the installed models by id (stored as the id, so that saved models and batch runs keep their
        model when another is installed); their titles are in the tooltip."""
        ids = [card.id for card in self.models] or [NO_MODEL]
        parameter = enum_parameter(self.MODEL, tr("Model"), ids)
        parameter.setHelp("\n".join(f"{card.id}: {card.title}" for card in self.models))
        return parameter

    def needs_for(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """full (PyTorch) with a VHR layer, DEVICE=cuda…, BACKEND=pytorch, or a model (or one of an ensemble's
        members) whose OpenVINO form is still to be converted (from its PyTorch module); else light."""
        device = self.parameterAsEnumString(parameters, self.DEVICE, context)
        backend = self.parameterAsEnumString(parameters, self.BACKEND, context)
        if parameters.get(self.VHR) or device.startswith("cuda") or backend == "pytorch":
            return "full"
        try:
            card = read_card(self._model_path(parameters, context))
            cards = [card] + ensemble_members(card)
        except (QgsProcessingException, ModelError, OSError):
            return self.needs  # no usable model: the run says why, whatever is installed
        # an ensemble runs on OpenVINO only when every member's form is converted too
        return self.needs if all(converted_path(c).exists() for c in cards) else "full"

    def checkParameterValues(self, parameters: dict[str, Any],  # noqa: N802 (QGIS API name)
                             context: QgsProcessingContext) -> tuple[bool, str]:
        model = parameters.get(self.MODEL)
        installed = [card.id for card in self.models]
        if isinstance(model, str) and model and model not in installed + [NO_MODEL]:
            return False, (f"MODEL={model} is not an installed model; installed: {', '.join(installed) or 'none'}. "
                           "Choose one of them, or give the model's file as MODEL_FILE.")
        ok, message = super().checkParameterValues(parameters, context)
        if ok and not self.models and not self.parameterAsFile(parameters, self.MODEL_FILE, context):
            return False, ("No LCZ model is installed; give a model file (MODEL_FILE) or reinstall the plugin (its "
                           "zip ships the Sen2LCZ-Net model).")
        return ok, message

    def _model_path(self, parameters: dict[str, Any], context: QgsProcessingContext) -> Path:
        """The model card or weights file that MODEL_FILE or MODEL names. Raises QgsProcessingException."""
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context)
        if model_file:
            return Path(model_file)
        model = self.parameterAsEnumString(parameters, self.MODEL, context)
        card = next((card for card in self.models if card.id == model), None)
        if card is None:
            raise QgsProcessingException(f"MODEL={model} is not an installed model; give a model file (MODEL_FILE).")
        return card.path

    def _bounds(self, parameters: dict[str, Any], context: QgsProcessingContext,
                layer: QgsRasterLayer) -> Optional[tuple[float, float, float, float]]:
        """EXTENT in ``layer``'s CRS, (xmin, ymin, xmax, ymax); None when not given (the whole raster)."""
        if not parameters.get(self.EXTENT):
            return None
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
        return extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()

    def _settings(self, parameters: dict[str, Any], context: QgsProcessingContext,
                  **vhr_settings: Any) -> ClassifySettings:
        """The ClassifySettings of RESOLUTION, DEVICE (resolved: ``device.resolve_device``), BATCH_SIZE, MAX_CLOUD,
        BACKEND, PRECISION, TTA and PALETTE, with ``vhr_settings`` (sam_checkpoint, fast_sam, vhr_source_id).
        Raises DeviceError, InputError (run it under ``engine_errors``)."""
        from ..df4lcz_plugin.runtime.device import resolve_device

        return ClassifySettings(
            resolution=self.parameterAsDouble(parameters, self.RESOLUTION, context),
            device=resolve_device(self.parameterAsEnumString(parameters, self.DEVICE, context)),
            backend=self.parameterAsEnumString(parameters, self.BACKEND, context),
            precision=self.parameterAsEnumString(parameters, self.PRECISION, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            max_cloud=self.parameterAsDouble(parameters, self.MAX_CLOUD, context),
            tta=self.parameterAsBoolean(parameters, self.TTA, context),
            palette=self.parameterAsEnumString(parameters, self.PALETTE, context), **vhr_settings)

    def _summary_results(self, summary: dict[str, Any], outputs: dict[str, Optional[str]]) -> dict[str, Any]:
        """The algorithm's results: the ``outputs`` written (name: path), SUMMARY, CELLS_PER_SECOND, DEVICE_USED."""
        results: dict[str, Any] = {name: path for name, path in outputs.items() if path}
        results.update({self.SUMMARY: json.dumps(summary), self.CELLS_PER_SECOND: summary["cells_per_second"],
                        self.DEVICE_USED: summary["device"]})
        return results

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802 (QGIS API)
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.mapping.classify import classify

        layer = self.parameterAsRasterLayer(parameters, self.SENTINEL2, context)
        sentinel2_path = gdal_source(layer, self.SENTINEL2)
        bounds = self._bounds(parameters, context, layer)
        output: str = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        outputs = {self.OUTPUT: output, **{name: self.parameterAsOutputLayer(parameters, name, context) or None
                                           for name in (self.PROBABILITIES, self.SOURCE, self.FILTERED_OUTPUT)}}
        vhr_layer = self.parameterAsRasterLayer(parameters, self.VHR, context) if parameters.get(self.VHR) else None
        model_path = self._model_path(parameters, context)
        sam_checkpoint = self.parameterAsFile(parameters, self.SAM_CHECKPOINT, context) or None
        with engine_errors():
            check_output_paths(
                {self.SENTINEL2: sentinel2_path,
                 f"{self.SENTINEL2} (what it was built from)": built_from(sentinel2_path),
                 self.MODEL_FILE: model_files(model_path),
                 self.SAM_CHECKPOINT: sam_checkpoint,
                 self.VHR: gdal_source(vhr_layer, self.VHR) if vhr_layer and vhr_layer.providerType() == "gdal"
                 else None},
                {name: geotiff_output(path, style=name != self.SOURCE) for name, path in outputs.items()})
        vhr = vhr_path(vhr_layer, bounds, layer.crs(), context, feedback) if vhr_layer is not None else None
        engine_feedback = ProcessingFeedback(feedback)
        with engine_errors():
            settings = self._settings(parameters, context, sam_checkpoint=sam_checkpoint,
                                      fast_sam=self.parameterAsBool(parameters, self.FAST_SAM, context),
                                      vhr_source_id=vhr_source_id(vhr_layer) if vhr_layer is not None else None)
            card = read_card(model_path)  # the weights are loaded by the back-end that needs them
            if vhr:
                self._check_vhr(vhr, card, engine_feedback)
            summary = classify(sentinel2_path, output, card, settings, bounds=bounds,
                               probabilities_path=outputs[self.PROBABILITIES], source_path=outputs[self.SOURCE],
                               vhr_path=vhr, feedback=engine_feedback)
            write_filtered_output(output, outputs[self.FILTERED_OUTPUT], settings.palette, engine_feedback)
        run_label = layer.name() if bounds is None else \
            f"{layer.name()}, x {bounds[0]:.0f}–{bounds[2]:.0f}, y {bounds[1]:.0f}–{bounds[3]:.0f}"
        style_on_load(context, [(output, True, tr("LCZ map")),
                                (outputs[self.PROBABILITIES], True, tr("LCZ probabilities")),
                                (outputs[self.FILTERED_OUTPUT], True, tr("Filtered LCZ map")),
                                (outputs[self.SOURCE], False, tr("LCZ decision source"))], run_label)
        return self._summary_results(summary, outputs)

    @staticmethod
    def _check_vhr(vhr: str, card: ModelCard, feedback: ProcessingFeedback) -> None:
        """Open the VHR imagery (unusable imagery is an error whatever the model: VHRError); warn when ``card``'s
        model has no VHR stream to use it."""
        from ..df4lcz_plugin.vhr.imagery import open_vhr

        open_vhr(vhr)
        if "vhr" not in card.streams:
            feedback.warning(f"Model '{card.id}' has no high-resolution stream (its streams: "
                             f"{', '.join(card.streams)}); the VHR layer is ignored and the "
                             "Sentinel-2 stream alone decides. No fused result is produced.")
